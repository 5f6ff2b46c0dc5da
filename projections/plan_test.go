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
// by the primary key, never scan the table. The plain LATERAL join, without
// its LIMIT, is planned as a hash join over a sequential scan here.
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
	rows, err := conn.Query(ctx, `EXPLAIN EXECUTE applied(ARRAY['transactions'], ARRAY['x'])`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	plan := strings.Join(lines, "\n")
	if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index Scan using projection_streams_pkey") {
		t.Fatalf("generic plan scans projection_streams:\n%s", plan)
	}
	t.Log(plan)
}
