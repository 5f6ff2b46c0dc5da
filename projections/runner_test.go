package projections_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/domain/transaction"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/projections"
	"pos/projections/projtest"
)

var t0 = time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC)

// ringUp appends a varied history for merchant: settings, a completed sale
// with a declined card, a discount and a line refund, a voided paid sale, a
// draft with a removed line. It returns the sales.
func ringUp(t *testing.T, env *projtest.Env, merchant uuid.UUID) []*projtest.Sale {
	t.Helper()
	branch := projtest.NewID(t)
	env.ChangeSettings(t, merchant, "Asia/Makassar", t0)

	a := env.OpenSale(t, merchant, branch, "000-001", t0)
	tea := a.AddItem("TEA", 3, 15000, 1100, t0)
	a.AddItem("CAKE", 1, 27500, 1100, t0)
	a.DiscountPercent(1000, t0)
	a.Checkout(t0)
	card := a.Pay(transaction.MethodCard, 20000, t0)
	a.Decline(card, t0)
	a.PayDue(t0.Add(time.Minute))
	a.Complete(t0.Add(time.Minute))
	a.RefundLine(tea, 1, t0.Add(time.Hour))

	b := env.OpenSale(t, merchant, branch, "000-002", t0)
	b.AddItem("COFFEE", 2, 20000, 0, t0)
	b.Checkout(t0)
	qris := b.Pay(transaction.MethodQRIS, 40000, t0)
	b.Confirm(qris, t0)
	b.Void(t0.Add(2 * time.Hour))

	c := env.OpenSale(t, merchant, branch, "000-003", t0)
	water := c.AddItem("WATER", 1, 5000, 1100, t0)
	c.AddItem("BREAD", 2, 8000, 1100, t0)
	c.RemoveItem(water, t0)
	return []*projtest.Sale{a, b, c}
}

func TestPartitionIsFNV1aOfTheMerchantID(t *testing.T) {
	tests := []struct {
		merchant string
		n        int
		want     int
	}{
		{"a", 1000, 220}, // FNV-1a("a") = 0xe40c292c
		{"0193a5c0-0000-7000-8000-000000000001", 16, 11},
		{"0193a5c0-0000-7000-8000-000000000002", 16, 14},
		{"anything", 1, 0},
		{"anything", 0, 0},
	}
	for _, tt := range tests {
		if got := projections.Partition(tt.merchant, tt.n); got != tt.want {
			t.Errorf("Partition(%q, %d) = %d, want %d", tt.merchant, tt.n, got, tt.want)
		}
	}
	seen := map[int]int{}
	for range 1000 {
		seen[projections.Partition(uuid.NewString(), 16)]++
	}
	for p := range 16 {
		if seen[p] < 20 {
			t.Errorf("partition %d got %d of 1000 merchants", p, seen[p])
		}
	}
}

func TestNewRunnerRefusesDuplicateNames(t *testing.T) {
	_, err := projections.NewRunner(nil, nil, projections.Options{}, projections.Transactions{}, projections.Transactions{})
	if err == nil {
		t.Fatal("NewRunner with two projectors of one name: want an error")
	}
	if _, err := projections.NewRunner(nil, nil, projections.Options{}); err == nil {
		t.Fatal("NewRunner without projectors: want an error")
	}
}

