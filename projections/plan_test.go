package projections

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"pos/internal/pgtest"
)

// TestAppliedVersionsUseThePrimaryKeyInAGenericPlan plans appliedVersionsSQL
// as a connection's cached generic plan does, over a projection_streams of
// a new deployment's size (1,200 analysed rows): it must look each pair up
// by its partition's primary key, never scan the table. The plain LATERAL
// join, without its LIMIT, is planned as a hash join over a sequential scan
// here.
func TestAppliedVersionsUseThePrimaryKeyInAGenericPlan(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`INSERT INTO projection_streams (projection, stream_name, version)
         SELECT (ARRAY['transactions', 'daily_sales', 'stock', 'stock_process'])[1 + i % 4],
                'transaction-01900000-0000-7000-8000-000000000001.' || i, 3
         FROM generate_series(1, 1200) AS i`,
		`ANALYZE projection_streams`,
		`SET plan_cache_mode = force_generic_plan`,
		`PREPARE applied(text[], text[]) AS ` + appliedVersionsSQL,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rows, err := conn.Query(ctx, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE applied(ARRAY['transactions', 'stock_process'], ARRAY['x', 'y'])`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	plan := strings.Join(lines, "\n")
	// Each pair runs in its projection's partition alone (run-time
	// pruning): a partition analysed empty may be planned as a scan, as
	// long as no pair of this statement reaches it.
	scans, looked := false, false
	for _, l := range lines {
		scans = scans || strings.Contains(l, "Seq Scan") && !strings.Contains(l, "never executed")
		looked = looked || strings.Contains(l, "Index Scan using projection_streams_transactions_pkey") && strings.Contains(l, "(actual")
	}
	if scans || !looked {
		t.Fatalf("generic plan scans projection_streams:\n%s", plan)
	}
	t.Log(plan)
}
