package queries_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/queries"
)

// apiConn opens a new session as pos_api, in which pos.merchant_id has never
// been set.
func apiConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	if _, err := c.Exec(ctx, "SET ROLE "+queries.Role); err != nil {
		t.Fatal(err)
	}
	return c
}

// countAs counts table's rows in one transaction of c: all of them, and
// those of merchant other. setting, when not nil, is set as pos.merchant_id
// first, transaction-locally.
func countAs(t *testing.T, c *pgx.Conn, table string, setting *string, other uuid.UUID) (all, others int64) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if setting != nil {
			if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, *setting); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE merchant_id = $1) FROM `+table, other).Scan(&all, &others)
	})
	if err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return all, others
}

// checkIsolation checks table, in raw SQL as pos_api, with rows of
// merchants a and b (counted by owner, a superuser): no merchant set, or
// set empty, sees no row; a merchant sees all of its rows and none of the
// other's; the setting does not outlive its transaction.
func checkIsolation(t *testing.T, url string, owner *pgx.Conn, table string, ma, mb uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	empty, a, b := "", ma.String(), mb.String()
	var ofA, ofB int64
	if err := owner.QueryRow(ctx, `SELECT count(*) FILTER (WHERE merchant_id = $1), count(*) FILTER (WHERE merchant_id = $2) FROM `+table,
		ma, mb).Scan(&ofA, &ofB); err != nil {
		t.Fatal(err)
	}
	if ofA == 0 || ofB == 0 {
		t.Fatalf("fixture: %d rows of a, %d of b; the check needs both", ofA, ofB)
	}
	if n, _ := countAs(t, apiConn(t, url), table, nil, ma); n != 0 {
		t.Errorf("merchant never set: %d rows, want 0", n)
	}
	c := apiConn(t, url)
	if n, _ := countAs(t, c, table, &empty, ma); n != 0 {
		t.Errorf("merchant set to '': %d rows, want 0", n)
	}
	if n, others := countAs(t, c, table, &a, mb); n != ofA || others != 0 {
		t.Errorf("merchant a: %d rows (%d of b), want %d (0 of b)", n, others, ofA)
	}
	if n, others := countAs(t, c, table, &b, ma); n != ofB || others != 0 {
		t.Errorf("merchant b: %d rows (%d of a), want %d (0 of a)", n, others, ofB)
	}
	// The setting was transaction-local: the session's next transaction
	// sees nothing again.
	if n, _ := countAs(t, c, table, nil, ma); n != 0 {
		t.Errorf("after merchant b's transaction: %d rows, want 0", n)
	}
}

func TestRowLevelSecurityAsPosAPI(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, f.env.URL) // a superuser: sees every row
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)

	for _, table := range []string{"rm_transactions", "rm_daily_sales", "rm_merchant_settings"} {
		t.Run(table, func(t *testing.T) { checkIsolation(t, f.env.URL, owner, table, f.a, f.b) })
	}

	t.Run("no access beyond the read models", func(t *testing.T) {
		c := apiConn(t, f.env.URL)
		for _, sql := range []string{
			`SELECT count(*) FROM rm_daily_sales_facts`,
			`SELECT count(*) FROM rm_transactions_p0`,
			`SELECT count(*) FROM rm_daily_sales_p3`,
			`SELECT count(*) FROM rm_daily_sales_facts_p7`,
			`SELECT count(*) FROM projection_streams`,
			`SELECT count(*) FROM projection_checkpoints`,
			`SELECT count(*) FROM events`,
			`INSERT INTO rm_merchant_settings VALUES (gen_random_uuid(), 'UTC', 'IDR', false, false, 1, now())`,
			`UPDATE rm_transactions SET status = 'voided'`,
			`DELETE FROM rm_daily_sales`,
			`ALTER TABLE rm_transactions DISABLE ROW LEVEL SECURITY`,
		} {
			_, err := c.Exec(ctx, sql)
			if got := sqlState(err); got != "42501" {
				t.Errorf("%s: %v (SQLSTATE %q), want insufficient_privilege (42501)", sql, err, got)
			}
		}
	})

	t.Run("the role owns nothing and cannot bypass", func(t *testing.T) {
		var super, bypass bool
		var owned int
		err := owner.QueryRow(ctx, `SELECT rolsuper, rolbypassrls, (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
            FROM pg_roles r WHERE rolname = $1`, queries.Role).Scan(&super, &bypass, &owned)
		if err != nil || super || bypass || owned != 0 {
			t.Errorf("pos_api: superuser %v, bypassrls %v, owns %d relations (%v); want false, false, 0", super, bypass, owned, err)
		}
	})

	t.Run("one pooled connection serves both merchants apart", func(t *testing.T) {
		pool, err := queries.ConnectSized(ctx, f.env.URL, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		key, _ := queries.NewCursorKey(make([]byte, 32))
		r, _ := queries.New(pool, key)
		for range 3 {
			if _, err := r.GetTransaction(ctx, f.a, f.salesA[0].ID); err != nil {
				t.Fatalf("a reads its own: %v", err)
			}
			if _, err := r.GetTransaction(ctx, f.b, f.salesA[0].ID); err == nil {
				t.Fatal("b read a's transaction on the connection a just used")
			}
			var setting string
			if err := pool.QueryRow(ctx, `SELECT coalesce(current_setting('pos.merchant_id', true), '')`).Scan(&setting); err != nil || setting != "" {
				t.Fatalf("between transactions the pooled connection holds merchant %q (%v)", setting, err)
			}
		}
	})
}