func TestEveryEventDeliveredTwiceGivesTheSameReadModel(t *testing.T) {
	env := projtest.New(t)
	ringUp(t, env, projtest.NewID(t))
	ringUp(t, env, projtest.NewID(t))
	events := feed(t, env)

	r := newRunner(t, env)
	handle(t, r, events...)
	want := snapshot(t, env.URL)

	t.Run("the whole feed again", func(t *testing.T) {
		handle(t, r, events...)
		if got := snapshot(t, env.URL); got != want {
			t.Errorf("read model changed on redelivery:\ngot  %s\nwant %s", got, want)
		}
	})
	t.Run("each event twice, newest first", func(t *testing.T) {
		for _, e := range slices.Backward(events) {
			handle(t, r, e, e)
		}
		if got := snapshot(t, env.URL); got != want {
			t.Errorf("read model changed on redelivery:\ngot  %s\nwant %s", got, want)
		}
	})
	t.Run("each event twice from an empty read model", func(t *testing.T) {
		// Another database whose store is empty: nothing can be filled from
		// it, so this also shows that an in-order delivery reads no event.
		other := projtest.New(t)
		doubled := make([]eventstore.RecordedEvent, 0, 2*len(events))
		for _, e := range events {
			doubled = append(doubled, e, e)
		}
		handle(t, newRunner(t, other), doubled...)
		if got := snapshot(t, other.URL); got != want {
			t.Errorf("doubled delivery differs from single delivery:\ngot  %s\nwant %s", got, want)
		}
	})
}

func TestConcurrentRedeliveriesApplyOnce(t *testing.T) {
	env := projtest.New(t)
	ringUp(t, env, projtest.NewID(t))
	events := feed(t, env)

	reference := projtest.New(t)
	handle(t, newRunner(t, reference), events...)
	want := snapshot(t, reference.URL)

	r := newRunner(t, env)
	const workers = 8
	start := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			batch := events
			if w%2 == 1 { // half deliver one event per call
				for _, e := range batch {
					if err := r.Handle(context.Background(), []eventstore.RecordedEvent{e}); err != nil {
						errs <- err
						return
					}
				}
				return
			}
			errs <- r.Handle(context.Background(), batch)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	if got := snapshot(t, env.URL); got != want {
		t.Errorf("concurrent deliveries differ from one delivery:\ngot  %s\nwant %s", got, want)
	}
}

func TestStreamGapIsFilledFromTheStore(t *testing.T) {
	env := projtest.New(t)
	merchant, branch := projtest.NewID(t), projtest.NewID(t)
	s := env.OpenSale(t, merchant, branch, "000-001", t0) // 1
	s.AddItem("A", 1, 1000, 0, t0)                        // 2
	s.AddItem("B", 1, 2000, 0, t0)                        // 3
	s.AddItem("C", 1, 4000, 0, t0)                        // 4
	r := newRunner(t, env)

	handle(t, r, s.Events[0], s.Events[1], s.Events[3]) // 3 is lost
	row, ok := readTx(t, env.URL, s.ID)
	if !ok {
		t.Fatal("no rm_transactions row")
	}
	if row.Version != 4 || len(row.Lines) != 3 || row.Subtotal != 7000 {
		t.Errorf("after 1, 2, 4: version %d, %d lines, subtotal %d; want 4, 3, 7000", row.Version, len(row.Lines), row.Subtotal)
	}
	want := snapshot(t, env.URL)

	handle(t, r, s.Events[2]) // the lost message arrives late
	if got := snapshot(t, env.URL); got != want {
		t.Errorf("late arrival of 3 changed the read model:\ngot  %s\nwant %s", got, want)
	}

	t.Run("a stream first seen at its last event", func(t *testing.T) {
		s2 := env.OpenSale(t, merchant, branch, "000-002", t0)
		s2.AddItem("A", 2, 1000, 0, t0)
		s2.Checkout(t0)
		s2.PayDue(t0)
		handle(t, r, s2.Events[len(s2.Events)-1])
		row, ok := readTx(t, env.URL, s2.ID)
		if !ok || row.Status != "paid" || row.Paid != 2000 || row.Version != int64(len(s2.Events)) {
			t.Errorf("row %+v (found %v); want paid 2000 at version %d", row, ok, len(s2.Events))
		}
		if got := readDays(t, env.URL, merchant)["2025-03-10"]; got.Count != 1 || got.Gross != 2000 {
			t.Errorf("daily sales %+v; want the sale counted", got)
		}
	})
}

