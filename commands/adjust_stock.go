package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/stock"
)

// AdjustStock is a signed correction of a branch's units on hand.
type AdjustStock struct {
	BranchID uuid.UUID
	SKU      string
	// AdjustmentID is client-supplied for offline use; uuid.Nil generates
	// one. An adjustment id already applied changes nothing.
	AdjustmentID uuid.UUID
	Delta        int64
	Reason       string
}

// AdjustStock records an adjustment (the caller checks the role: MANAGER or
// ADMIN). A removal beyond what is available is a *ShortageError unless the
// merchant allows negative stock.
func (h *Handlers) AdjustStock(ctx context.Context, meta Meta, cmd AdjustStock) (*stock.Ledger, Result, error) {
	if !meta.mayActOn(cmd.BranchID) {
		return nil, Result{}, ErrForbidden
	}
	negative, err := h.allowNegativeStock(ctx, meta)
	if err != nil {
		return nil, Result{}, err
	}
	if cmd.AdjustmentID == uuid.Nil {
		cmd.AdjustmentID = h.newID(meta, "adjustment")
	}
	adjust := stock.Adjust{AdjustmentID: cmd.AdjustmentID, Delta: cmd.Delta, Reason: cmd.Reason, By: meta.Actor,
		AllowNegative: negative, At: h.now(meta)}
	l, res, err := h.onLedger(ctx, meta, cmd.BranchID, cmd.SKU, true, func(l *stock.Ledger) ([]stock.Event, error) {
		return l.Adjust(adjust)
	})
	return l, res, asShortage(err)
}
