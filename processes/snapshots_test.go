package processes_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"pos/commands"
	"pos/domain/stock"
	"pos/domain/transaction"
)

// otherProcess returns handlers over f's store with snapshots of their own,
// as another process's.
func otherProcess(f *fixture) *commands.Handlers {
	return commands.New(f.env.Store, &commands.Deps{
		Now:            f.clock,
		NewID:          func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes:          commands.NewCodes(f.env.Pool),
		Snapshots:      commands.NewSnapshots(0),
		Locks:          &commands.StreamLocks{},
		TrustSnapshots: true,
	})
}

// checkoutWith opens a sale of qty TEA through h and checks it out.
func checkoutWith(t *testing.T, h *commands.Handlers, f *fixture, qty int64) error {
	t.Helper()
	ctx := context.Background()
	d, _, err := h.OpenTransaction(ctx, f.meta, commands.OpenTransaction{BranchID: f.branch})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.AddItem(ctx, f.meta, d.ID(), transaction.AddItem{SKU: "TEA", Name: "Tea", Qty: qty, UnitPrice: 1000}); err != nil {
		t.Fatal(err)
	}
	_, _, err = h.Checkout(ctx, f.meta, d.ID())
	return err
}

// Two processes (each its own trusted snapshots) write one ledger: each
// decides on a snapshot the other has overtaken. A stale snapshot must
// neither let a checkout reserve units that are gone nor refuse one the
// store could serve (commands.Deps.TrustSnapshots).
func TestTrustedSnapshotsOfTwoProcesses(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := otherProcess(f)
	checkout := func(h *commands.Handlers, qty int64) error {
		t.Helper()
		return checkoutWith(t, h, f, qty)
	}

	f.receive("TEA", 10, 100) // this process's snapshot: 10 available
	if err := checkout(other, 8); err != nil {
		t.Fatalf("the other process reserving 8 of 10: %v", err)
	}
	// This process still remembers 10 available.
	err := checkout(f.h, 5)
	if !errors.Is(err, stock.ErrInsufficientStock) {
		t.Fatalf("reserving 5 when 2 are left, on a snapshot that says 10: %v, want insufficient stock", err)
	}
	f.want("TEA", 10, 8)

	// Now the other process receives 10 more; this one remembers 2
	// available (its confirmed reload above).
	if _, _, err := other.ReceiveStock(ctx, f.meta, commands.ReceiveStock{BranchID: f.branch, SKU: "TEA", Qty: 10, UnitCost: 100}); err != nil {
		t.Fatal(err)
	}
	if err := checkout(f.h, 5); err != nil {
		t.Fatalf("reserving 5 when 12 are available, on a snapshot that says 2: %v", err)
	}
	f.want("TEA", 20, 13)
}

// A process deciding on a stale trusted snapshot may decide an event
// another process already appended with the same derived id (a redelivered
// source event): the store answers the earlier append's result. The stale
// snapshot must not then pass for the ledger at that version.
func TestTrustedSnapshotAndAnAppendTheStoreTakesForARetry(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := otherProcess(f)
	f.receive("TEA", 10, 100)
	d, _, err := f.h.OpenTransaction(ctx, f.meta, commands.OpenTransaction{BranchID: f.branch})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.h.AddItem(ctx, f.meta, d.ID(), transaction.AddItem{SKU: "TEA", Name: "Tea", Qty: 2, UnitPrice: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.h.Checkout(ctx, f.meta, d.ID()); err != nil {
		t.Fatal(err)
	}
	// The other process remembers the ledger with the reservation.
	if _, _, err := other.Ledger(ctx, f.meta, f.branch, "TEA"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, _, err := f.h.AdjustStock(ctx, f.meta, commands.AdjustStock{BranchID: f.branch, SKU: "TEA", Delta: 5, Reason: "found"}); err != nil {
			t.Fatal(err)
		}
	}
	release := f.meta
	release.DeriveIDsFrom = uuid.MustParse("01900000-0000-7000-8000-0000000000aa")
	at := f.clock()
	if err := f.h.ReleaseReservations(ctx, release, f.branch, d.ID(), []string{"TEA"}, "test", 0, at); err != nil {
		t.Fatal(err)
	}
	// The same release, redelivered to the other process.
	if err := other.ReleaseReservations(ctx, release, f.branch, d.ID(), []string{"TEA"}, "test", 0, at); err != nil {
		t.Fatal(err)
	}
	l, res, err := other.Ledger(ctx, f.meta, f.branch, "TEA")
	if err != nil {
		t.Fatal(err)
	}
	if l.OnHand() != 20 || l.Reserved() != 0 || res.Version != 5 {
		t.Fatalf("the other process reads on hand %d, reserved %d at version %d; the store has 20, 0 at 5", l.OnHand(), l.Reserved(), res.Version)
	}
	if err := checkoutWith(t, other, f, 15); err != nil {
		t.Fatalf("reserving 15 of 20 in the other process: %v", err)
	}
}

// A checkout reserves stock as it decides, so it must never decide on a
// sale another process has moved on: this process remembers a draft of 1
// unit while the other has made it 3 and checked it out. The late checkout
// fails, and the 3 units stay reserved for the pending sale.
func TestCheckoutOnAnOvertakenDraftReservesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := otherProcess(f)
	f.receive("TEA", 10, 100)
	d := openDraft(t, f, map[string]int64{"TEA": 1}) // this process's snapshot: 1 unit
	if _, _, err := other.AddItem(ctx, f.meta, d.ID(), transaction.AddItem{SKU: "TEA", Name: "TEA", Qty: 2, UnitPrice: 10}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Checkout(ctx, f.meta, d.ID()); err != nil {
		t.Fatal(err)
	}
	f.want("TEA", 10, 3)
	if _, _, err := f.h.Checkout(ctx, f.meta, d.ID()); err == nil {
		t.Fatal("a second checkout of a sale pending payment succeeded")
	}
	f.want("TEA", 10, 3)
	if got := f.status(d.ID()); got != transaction.StatusPendingPayment {
		t.Errorf("status %s, want %s", got, transaction.StatusPendingPayment)
	}
}
