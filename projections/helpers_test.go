package projections_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
)

func newRunner(t *testing.T, env *projtest.Env) *projections.Runner {
	t.Helper()
	r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatalf("NewRunner: %v", err)
	}
	return r
}

// feed returns every event of the store, in feed order.
func feed(t *testing.T, env *projtest.Env) []eventstore.RecordedEvent {
	t.Helper()
	ctx := context.Background()
	if err := env.Store.Settle(ctx); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	events, err := env.Store.ReadAll(ctx, eventstore.Start, eventstore.Filter{}, 0)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	return events
}

func handle(t *testing.T, r *projections.Runner, events ...eventstore.RecordedEvent) {
	t.Helper()
	if err := r.Handle(context.Background(), events); err != nil {
		t.Fatalf("Handle: %v", err)
	}
}

// connect connects as the database's creator, a superuser: it sees every
// merchant's rows (superusers bypass row-level security). The caller closes
// the connection.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return c
}

// admin connects as connect does, until the end of the test. Helpers called
// many times in a test use connect instead, so as not to hold a connection
// each until then.
func admin(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c := connect(t, url)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Queries that read every row of the read models and of the runner's
// bookkeeping as text, each row led by its table's name, in key order.
var (
	salesQueries = []string{
		`SELECT 'rm_transactions ' || to_jsonb(t)::text FROM rm_transactions t ORDER BY merchant_id, transaction_id`,
		`SELECT 'rm_daily_sales ' || to_jsonb(t)::text FROM rm_daily_sales t ORDER BY merchant_id, branch_id, business_day, currency`,
		`SELECT 'rm_daily_sales_facts ' || to_jsonb(t)::text FROM rm_daily_sales_facts t ORDER BY merchant_id, transaction_id`,
		`SELECT 'rm_merchant_settings ' || to_jsonb(t)::text FROM rm_merchant_settings t ORDER BY merchant_id`,
	}
	stockQueries = []string{
		`SELECT 'rm_stock_levels ' || to_jsonb(t)::text FROM rm_stock_levels t ORDER BY merchant_id, ledger_id`,
		`SELECT 'rm_stock_movements ' || to_jsonb(t)::text FROM rm_stock_movements t ORDER BY merchant_id, ledger_id, version`,
		`SELECT 'rm_stock_reservations ' || to_jsonb(t)::text FROM rm_stock_reservations t ORDER BY merchant_id, ledger_id, transaction_id`,
	}
	// The checkpoints' updated_at is left out: it moves on redelivery.
	bookkeepingQueries = []string{
		`SELECT concat_ws(' ', 'projection_streams', projection, stream_name, version) FROM projection_streams ORDER BY projection, stream_name`,
		`SELECT concat_ws(' ', 'projection_checkpoints', projection, partition, major, minor) FROM projection_checkpoints ORDER BY projection, partition`,
	}
)

// textRows returns the rows of queries (each selecting one text column), one
// query after the other, read as the admin (connect): every merchant's
// rows.
func textRows(t *testing.T, url string, queries ...string) []string {
	t.Helper()
	ctx := context.Background()
	c := connect(t, url)
	defer c.Close(ctx)
	var out []string
	for _, q := range queries {
		rows, err := c.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		out = append(out, lines...)
	}
	return out
}

// snapshot returns every read-model row and bookkeeping row as text, a line
// each, to compare two databases or two moments.
func snapshot(t *testing.T, url string) string {
	t.Helper()
	return strings.Join(textRows(t, url, slices.Concat(salesQueries, stockQueries, bookkeepingQueries)...), "\n")
}

// diffRows fails the test unless got and want hold the same rows in the same
// order. It shows the first few rows that only one of them holds ("-" only
// in want, "+" only in got), or, where they hold the same rows in another
// order, the first row out of place.
func diffRows(t *testing.T, name string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	extra := map[string]int{} // rows of got not (yet) matched in want
	for _, s := range got {
		extra[s]++
	}
	var diff []string
	for _, s := range want {
		if extra[s] > 0 {
			extra[s]--
		} else {
			diff = append(diff, "- "+s)
		}
	}
	for _, s := range got {
		if extra[s] > 0 {
			extra[s]--
			diff = append(diff, "+ "+s)
		}
	}
	if len(diff) == 0 {
		i := 0
		for got[i] == want[i] {
			i++
		}
		diff = append(diff, fmt.Sprintf("the same rows in another order; row %d:\n  got  %s\n  want %s", i, got[i], want[i]))
	}
	t.Errorf("%s: %d rows, want %d; %d differences:\n%s", name, len(got), len(want), len(diff),
		strings.Join(diff[:min(len(diff), 12)], "\n"))
}

// txRow reads a few columns of one rm_transactions row.
type txRow struct {
	Status                              string
	Subtotal, Discount, Tax, GrandTotal int64
	Paid, Refunded                      int64
	Version                             int64
	Lines, Payments                     []map[string]any
}

func readTx(t *testing.T, url string, id uuid.UUID) (txRow, bool) {
	t.Helper()
	var r txRow
	c := connect(t, url)
	defer c.Close(context.Background())
	err := c.QueryRow(context.Background(), `
        SELECT status, subtotal, discount, tax, grand_total, paid, refunded, version, lines, payments
        FROM rm_transactions WHERE transaction_id = $1`, id).Scan(
		&r.Status, &r.Subtotal, &r.Discount, &r.Tax, &r.GrandTotal, &r.Paid, &r.Refunded, &r.Version, &r.Lines, &r.Payments)
	if err == pgx.ErrNoRows {
		return r, false
	}
	if err != nil {
		t.Fatalf("read rm_transactions: %v", err)
	}
	return r, true
}

// day is one rm_daily_sales row.
type day struct {
	Day                               string
	Count, Gross, Discounts, Tax, Net int64
	Refunds                           int64
	ByMethod                          map[string]int64
}

func readDays(t *testing.T, url string, merchant uuid.UUID) map[string]day {
	t.Helper()
	c := connect(t, url)
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), `
        SELECT business_day::text, count, gross, discounts, tax, net, refunds, by_method
        FROM rm_daily_sales WHERE merchant_id = $1`, merchant)
	if err != nil {
		t.Fatalf("read rm_daily_sales: %v", err)
	}
	defer rows.Close()
	out := map[string]day{}
	for rows.Next() {
		var d day
		if err := rows.Scan(&d.Day, &d.Count, &d.Gross, &d.Discounts, &d.Tax, &d.Net, &d.Refunds, &d.ByMethod); err != nil {
			t.Fatalf("scan rm_daily_sales: %v", err)
		}
		out[d.Day] = d
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read rm_daily_sales: %v", err)
	}
	return out
}
