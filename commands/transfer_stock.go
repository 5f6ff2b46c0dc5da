package commands

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/stock"
)

// TransferStock moves units of a SKU from one branch to another.
type TransferStock struct {
	FromBranchID uuid.UUID
	ToBranchID   uuid.UUID
	SKU          string
	// TransferID is client-supplied for offline use; uuid.Nil generates
	// one. A transfer id already applied changes nothing (and completes the
	// target half if it is missing).
	TransferID uuid.UUID
	Qty        int64
}

// Transfer is both halves of a transfer as they stand after TransferStock.
type Transfer struct {
	ID   uuid.UUID
	From *stock.Ledger
	To   *stock.Ledger
	// Result is where the source half landed (the command's answer);
	// ToResult the target half.
	Result, ToResult Result
}

// TransferStock records the transfer out on the source ledger, then the
// transfer in on the target. The two are separate appends (no event store
// spans two streams atomically), so a crash in between leaves the units on
// their way: the transfer process manager (CompleteTransfer, driven by
// StockTransferredOut) finishes the target half, and so does a retry of
// this command. Units are never in limbo for longer than that delivery.
// The caller may act on both branches; a shortage at the source is a
// *ShortageError unless negative stock is allowed.
func (h *Handlers) TransferStock(ctx context.Context, meta Meta, cmd TransferStock) (Transfer, error) {
	if !meta.mayActOn(cmd.FromBranchID) || !meta.mayActOn(cmd.ToBranchID) {
		return Transfer{}, ErrForbidden
	}
	if cmd.ToBranchID == uuid.Nil {
		return Transfer{}, &domain.ValidationError{Field: "to_branch_id", Code: domain.CodeRequired, Reason: "must be a non-nil UUID"}
	}
	negative, err := h.allowNegativeStock(ctx, meta)
	if err != nil {
		return Transfer{}, err
	}
	if cmd.TransferID == uuid.Nil {
		cmd.TransferID = h.newID(meta, "transfer")
	}
	out := stock.TransferOut{TransferID: cmd.TransferID, ToBranchID: cmd.ToBranchID, Qty: cmd.Qty,
		AllowNegative: negative, By: meta.Actor, At: h.now(meta)}
	from, res, err := h.onLedger(ctx, meta, cmd.FromBranchID, cmd.SKU, true, func(l *stock.Ledger) ([]stock.Event, error) {
		return l.TransferOut(out)
	})
	if err != nil {
		return Transfer{}, asShortage(err)
	}
	sent, ok := from.TransferredOut(cmd.TransferID)
	if !ok || sent.ToBranchID != cmd.ToBranchID || sent.Qty != cmd.Qty {
		// The id was already used for something else on this ledger.
		return Transfer{}, fmt.Errorf("%w: transfer_id %s is taken", domain.ErrAlreadyExists, cmd.TransferID)
	}
	// If-Match names the source ledger's version, not the target's.
	to, toRes, err := h.CompleteTransfer(ctx, ledgerMeta(meta), sent)
	if err != nil {
		return Transfer{}, err
	}
	return Transfer{ID: cmd.TransferID, From: from, To: to, Result: res, ToResult: toRes}, nil
}

// CompleteTransfer records the target half of a transfer sent by out. It is
// idempotent (the target ledger remembers the transfer id), so the command
// and the process manager may both run it, any number of times.
func (h *Handlers) CompleteTransfer(ctx context.Context, meta Meta, out stock.StockTransferredOut) (*stock.Ledger, Result, error) {
	in := stock.TransferIn{TransferID: out.TransferID, FromBranchID: out.BranchID, Qty: out.Qty, UnitCost: out.UnitCost, At: out.At}
	return h.onLedger(ctx, meta, out.ToBranchID, out.SKU, true, func(l *stock.Ledger) ([]stock.Event, error) {
		return l.TransferIn(in)
	})
}
