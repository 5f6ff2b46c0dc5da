package projections_test

import (
	"context"
	"errors"
	"testing"

	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
)

// An event of partition A that this build cannot upcast (a newer schema
// version, written by a newer build during a rolling deploy) is A's to hold:
// the gap fill of another partition B, whose range covers it, skips it
// unread and applies B's own events. Before, the fill read every partition
// upcast, failed on A's event, and B stalled behind it for good.
func TestAnotherPartitionsUnreadableEventHoldsNoFill(t *testing.T) {
	env := projtest.New(t)
	ctx := context.Background()
	a := projtest.NewID(t)
	b := projtest.NewID(t)
	for projections.Partition(b.String(), 16) == projections.Partition(a.String(), 16) {
		b = projtest.NewID(t)
	}
	// A's event with schema version 2, which this build (ItemAdded at 1) cannot read.
	_, err := env.Store.Append(ctx, eventstore.StreamName("transaction", a.String(), projtest.NewID(t).String()), eventstore.NoStream,
		eventstore.EventData{ID: projtest.NewID(t), Type: "ItemAdded", SchemaVersion: 2, Data: []byte(`{}`),
			Metadata: eventstore.Metadata{MerchantID: a.String(), Actor: "t", Role: "MANAGER"}})
	if err != nil {
		t.Fatal(err)
	}
	sale := env.OpenSale(t, b, projtest.NewID(t), "000-001", t0)
	sale.AddItem("TEA", 1, 1000, 0, t0)
	events := feed(t, env)
	if len(events) != 3 {
		t.Fatalf("feed has %d events", len(events))
	}
	reg, err := eventstore.NewRegistry(eventstore.EventType{Name: "ItemAdded", Current: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := projections.NewRunner(env.Pool, eventstore.Upcasting{Store: env.Store, Registry: reg}, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	// B's first message (the open) was lost by the broker; its second arrives.
	prev := events[1].Position
	if err := r.HandleDeliveries(ctx, []projections.Delivery{{Event: events[2], PrevPosition: &prev}}); err != nil {
		t.Fatalf("partition B's delivery after a lost message: %v", err)
	}
	ok, err := r.Checkpoints().Reached(ctx, "transactions", b.String(), events[2].Position)
	if err != nil || !ok {
		t.Fatalf("partition B (merchant %s) has not applied its own events (%v): held by partition A's event", b, err)
	}
	// A's own fill still refuses A's event: its partition holds.
	if err := r.FillPartition(ctx, projections.Partition(a.String(), 16), events[0].Position); !errors.Is(err, eventstore.ErrSchema) {
		t.Fatalf("partition A's fill over its unreadable event: %v, want ErrSchema", err)
	}
}
