package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/money"
	"pos/domain/stock"
)

// ReceiveStock is a delivery of units into a branch.
type ReceiveStock struct {
	BranchID uuid.UUID
	SKU      string
	// ReceiptID is client-supplied for offline use; uuid.Nil generates one.
	// A receipt id already applied changes nothing.
	ReceiptID uuid.UUID
	Qty       int64
	UnitCost  money.Amount
}

// ReceiveStock records a receipt on the branch's ledger of the SKU.
func (h *Handlers) ReceiveStock(ctx context.Context, meta Meta, cmd ReceiveStock) (*stock.Ledger, Result, error) {
	if !meta.mayActOn(cmd.BranchID) {
		return nil, Result{}, ErrForbidden
	}
	if cmd.ReceiptID == uuid.Nil {
		cmd.ReceiptID = h.newID(meta, "receipt")
	}
	receive := stock.Receive{ReceiptID: cmd.ReceiptID, Qty: cmd.Qty, UnitCost: cmd.UnitCost, By: meta.Actor, At: h.now(meta)}
	return h.onLedger(ctx, meta, cmd.BranchID, cmd.SKU, true, func(l *stock.Ledger) ([]stock.Event, error) {
		return l.Receive(receive)
	})
}
