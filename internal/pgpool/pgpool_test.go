package pgpool_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"pos/eventstore/pgstore"
	"pos/internal/pgtest"
	"pos/queries"
)

// The pools log in as their roles, given the migrating login's URL (SPEC §3:
// the API connects as a role that owns no table). Nothing a statement can do
// on such a connection gets it back to the migrating login: RESET ROLE stays
// the role, and SET ROLE to the owner is refused.
func TestPoolsLogInAsTheirRoles(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t) // its user is the superuser that migrated it
	ctx := context.Background()
	app, err := pgstore.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	api, err := queries.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	for role, pool := range map[string]*pgxpool.Pool{pgstore.AppRole: app, queries.Role: api} {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var session, current string
		if err := conn.QueryRow(ctx, "SELECT session_user::text, current_user::text").Scan(&session, &current); err != nil {
			t.Fatal(err)
		}
		if session != role || current != role {
			t.Errorf("%s pool: session_user %s, current_user %s; want the login to be the role", role, session, current)
		}
		if _, err := conn.Exec(ctx, "RESET ROLE"); err != nil {
			t.Fatalf("%s: RESET ROLE: %v", role, err)
		}
		if err := conn.QueryRow(ctx, "SELECT current_user::text").Scan(&current); err != nil || current != role {
			t.Errorf("%s pool after RESET ROLE: current_user %s (%v); want %s", role, current, err, role)
		}
		if _, err := conn.Exec(ctx, "SET ROLE postgres"); err == nil {
			t.Errorf("%s pool: SET ROLE postgres succeeded", role)
		}
		conn.Release()
		var owns, bypass bool
		if err := app.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_class WHERE relowner = $1::text::regrole), (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = $1::text)", role).Scan(&owns, &bypass); err != nil || owns || bypass {
			t.Errorf("%s owns a relation (%v) or bypasses row-level security (%v), err %v", role, owns, bypass, err)
		}
	}
}
