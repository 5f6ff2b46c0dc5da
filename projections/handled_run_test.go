package projections_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
)

// txRecorder handles ItemAdded only and records, per event, the id of the
// transaction that applied it.
type txRecorder struct {
	mu  sync.Mutex
	txs []string
}

func (*txRecorder) Name() string                  { return "tx_recorder" }
func (*txRecorder) Handles(eventType string) bool { return eventType == "ItemAdded" }
func (p *txRecorder) Apply(ctx context.Context, tx pgx.Tx, _ eventstore.RecordedEvent) error {
	var id string
	if err := tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&id); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.txs = append(p.txs, id)
	return nil
}

// MaxHandledPerRun 1 gives each handled event a transaction of its own,
// and the events no projector handles ride along instead of costing one
// each; without it, one transaction applies the whole run.
func TestMaxHandledPerRunSplitsOnlyAtHandledEvents(t *testing.T) {
	env := projtest.New(t)
	s, events := discountedSale(t, env)
	if len(events) != 6 {
		t.Fatalf("%d events in the feed, want 6", len(events))
	}
	deliveries := chained(events)

	admin := admin(t, env.URL)
	for _, tc := range []struct {
		maxHandled int
		wantTxs    int // distinct transactions among the three ItemAdded
		wantRuns   [][]string
	}{
		{1, 3, [][]string{
			{"TransactionOpened", "ItemAdded"},
			{"ItemAdded", "DiscountApplied"},
			{"ItemAdded", "CheckedOut"},
		}},
		{0, 1, [][]string{{"TransactionOpened", "ItemAdded", "ItemAdded", "DiscountApplied", "ItemAdded", "CheckedOut"}}},
	} {
		projtest.ResetReadModels(t, admin)
		rec := &txRecorder{}
		var runs [][]string
		r := runRecorder(t, env, tc.maxHandled, &runs, rec)
		if err := r.HandleDeliveries(context.Background(), deliveries); err != nil {
			t.Fatalf("MaxHandledPerRun %d: HandleDeliveries: %v", tc.maxHandled, err)
		}
		distinct := map[string]bool{}
		for _, id := range rec.txs {
			distinct[id] = true
		}
		if len(rec.txs) != 3 || len(distinct) != tc.wantTxs {
			t.Errorf("MaxHandledPerRun %d: ItemAdded applied in transactions %v, want 3 events in %d transactions", tc.maxHandled, rec.txs, tc.wantTxs)
		}
		if got, want := len(runs), len(tc.wantRuns); got != want {
			t.Fatalf("MaxHandledPerRun %d: runs %v, want %v", tc.maxHandled, runs, tc.wantRuns)
		}
		for i := range runs {
			if len(runs[i]) != len(tc.wantRuns[i]) {
				t.Fatalf("MaxHandledPerRun %d: runs %v, want %v", tc.maxHandled, runs, tc.wantRuns)
			}
			for j := range runs[i] {
				if runs[i][j] != tc.wantRuns[i][j] {
					t.Fatalf("MaxHandledPerRun %d: runs %v, want %v", tc.maxHandled, runs, tc.wantRuns)
				}
			}
		}
		got, err := r.Checkpoints().Position(context.Background(), rec.Name(), projections.Partition(s.Merchant.String(), r.Partitions()))
		if err != nil || got != events[len(events)-1].Position {
			t.Errorf("MaxHandledPerRun %d: checkpoint %s (%v), want the last event's %s", tc.maxHandled, got, err, events[len(events)-1].Position)
		}
	}
}

// A projector added to a runner after the others have applied a partition
// has no checkpoint there: the first gap the runner fills starts from the
// beginning of the feed, so the newcomer gets the whole history, as a
// runner that had all projectors from the start would have built it.
func TestFillStartsWhereTheLeastAdvancedProjectorIs(t *testing.T) {
	env := projtest.New(t)
	ringUp(t, env, projtest.NewID(t))
	events := feed(t, env)
	last := events[len(events)-1]

	var early []projections.Projector
	for _, p := range projections.All() {
		if p.Name() == "merchant_settings" || p.Name() == "transactions" {
			early = append(early, p)
		}
	}
	if len(early) != 2 {
		t.Fatalf("found %d of the two early projectors", len(early))
	}
	a, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, early...)
	if err != nil {
		t.Fatal(err)
	}
	handle(t, a, events[:len(events)-1]...)

	b := newRunner(t, env) // every projector
	prev := events[len(events)-2].Position
	if err := b.HandleDeliveries(context.Background(), []projections.Delivery{{Event: last, PrevPosition: &prev}}); err != nil {
		t.Fatalf("HandleDeliveries: %v", err)
	}
	got := textRows(t, env.URL, salesQueries...)

	projtest.ResetReadModels(t, admin(t, env.URL))
	if _, err := newRunner(t, env).Catchup(context.Background(), eventstore.Start); err != nil {
		t.Fatalf("Catchup: %v", err)
	}
	diffRows(t, "read models", got, textRows(t, env.URL, salesQueries...))
}

// outsideActor handles ItemAdded by writing in the transaction (it takes a
// transaction id, as a write does), and DiscountApplied and CheckedOut
// "outside" it (ActsOutside): for those it records whether the
// transaction already had an id when Apply began.
type outsideActor struct {
	idBefore []bool // per outside event
}

