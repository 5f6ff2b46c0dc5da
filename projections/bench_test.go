package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"pos/domain/money"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/rebuild"
)

// BenchmarkReplay measures a projector replaying a backlog (issue #5: at
// least 20,000 events/s): Runner.Catchup applying every projection
// (projections.All) from Start over a store holding POS_BENCH_REPLAY_EVENTS
// events (default 20,000), reporting events/s. The backlog is seeded once
// per sub-benchmark, outside the timer, the way the sales load writes it: 8
// writers, each ringing up 4 sales at a time for random merchants (a
// settings change each first), one command per append with the exact
// version, so the feed interleaves streams as live traffic does. A sale is
// open, three items, 10 % of them a percent discount, checkout, a cash
// payment (with TransactionPaid), complete, and 5 % a refund of one line
// after. Before each replay the read models and the projections'
// bookkeeping are emptied (not timed).
//
// merchants=16 is the sales load's shape: consecutive events of the feed
// mostly belong to different merchants, so the Runner applies about one
// event per transaction. merchants=1 is its best case: runs of one merchant
// up to the batch size (100 events) per transaction.
func BenchmarkReplay(b *testing.B) {
	total := replayEvents(b)
	for _, merchants := range []int{16, 1} {
		b.Run(fmt.Sprintf("merchants=%d", merchants), func(b *testing.B) { benchmarkReplay(b, total, merchants) })
	}
}

// replayEvents is POS_BENCH_REPLAY_EVENTS, or 20,000.
func replayEvents(b *testing.B) int {
	v := os.Getenv("POS_BENCH_REPLAY_EVENTS")
	if v == "" {
		return 20_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("POS_BENCH_REPLAY_EVENTS=%q: want a positive number", v)
	}
	return n
}

// seedBacklog seeds a fresh database with at least total events of sales
// of nMerchants merchants (seedSales), and returns it, the events it holds,
// and a connection as the database's owner.
func seedBacklog(b *testing.B, total, nMerchants int) (*projtest.Env, int64, *pgx.Conn) {
	ctx := context.Background()
	env := projtest.New(b)
	merchants := make([]uuid.UUID, nMerchants)
	for i := range merchants {
		merchants[i] = projtest.NewID(b)
		env.ChangeSettings(b, merchants[i], "Asia/Jakarta", time.Now().UTC())
	}
	start := time.Now()
	if err := seedSales(ctx, env, merchants, total, 8, 4); err != nil {
		b.Fatalf("seed: %v", err)
	}
	if err := env.Store.Settle(ctx); err != nil {
		b.Fatalf("settle: %v", err)
	}
	events, err := env.Store.CountEvents(ctx, eventstore.Filter{})
	if err != nil {
		b.Fatalf("count: %v", err)
	}
	b.Logf("seeded %d events in %.1fs", events, time.Since(start).Seconds())
	admin, err := pgx.Connect(ctx, env.URL)
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	b.Cleanup(func() { admin.Close(context.Background()) })
	return env, events, admin
}

