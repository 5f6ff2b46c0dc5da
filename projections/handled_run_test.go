package projections_test

import (
	"context"
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
	s := env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", t0)
	s.AddItem("A", 1, 1000, 0, t0)
	s.AddItem("B", 1, 1000, 0, t0)
	s.DiscountPercent(1000, t0)
	s.AddItem("C", 1, 1000, 0, t0)
	s.Checkout(t0)
	events := feed(t, env)
	if len(events) != 6 {
		t.Fatalf("%d events in the feed, want 6", len(events))
	}
	deliveries := make([]projections.Delivery, len(events))
	prev := eventstore.Start
	for i, e := range events {
		p := prev
		deliveries[i] = projections.Delivery{Event: e, PrevPosition: &p}
		prev = e.Position
	}

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
		r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{
			MaxHandledPerRun: tc.maxHandled,
			AfterCommit: func(_ context.Context, es []eventstore.RecordedEvent) {
				var types []string
				for _, e := range es {
					types = append(types, e.Type)
				}
				runs = append(runs, types)
			},
		}, rec)
		if err != nil {
			t.Fatal(err)
		}
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