func TestStreamGapMissingFromTheStoreFails(t *testing.T) {
	env := projtest.New(t)
	s := env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", t0)
	s.AddItem("A", 1, 1000, 0, t0)
	s.AddItem("B", 1, 1000, 0, t0)

	empty := projtest.New(t) // a store without these events
	r := newRunner(t, empty)
	err := r.Handle(context.Background(), []eventstore.RecordedEvent{s.Events[0], s.Events[2]})
	if !errors.Is(err, projections.ErrStreamGap) {
		t.Fatalf("Handle with an unfillable gap: %v, want ErrStreamGap", err)
	}
	if _, ok := readTx(t, empty.URL, s.ID); ok {
		t.Error("the failed batch left a row behind")
	}
}

func TestPositionGapIsFilledFromTheFeed(t *testing.T) {
	env := projtest.New(t)
	merchant, branch := projtest.NewID(t), projtest.NewID(t)
	a := env.OpenSale(t, merchant, branch, "000-001", t0)
	lost := env.OpenSale(t, merchant, branch, "000-002", t0) // a one-event stream: no stream gap reveals it
	a.AddItem("A", 1, 1000, 0, t0)
	events := feed(t, env)
	if len(events) != 3 {
		t.Fatalf("feed has %d events, want 3", len(events))
	}
	r := newRunner(t, env)
	ctx := context.Background()

	start := eventstore.Start
	if err := r.HandleDeliveries(ctx, []projections.Delivery{{Event: events[0], PrevPosition: &start}}); err != nil {
		t.Fatalf("HandleDeliveries: %v", err)
	}
	prev := events[1].Position
	if err := r.HandleDeliveries(ctx, []projections.Delivery{{Event: events[2], PrevPosition: &prev}}); err != nil {
		t.Fatalf("HandleDeliveries: %v", err)
	}
	if _, ok := readTx(t, env.URL, lost.ID); !ok {
		t.Error("the lost sale was not filled in from the feed")
	}
	if row, _ := readTx(t, env.URL, a.ID); row.Version != 2 {
		t.Errorf("sale a at version %d, want 2", row.Version)
	}
	t.Run("a previous position the feed does not reach", func(t *testing.T) {
		a.AddItem("B", 1, 1000, 0, t0)
		next := feed(t, env)[3]
		far := eventstore.Position{Major: 1 << 60}
		err := r.HandleDeliveries(ctx, []projections.Delivery{{Event: next, PrevPosition: &far}})
		if !errors.Is(err, projections.ErrPositionGap) {
			t.Fatalf("HandleDeliveries: %v, want ErrPositionGap", err)
		}
	})
}

func TestCheckpointsFollowTheFeed(t *testing.T) {
	env := projtest.New(t)
	m1, m2 := projtest.NewID(t), projtest.NewID(t)
	ringUp(t, env, m1)
	r := newRunner(t, env)
	ctx := context.Background()

	last, err := r.Catchup(ctx, eventstore.Start)
	if err != nil {
		t.Fatalf("Catchup: %v", err)
	}
	events := feed(t, env)
	if want := events[len(events)-1].Position; last != want {
		t.Fatalf("Catchup returned %s, want %s", last, want)
	}
	cp := r.Checkpoints()
	for _, p := range projections.All() {
		got, err := cp.Position(ctx, p.Name(), projections.Partition(m1.String(), r.Partitions()))
		if err != nil || got != last {
			t.Errorf("%s checkpoint %s (%v), want %s", p.Name(), got, err, last)
		}
		all, err := cp.Positions(ctx, p.Name())
		if err != nil || len(all) != 1 || all[projections.Partition(m1.String(), r.Partitions())] != last {
			t.Errorf("%s checkpoints of every partition %v (%v), want only m1's at %s", p.Name(), all, err, last)
		}
		if ok, err := cp.Reached(ctx, p.Name(), m1.String(), last); !ok || err != nil {
			t.Errorf("%s Reached(m1, %s) = %v, %v; want true", p.Name(), last, ok, err)
		}
		beyond := eventstore.Position{Major: last.Major, Minor: last.Minor + 1}
		if ok, _ := cp.Reached(ctx, p.Name(), m1.String(), beyond); ok {
			t.Errorf("%s Reached(m1, %s) = true beyond the last event", p.Name(), beyond)
		}
	}
	if projections.Partition(m1.String(), r.Partitions()) != projections.Partition(m2.String(), r.Partitions()) {
		if ok, _ := cp.Reached(ctx, "transactions", m2.String(), last); ok {
			t.Error("Reached for a merchant of an untouched partition = true")
		}
	}

	// Catching up again from the start changes nothing.
	want := snapshot(t, env.URL)
	if _, err := r.Catchup(ctx, eventstore.Start); err != nil {
		t.Fatalf("Catchup: %v", err)
	}
	if got := snapshot(t, env.URL); got != want {
		t.Errorf("second catch-up changed the read model")
	}
}

