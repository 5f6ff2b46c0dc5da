package projections_test

import (
	"context"
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

// admin connects as the database's creator, a superuser: it sees every
// merchant's rows (superusers bypass row-level security).
func admin(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// snapshot returns every read-model row and bookkeeping row as text, to
// compare two databases or two moments.
func snapshot(t *testing.T, url string) string {
	t.Helper()
	c := admin(t, url)
	var b strings.Builder
	for _, q := range []string{
		`SELECT to_jsonb(t)::text FROM rm_transactions t ORDER BY merchant_id, transaction_id`,
		`SELECT to_jsonb(t)::text FROM rm_daily_sales t ORDER BY merchant_id, branch_id, business_day, currency`,
		`SELECT to_jsonb(t)::text FROM rm_daily_sales_facts t ORDER BY merchant_id, transaction_id`,
		`SELECT to_jsonb(t)::text FROM rm_merchant_settings t ORDER BY merchant_id`,
		`SELECT to_jsonb(t)::text FROM rm_stock_levels t ORDER BY merchant_id, ledger_id`,
		`SELECT to_jsonb(t)::text FROM rm_stock_movements t ORDER BY merchant_id, ledger_id, version`,
		`SELECT to_jsonb(t)::text FROM rm_stock_reservations t ORDER BY merchant_id, ledger_id, transaction_id`,
		`SELECT concat_ws(' ', projection, stream_name, version) FROM projection_streams ORDER BY projection, stream_name`,
		`SELECT concat_ws(' ', projection, partition, major, minor) FROM projection_checkpoints ORDER BY projection, partition`,
	} {
		rows, err := c.Query(context.Background(), q)
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		b.WriteString(q + "\n  " + strings.Join(lines, "\n  ") + "\n")
	}
	return b.String()
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
	err := admin(t, url).QueryRow(context.Background(), `
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
	rows, err := admin(t, url).Query(context.Background(), `
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
