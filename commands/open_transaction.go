package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/money"
	"pos/domain/transaction"
)

// OpenTransaction opens a draft sale at a branch.
type OpenTransaction struct {
	// TransactionID is client-supplied for offline use; uuid.Nil means the
	// handler generates one.
	TransactionID uuid.UUID
	BranchID      uuid.UUID
	// Currency overrides the merchant's currency when set.
	Currency money.Currency
}

// OpenTransaction opens a draft with a fresh human-readable code, in the
// merchant's currency and tax mode (those in force when a till offline
// opened it; see settingsFor). Opening an id that exists is
// transaction.ErrAlreadyExists.
func (h *Handlers) OpenTransaction(ctx context.Context, meta Meta, cmd OpenTransaction) (*transaction.Transaction, Result, error) {
	if !meta.mayActOn(cmd.BranchID) {
		return nil, Result{}, ErrForbidden
	}
	settings, err := h.settingsFor(ctx, meta)
	if err != nil {
		return nil, Result{}, err
	}
	if cmd.TransactionID == uuid.Nil {
		cmd.TransactionID = h.newID(meta, "transaction")
	}
	currency := settings.Currency
	if cmd.Currency != "" {
		currency = cmd.Currency
	}
	code, err := h.deps.Codes.Next(ctx, meta.MerchantID)
	if err != nil {
		return nil, Result{}, err
	}
	open := transaction.Open{
		TransactionID:    cmd.TransactionID,
		MerchantID:       meta.MerchantID,
		BranchID:         cmd.BranchID,
		Code:             code,
		Currency:         currency,
		PricesIncludeTax: settings.PricesIncludeTax,
		By:               meta.Actor,
		At:               h.now(meta),
	}
	return execute(ctx, h, transactionKind, meta, cmd.TransactionID.String(), func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.Open(open)
	})
}
