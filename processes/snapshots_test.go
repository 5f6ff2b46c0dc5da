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

// Two processes (each its own trusted snapshots) write one ledger: each
// decides on a snapshot the other has overtaken. A stale snapshot must
// neither let a checkout reserve units that are gone nor refuse one the
// store could serve (commands.Deps.TrustSnapshots).
func TestTrustedSnapshotsOfTwoProcesses(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := commands.New(f.env.Store, &commands.Deps{
		Now:            f.clock,
		NewID:          func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes:          commands.NewCodes(f.env.Pool),
		Snapshots:      commands.NewSnapshots(0),
		Locks:          &commands.StreamLocks{},
		TrustSnapshots: true,
	})
	checkout := func(h *commands.Handlers, qty int64) error {
		t.Helper()
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