func benchmarkReplay(b *testing.B, total, nMerchants int) {
	ctx := context.Background()
	env, events, admin := seedBacklog(b, total, nMerchants)
	runner, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		b.Fatalf("NewRunner: %v", err)
	}

	var last eventstore.Position
	for b.Loop() {
		b.StopTimer()
		projtest.ResetReadModels(b, admin)
		b.StartTimer()
		if last, err = runner.Catchup(ctx, eventstore.Start); err != nil {
			b.Fatalf("Catchup: %v", err)
		}
	}
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(events), "events")

	// The replay really applied the backlog.
	var rows, completed int64
	if err := admin.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status IN ('completed', 'partially_refunded', 'refunded')) FROM rm_transactions`).Scan(&rows, &completed); err != nil {
		b.Fatalf("count rm_transactions: %v", err)
	}
	if rows == 0 || completed == 0 || last == eventstore.Start {
		b.Fatalf("after the replay: %d transactions, %d completed, last position %s", rows, completed, last)
	}
}

// BenchmarkRebuild measures a projection rebuild (SPEC §7, package rebuild)
// of every projection over the backlog BenchmarkReplay seeds (16 merchants,
// POS_BENCH_REPLAY_EVENTS events, default 20,000), beside its floor in the
// same iteration: the live runner's Catchup of the same backlog into the
// live tables (emptied first), which is the replay a rebuild cannot beat.
// It reports both in events/s and their ratio: what building shadow tables
// from the catalog, a runner of their own and the locked swap cost.
func BenchmarkRebuild(b *testing.B) {
	ctx := context.Background()
	env, events, admin := seedBacklog(b, replayEvents(b), 16)
	runner, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		b.Fatalf("NewRunner: %v", err)
	}
	rb := rebuild.New(ctx, env.Pool, env.URL, env.Store, rebuild.Options{Count: env.Store.CountAfter})
	var replayed, rebuilt, locked time.Duration
	for b.Loop() {
		b.StopTimer()
		projtest.ResetReadModels(b, admin)
		start := time.Now()
		if _, err := runner.Catchup(ctx, eventstore.Start); err != nil {
			b.Fatalf("Catchup: %v", err)
		}
		replayed += time.Since(start)
		b.StartTimer()
		start = time.Now()
		p, err := rb.Run(ctx, rebuild.All, nil)
		if err != nil {
			b.Fatalf("rebuild: %v", err)
		}
		rebuilt += time.Since(start)
		locked += p.Locked
		if p.Done != uint64(events) {
			b.Fatalf("the rebuild applied %d of %d events", p.Done, events)
		}
	}
	n := float64(events) * float64(b.N)
	b.ReportMetric(n/rebuilt.Seconds(), "rebuild-events/s")
	b.ReportMetric(n/replayed.Seconds(), "replay-events/s")
	b.ReportMetric(replayed.Seconds()/rebuilt.Seconds(), "rebuild/replay")
	b.ReportMetric(float64(locked.Microseconds())/1000/float64(b.N), "swap-locked-ms")
	b.ReportMetric(float64(events), "events")
}

// seedSale is one sale a seeding writer is ringing up.
type seedSale struct {
	agg      *transaction.Transaction
	merchant uuid.UUID
	stream   string
	cashier  string
	steps    []func(*transaction.Transaction, time.Time) ([]transaction.Event, error)
}

var seedCatalogue = []struct {
	sku   string
	price money.Amount
	tax   int64
}{
	{"COF-FW-L", 48_000, 1100}, {"COF-AM-M", 32_000, 1100}, {"TEA-JAS-M", 27_000, 1100}, {"BAK-CRO", 35_000, 1100},
	{"BAK-PAN", 38_000, 1100}, {"SNK-COOK", 22_000, 1100}, {"BTL-WTR", 8_000, 0}, {"SND-CHK", 55_000, 1100},
}

func newSeedSale(rng *rand.Rand, merchants []uuid.UUID, writer, n int) *seedSale {
	m := merchants[rng.IntN(len(merchants))]
	id := uuid.Must(uuid.NewV7())
	s := &seedSale{agg: &transaction.Transaction{}, merchant: m, stream: eventstore.StreamName("transaction", m.String(), id.String()),
		cashier: fmt.Sprintf("cashier-%d", writer)}
	branch := uuid.NewSHA1(m, []byte{byte(rng.IntN(4))}) // four branches per merchant
	code := fmt.Sprintf("%03X-%03X", writer, n%4096)
	s.steps = append(s.steps, func(x *transaction.Transaction, at time.Time) ([]transaction.Event, error) {
		return x.Open(transaction.Open{TransactionID: id, MerchantID: m, BranchID: branch, Code: code, Currency: "IDR", By: s.cashier, At: at})
	})
	var lines []uuid.UUID
	for range 3 {
		it := seedCatalogue[rng.IntN(len(seedCatalogue))]
		line, qty := uuid.Must(uuid.NewV7()), 1+rng.Int64N(3)
		lines = append(lines, line)
		s.steps = append(s.steps, func(x *transaction.Transaction, at time.Time) ([]transaction.Event, error) {
			return x.AddItem(transaction.AddItem{LineID: line, SKU: it.sku, Name: "item " + it.sku, Qty: qty, UnitPrice: it.price, TaxRateBps: it.tax, At: at})
		})
	}
	if rng.IntN(10) == 0 {
		s.steps = append(s.steps, func(x *transaction.Transaction, at time.Time) ([]transaction.Event, error) {
			return x.ApplyDiscount(transaction.ApplyDiscount{DiscountID: uuid.Must(uuid.NewV7()), Kind: transaction.DiscountPercent, Bps: 1000, Reason: "happy hour", At: at})
		})
	}
	s.steps = append(s.steps,
		func(x *transaction.Transaction, at time.Time) ([]transaction.Event, error) {
			return x.Checkout(transaction.Checkout{At: at})
		},
		func(x *transaction.Transaction, at time.Time) ([]transaction.Event, error) {
			due := x.Due()
			return x.AddPayment(transaction.AddPayment{PaymentID: uuid.Must(uuid.NewV7()), Method: transaction.MethodCash, Amount: (due/50_000 + 1) * 50_000, At: at})
		},
		func(x *transaction.Transaction, at time.Time) ([]transaction.Event, error) {
			return x.Complete(transaction.Complete{At: at})
		})
	if rng.IntN(20) == 0 {
		line := lines[0]
		s.steps = append(s.steps, func(x *transaction.Transaction, at time.Time) ([]transaction.Event, error) {
			return x.Refund(transaction.Refund{RefundID: uuid.Must(uuid.NewV7()), Reason: "returned", Lines: []transaction.RefundLine{{LineID: line, Qty: 1}}, At: at})
		})
	}
	return s
}

// next decides the sale's next command and appends its events as the
// command handlers do (fresh ids, metadata, the exact expected version); it
// returns how many events it appended.
func (s *seedSale) next(ctx context.Context, store eventstore.Store) (int, error) {
	step := s.steps[0]
	s.steps = s.steps[1:]
	events, err := step(s.agg, time.Now().UTC())
	if err != nil {
		return 0, fmt.Errorf("sale %s: %w", s.stream, err)
	}
	correlation := uuid.Must(uuid.NewV7()).String()
	md := eventstore.Metadata{MerchantID: s.merchant.String(), Actor: s.cashier, Role: "CASHIER", CorrelationID: correlation, CausationID: correlation,
		TraceParent: fmt.Sprintf("00-%032x-%016x-01", rand.Uint64(), rand.Uint64())}
	data := make([]eventstore.EventData, len(events))
	for i, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		data[i] = eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: e.EventType(), SchemaVersion: transaction.SchemaVersion, Data: b, Metadata: md}
	}
	if _, err := store.Append(ctx, s.stream, eventstore.Exact(s.agg.Version()), data...); err != nil {
		return 0, fmt.Errorf("append to %s: %w", s.stream, err)
	}
	for _, e := range events {
		if err := s.agg.Apply(e); err != nil {
			return 0, err
		}
	}
	return len(events), nil
}

// seedSales appends at least total events of sales: writers goroutines,
// each advancing one of its inflight sales (picked at random) per append.
func seedSales(ctx context.Context, env *projtest.Env, merchants []uuid.UUID, total, writers, inflight int) error {
	var appended atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			sales := make([]*seedSale, inflight)
			n := 0
			for appended.Load() < int64(total) {
				i := rng.IntN(inflight)
				if sales[i] == nil || len(sales[i].steps) == 0 {
					n++
					sales[i] = newSeedSale(rng, merchants, w, n)
				}
				k, err := sales[i].next(ctx, env.Store)
				if err != nil {
					errs <- err
					return
				}
				appended.Add(int64(k))
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestRunnerMeter checks Options.Meter: pos.projection.events counts each
// event applied once (not its redelivery) and pos.projection.lag has one
// observation per such event, no less than the time since the event was
// recorded.
func TestRunnerMeter(t *testing.T) {
	env := projtest.New(t)
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{Meter: meter}, projections.All()...)
	if err != nil {
		t.Fatalf("NewRunner: %v", err)
	}
	s := env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", t0)
	s.AddItem("TEA", 2, 15_000, 1100, t0)
	s.Checkout(t0)
	events := feed(t, env)
	time.Sleep(20 * time.Millisecond) // every lag is now at least 20 ms
	handle(t, r, events...)
	handle(t, r, events...) // redelivered: applies nothing, records nothing

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect: %v", err)
	}
	var names []string
	for _, p := range projections.All() {
		names = append(names, p.Name())
	}
	wantAttr := strings.Join(names, "+")
	var count uint64
	var applied int64 = -1
	var minLag float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				if m.Name == "pos.projection.lag" && m.Unit == "s" && len(d.DataPoints) == 1 {
					count = d.DataPoints[0].Count
					minLag, _ = d.DataPoints[0].Min.Value()
					if v, _ := d.DataPoints[0].Attributes.Value("projectors"); v.AsString() != wantAttr {
						t.Errorf("lag attribute projectors = %q, want %q", v.AsString(), wantAttr)
					}
				}
			case metricdata.Sum[int64]:
				if m.Name == "pos.projection.events" && len(d.DataPoints) == 1 {
					applied = d.DataPoints[0].Value
				}
			}
		}
	}
	if n := len(events); applied != int64(n) || count != uint64(n) {
		t.Errorf("pos.projection.events = %d and lag observations %d, want %d each", applied, count, n)
	}
	if minLag < 0.020 {
		t.Errorf("smallest lag %.4fs, want at least 0.020s", minLag)
	}
}

// BenchmarkApplyOneByOne applies a backlog of 4,000 events (16 merchants)
// one event per transaction, as the NATS consumers mostly deliver them
// under load: the runner's cost per transaction, not per event.
func BenchmarkApplyOneByOne(b *testing.B) {
	ctx := context.Background()
	env, _, admin := seedBacklog(b, 4000, 16)
	runner, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		b.Fatal(err)
	}
	if err := env.Store.Settle(ctx); err != nil {
		b.Fatal(err)
	}
	var all []eventstore.RecordedEvent
	for pos := eventstore.Start; ; {
		page, err := env.Store.ReadAll(ctx, pos, eventstore.Filter{}, 1000)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, page...)
		if len(page) < 1000 {
			break
		}
		pos = page[len(page)-1].Position
	}
	var took time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		projtest.ResetReadModels(b, admin)
		b.StartTimer()
		start := time.Now()
		for _, e := range all {
			if err := runner.Handle(ctx, []eventstore.RecordedEvent{e}); err != nil {
				b.Fatal(err)
			}
		}
		took += time.Since(start)
		n += len(all)
	}
	b.ReportMetric(float64(n)/took.Seconds(), "events/s")
	b.ReportMetric(float64(took.Microseconds())/float64(n), "us/event")
}