func (*outsideActor) Name() string { return "outside_actor" }
func (*outsideActor) Handles(eventType string) bool {
	return eventType == "ItemAdded" || eventType == "DiscountApplied" || eventType == "CheckedOut"
}
func (*outsideActor) ActsOutside(eventType string) bool { return eventType != "ItemAdded" }
func (p *outsideActor) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	if e.Type == "ItemAdded" {
		_, err := tx.Exec(ctx, "SELECT pg_current_xact_id()")
		return err
	}
	var assigned bool
	if err := tx.QueryRow(ctx, "SELECT pg_current_xact_id_if_assigned() IS NOT NULL").Scan(&assigned); err != nil {
		return err
	}
	p.idBefore = append(p.idBefore, assigned)
	return nil
}

// With ActsOutside, MaxHandledPerRun 1 counts only the events acted on
// outside the transaction, and each of them starts its run: the events
// only written in the transaction share one, and no outside effect runs
// while the transaction holds an id.
func TestActsOutsideSplitsOnlyBeforeOutsideEffects(t *testing.T) {
	env := projtest.New(t)
	_, events := discountedSale(t, env)
	deliveries := chained(events)
	p := &outsideActor{}
	var runs [][]string
	r := runRecorder(t, env, 1, &runs, p)
	if err := r.HandleDeliveries(context.Background(), deliveries); err != nil {
		t.Fatalf("HandleDeliveries: %v", err)
	}
	want := [][]string{
		{"TransactionOpened", "ItemAdded", "ItemAdded"},
		{"DiscountApplied", "ItemAdded"},
		{"CheckedOut"},
	}
	if fmt.Sprint(runs) != fmt.Sprint(want) {
		t.Fatalf("runs %v, want %v", runs, want)
	}
	if fmt.Sprint(p.idBefore) != "[false false]" {
		t.Fatalf("transaction id already taken when the outside effects ran: %v, want [false false]", p.idBefore)
	}
}

// With two merchants in a partition, a run that holds an event acted on
// outside takes no later handled event of another merchant: the runner
// applies each merchant's events together (segmentsOf), so that event
// could be written before the outside effects run.
func TestActsOutsideRunKeepsToItsMerchant(t *testing.T) {
	env := projtest.New(t)
	m1 := projtest.NewID(t)
	m2 := projtest.NewID(t)
	for projections.Partition(m2.String(), projections.DefaultPartitions) != projections.Partition(m1.String(), projections.DefaultPartitions) {
		m2 = projtest.NewID(t)
	}
	s2 := env.OpenSale(t, m2, projtest.NewID(t), "000-002", t0)
	s2.AddItem("A", 1, 1000, 0, t0)
	s1 := env.OpenSale(t, m1, projtest.NewID(t), "000-001", t0)
	s2.DiscountPercent(1000, t0)
	s1.AddItem("B", 1, 1000, 0, t0)
	events := feed(t, env)
	if len(events) != 5 {
		t.Fatalf("%d events in the feed, want 5", len(events))
	}
	deliveries := chained(events)
	p := &outsideActor{}
	var runs [][]string
	r := runRecorder(t, env, 1, &runs, p)
	// The second call starts its run with m1's opening, before m2's
	// discount.
	if err := r.HandleDeliveries(context.Background(), deliveries[:2]); err != nil {
		t.Fatalf("HandleDeliveries: %v", err)
	}
	runs = nil
	if err := r.HandleDeliveries(context.Background(), deliveries[2:]); err != nil {
		t.Fatalf("HandleDeliveries: %v", err)
	}
	want := [][]string{{"TransactionOpened", "DiscountApplied"}, {"ItemAdded"}}
	if fmt.Sprint(runs) != fmt.Sprint(want) {
		t.Fatalf("runs %v, want %v", runs, want)
	}
	if fmt.Sprint(p.idBefore) != "[false]" {
		t.Fatalf("transaction id already taken when the outside effect ran: %v, want [false]", p.idBefore)
	}
}

// chained makes deliveries of events, each naming the one before it as
// its PrevPosition (the first, Start).
func chained(events []eventstore.RecordedEvent) []projections.Delivery {
	deliveries := make([]projections.Delivery, len(events))
	prev := eventstore.Start
	for i, e := range events {
		p := prev
		deliveries[i] = projections.Delivery{Event: e, PrevPosition: &p}
		prev = e.Position
	}
	return deliveries
}

// runRecorder returns a runner of p with MaxHandledPerRun maxHandled that
// appends to runs the event types of each transaction it commits.
func runRecorder(t *testing.T, env *projtest.Env, maxHandled int, runs *[][]string, p projections.Projector) *projections.Runner {
	t.Helper()
	r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{
		MaxHandledPerRun: maxHandled,
		AfterCommit: func(_ context.Context, es []eventstore.RecordedEvent) {
			var types []string
			for _, e := range es {
				types = append(types, e.Type)
			}
			*runs = append(*runs, types)
		},
	}, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// discountedSale rings up one sale (opened, two items, a discount, a third
// item, checked out) and returns it with the feed's six events.
func discountedSale(t *testing.T, env *projtest.Env) (*projtest.Sale, []eventstore.RecordedEvent) {
	t.Helper()
	s := env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", t0)
	s.AddItem("A", 1, 1000, 0, t0)
	s.AddItem("B", 1, 1000, 0, t0)
	s.DiscountPercent(1000, t0)
	s.AddItem("C", 1, 1000, 0, t0)
	s.Checkout(t0)
	return s, feed(t, env)
}
