package queries_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"pos/queries"
)

// TestStockRowLevelSecurityAsPosAPI is TestRowLevelSecurityAsPosAPI for the
// stock read models, in raw SQL as pos_api: no merchant set, or set empty, sees no
// row; a merchant sees all of its rows and none of another's; the setting
// does not outlive its transaction; the reservations table, the partitions
// and every write stay out of reach.
func TestStockRowLevelSecurityAsPosAPI(t *testing.T) {
	f := newStockFixture(t)
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, f.env.URL) // a superuser: sees every row
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)

	for _, table := range []string{"rm_stock_levels", "rm_stock_movements"} {
		t.Run(table, func(t *testing.T) { checkIsolation(t, f.env.URL, owner, table, f.a, f.b) })
	}

	t.Run("the policies are forced on every table and partition", func(t *testing.T) {
		rows, err := owner.Query(ctx, `
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'merchant_isolation')
            FROM pg_class c
            WHERE c.relname ~ '^rm_stock_(levels|movements|reservations)(_p[0-7])?$' AND c.relkind IN ('r', 'p')`)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var name string
			var enabled, forced, policy bool
			if err := rows.Scan(&name, &enabled, &forced, &policy); err != nil {
				t.Fatal(err)
			}
			n++
			if !enabled || !forced || !policy {
				t.Errorf("%s: row security enabled %v, forced %v, merchant_isolation %v", name, enabled, forced, policy)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if n != 3*9 {
			t.Errorf("%d stock tables and partitions, want 3 × (1 + 8)", n)
		}
	})

	t.Run("no access beyond the public stock read models", func(t *testing.T) {
		c := apiConn(t, f.env.URL)
		for _, sql := range []string{
			`SELECT count(*) FROM rm_stock_reservations`,
			`SELECT count(*) FROM rm_stock_reservations_p2`,
			`SELECT count(*) FROM rm_stock_levels_p0`,
			`SELECT count(*) FROM rm_stock_movements_p5`,
			`INSERT INTO rm_stock_levels (merchant_id, ledger_id, branch_id, sku, version, pos_major, pos_minor, updated_at)
                VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'X', 1, 1, 1, now())`,
			`UPDATE rm_stock_levels SET on_hand = 1000000`,
			`DELETE FROM rm_stock_movements`,
			`ALTER TABLE rm_stock_levels DISABLE ROW LEVEL SECURITY`,
		} {
			_, err := c.Exec(ctx, sql)
			if got := sqlState(err); got != "42501" {
				t.Errorf("%s: %v (SQLSTATE %q), want insufficient_privilege (42501)", sql, err, got)
			}
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
			pa, err := r.Stock(ctx, f.a, queries.StockFilter{}, "", 0)
			if err != nil || len(pa.Items) != 3 {
				t.Fatalf("a reads its own: %d levels, %v", len(pa.Items), err)
			}
			pb, err := r.StockMovements(ctx, f.b, "TEA", &f.branch1, "", 0)
			if err != nil || len(pb.Items) != 0 {
				t.Fatalf("b reads a's branch: %d movements, %v", len(pb.Items), err)
			}
			var setting string
			if err := pool.QueryRow(ctx, `SELECT coalesce(current_setting('pos.merchant_id', true), '')`).Scan(&setting); err != nil || setting != "" {
				t.Fatalf("between transactions the pooled connection holds merchant %q (%v)", setting, err)
			}
		}
	})
}
