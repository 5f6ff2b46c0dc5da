package projections_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"

	"pos/eventstore/pgstore"
	"pos/internal/pgpool"
	"pos/projections"
	"pos/projections/projtest"
)

// roundTrips counts a pool's round trips to PostgreSQL: a batch (pipeline)
// is one, a query or statement sent alone is one.
type roundTrips struct{ n atomic.Int64 }

func (c *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (*roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (*roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (*roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// tracedPool is a pool as pos_app, as the runners' is, whose round trips c
// counts.
func tracedPool(t *testing.T, url string, c *roundTrips) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgpool.LoginAs(url, pgstore.AppRole))
	if err != nil {
		t.Fatalf("parse url: %v", err)
	}
	cfg.ConnConfig.Tracer = c
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		pgxuuid.Register(conn.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(context.Background()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	return pool
}

// TestARunOfSalesTakesTwoRoundTrips: a transaction of the runner applying
// two merchants' sales and their stock moves reads what its projectors need
// in the round trip of its locks, and writes with its COMMIT: two round
// trips, however many merchants and projectors (a round trip for each
// projector's read made it eight). A run in which a merchant's time zone
// changes before a payment still counts it on the new zone's business day.
// Both runs must give what one event at a time gives.
func TestARunOfSalesTakesTwoRoundTrips(t *testing.T) {
	env := projtest.New(t)
	ctx := context.Background()
	at := time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC) // the 10th in Jakarta, the 9th in Los Angeles

	// The past: settings, stock received, and a sale checked out with its
	// units reserved; then the first run pays it and takes its stock, and
	// opens another sale; the second changes a merchant's time zone and
	// pays the other sale.
	type shop struct {
		merchant uuid.UUID
		ledger   *projtest.Ledger
		paid     *projtest.Sale
		later    *projtest.Sale
	}
	var shops []*shop
	for range 2 {
		merchant, branch := projtest.NewID(t), projtest.NewID(t)
		env.ChangeSettings(t, merchant, "Asia/Jakarta", at)
		s := &shop{merchant: merchant, ledger: env.OpenLedger(t, merchant, branch, "TEA")}
		s.ledger.Receive(100, 5_000, at)
		s.paid = env.OpenSale(t, merchant, branch, "A-1", at)
		s.paid.AddItem("TEA", 2, 15_000, 1100, at)
		s.paid.Checkout(at)
		s.ledger.Reserve(s.paid.ID, 2, at)
		shops = append(shops, s)
	}
	past := feed(t, env)
	for _, s := range shops {
		s.paid.PayDue(at)
		s.paid.Complete(at)
		s.ledger.Sell(s.paid.ID, 2, at)
		s.later = env.OpenSale(t, s.merchant, s.paid.Branch, "A-2", at)
		s.later.AddItem("TEA", 1, 15_000, 1100, at)
		s.later.Checkout(at)
	}
	first := feed(t, env)[len(past):]
	env.ChangeSettings(t, shops[0].merchant, "America/Los_Angeles", at)
	for _, s := range shops {
		s.later.PayDue(at)
	}
	all := feed(t, env)
	second := all[len(past)+len(first):]

	opts := projections.Options{Partitions: 1}
	one, err := projections.NewRunner(env.Pool, env.Store, projections.Options{Partitions: 1, BatchSize: 1}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	handle(t, one, all...)
	want := snapshot(t, env.URL)
	projtest.ResetReadModels(t, admin(t, env.URL))

	var trips roundTrips
	r, err := projections.NewRunner(tracedPool(t, env.URL, &trips), env.Store, opts, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	handle(t, r, past...)
	trips.n.Store(0)
	if err := r.Handle(ctx, first); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if n := trips.n.Load(); n != 2 {
		t.Errorf("applying %d events of two merchants' sales and stock took %d round trips, want 2", len(first), n)
	}
	handle(t, r, second...)
	if got := snapshot(t, env.URL); got != want {
		t.Errorf("the runs give other read models than one event at a time:\n got %s\nwant %s", got, want)
	}
	var day string
	if err := admin(t, env.URL).QueryRow(ctx, `SELECT business_day::text FROM rm_daily_sales WHERE merchant_id = $1 AND count > 0 ORDER BY 1 LIMIT 1`,
		shops[0].merchant).Scan(&day); err != nil || day != "2025-03-09" {
		t.Errorf("the sale paid after the move to Los Angeles counted first on %q (%v), want 2025-03-09", day, err)
	}
}
