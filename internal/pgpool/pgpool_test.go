package pgpool_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/eventstore/pgstore"
	"pos/internal/pgpool"
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
	owner, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
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
		if _, err := conn.Exec(ctx, "SET ROLE "+pgx.Identifier{owner.User}.Sanitize()); err == nil {
			t.Errorf("%s pool: SET ROLE %s (the owner) succeeded", role, owner.User)
		}
		conn.Release()
		var owns, bypass, member bool
		if err := app.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_class WHERE relowner = $1::text::regrole),
			(SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = $1::text),
			pg_has_role($1::text, $2::text, 'MEMBER')`, role, owner.User).Scan(&owns, &bypass, &member); err != nil || owns || bypass || member {
			t.Errorf("%s owns a relation (%v), bypasses row-level security (%v) or is a member of the owner (%v); err %v", role, owns, bypass, member, err)
		}
	}
}

// A role's login never carries the owner's password (in the URL or
// PGPASSWORD), and finds the role's own line of the password file.
func TestLoginAsTakesTheRolesOwnPassword(t *testing.T) {
	passfile := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(passfile, []byte("db.example:5432:pos:pos_app:app-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{
		"postgres://owner:owner-secret@db.example:5432/pos?sslmode=disable&passfile=" + passfile,
		"postgres://owner:owner-secret@db.example:5432/pos?passfile=" + passfile + "&pool_max_conns=4",
		"host=db.example port=5432 dbname=pos user=owner password=owner-secret passfile=" + passfile,
	} {
		cfg, err := pgxpool.ParseConfig(pgpool.LoginAs(url, "pos_app"))
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if c := cfg.ConnConfig; c.User != "pos_app" || c.Password != "app-secret" || c.Host != "db.example" || c.Database != "pos" {
			t.Errorf("%s as pos_app: user %q, password %q, host %q, database %q; want pos_app with its password-file line", url, c.User, c.Password, c.Host, c.Database)
		}
		cfg, err = pgxpool.ParseConfig(pgpool.LoginAs(url, "pos_api")) // no line of its own
		if err != nil {
			t.Fatal(err)
		}
		if c := cfg.ConnConfig; c.User != "pos_api" || c.Password != "" {
			t.Errorf("%s as pos_api: user %q, password %q; want no password", url, c.User, c.Password)
		}
	}
}

// TestPoolsTakeUUIDsAsBytes: a pool's connections know google/uuid's UUID
// (pgxuuid), so it is sent and read as its 16 bytes rather than through
// its driver.Valuer's text, and a uuid read into an any is a uuid.UUID.
func TestPoolsTakeUUIDsAsBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	id := uuid.Must(uuid.NewV7())
	var got any
	var back uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT $1::uuid, $1::uuid`, id).Scan(&got, &back); err != nil {
		t.Fatal(err)
	}
	if u, ok := got.(uuid.UUID); !ok || u != id || back != id {
		t.Fatalf("read %v as %T (%v), want uuid.UUID %v", got, got, back, id)
	}
}