func TestFollowAppliesNewEvents(t *testing.T) {
	env := projtest.New(t)
	r := newRunner(t, env)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Follow(ctx, eventstore.Start, eventstore.FollowOptions{Idle: 10 * time.Millisecond}) }()

	s := env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", t0)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := readTx(t, env.URL, s.ID); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Follow did not project the new sale")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Follow returned %v, want context.Canceled", err)
	}
	err := r.Follow(context.Background(), eventstore.Start, eventstore.FollowOptions{Filter: eventstore.Filter{MerchantID: s.Merchant.String()}})
	if err == nil {
		t.Error("Follow with a merchant filter: want an error")
	}
}

func TestEventOfAnotherMerchantThanItsStreamIsRefused(t *testing.T) {
	env := projtest.New(t)
	s := env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", t0)
	e := s.Events[0]
	e.Metadata.MerchantID = projtest.NewID(t).String()
	err := newRunner(t, env).Handle(context.Background(), []eventstore.RecordedEvent{e})
	if !errors.Is(err, projections.ErrBadEvent) {
		t.Fatalf("Handle: %v, want ErrBadEvent", err)
	}
	bad := s.Events[0]
	bad.Stream = "nonsense"
	if err := newRunner(t, env).Handle(context.Background(), []eventstore.RecordedEvent{bad}); !errors.Is(err, projections.ErrBadEvent) {
		t.Fatalf("Handle: %v, want ErrBadEvent", err)
	}
}

func Example_partition() {
	fmt.Println(projections.Partition("0193a5c0-0000-7000-8000-000000000001", 16))
	// Output: 11
}

// TestCopiesOfCommittedDeliveriesTouchNothing: once a runner committed a
// partition up to a position (deliveries chained by PrevPosition), a copy of
// a delivery at or below it is acknowledged without a statement: here the
// runner's pool is closed by then, and the copies still succeed, while a
// new event fails.
func TestCopiesOfCommittedDeliveriesTouchNothing(t *testing.T) {
	env := projtest.New(t)
	s := env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", t0)
	s.AddItem("A", 1, 1000, 0, t0)
	events := feed(t, env)
	pool, err := pgstore.ConnectSized(context.Background(), env.URL, 2)
	if err != nil {
		t.Fatal(err)
	}
	r, err := projections.NewRunner(pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := eventstore.Start
	chain := []projections.Delivery{{Event: events[0], PrevPosition: &start}, {Event: events[1], PrevPosition: &events[0].Position}}
	if err := r.HandleDeliveries(ctx, chain); err != nil {
		t.Fatalf("HandleDeliveries: %v", err)
	}
	pool.Close()
	if err := r.HandleDeliveries(ctx, chain); err != nil {
		t.Errorf("copies of committed deliveries: %v, want nil without a statement", err)
	}
	s.AddItem("B", 1, 1000, 0, t0)
	next := feed(t, env)[2]
	if err := r.HandleDeliveries(ctx, []projections.Delivery{{Event: next, PrevPosition: &events[1].Position}}); err == nil {
		t.Error("a new delivery on a closed pool succeeded: the test cannot tell copies from work")
	}
}
