package commands

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"pos/domain/stock"
	"pos/domain/transaction"
	"pos/eventstore"
)

// checkoutAttempts bounds how often Checkout starts over because the draft
// changed between reserving its units and freezing its totals.
const checkoutAttempts = 5

// errDraftChanged is Checkout's signal to start over: the reservations no
// longer match the lines.
var errDraftChanged = errors.New("commands: draft changed during checkout")

// Checkout reserves every line's units in the branch's stock ledgers, then
// freezes the draft's totals; the sale is then pending payment.
//
// Reservation is all or nothing. Every ledger is read first, and any
// shortage answers a *ShortageError naming every short SKU before anything
// is written. Then each SKU is reserved in turn (sorted, so two checkouts
// take ledgers in the same order); one found short at that point (another
// sale took the units in between) makes Checkout release the reservations
// it made and answer the shortage. With the PostgreSQL store and an
// idempotency key all of it is one database transaction as well.
//
// A crash between the reservations and CheckedOut leaves them held by a
// draft: the stock process manager releases them once the reservation
// timeout passes with the sale still a draft. A reservation is keyed by
// transaction, so a retried checkout reserves the same units again, not
// twice, and one whose lines changed meanwhile replaces them.
func (h *Handlers) Checkout(ctx context.Context, meta Meta, id uuid.UUID) (*transaction.Transaction, Result, error) {
	cmd := transaction.Checkout{At: h.deps.Now()}
	negative, err := h.allowNegativeStock(ctx, meta)
	if err != nil {
		return nil, Result{}, err
	}
	for attempt := 1; ; attempt++ {
		draft, _, err := load(ctx, h.store, nil, transactionKind, TransactionStream(meta.MerchantID, id))
		if err != nil {
			return nil, Result{}, err
		}
		switch {
		case !draft.Exists():
			return nil, Result{}, transaction.ErrNotFound
		case !meta.mayActOn(draft.BranchID()):
			return nil, Result{}, ErrForbidden
		case meta.IfMatch != nil && *meta.IfMatch != draft.Version():
			return nil, Result{}, ErrVersionMismatch
		}
		// Refuse what the checkout itself would refuse before reserving.
		if _, err := draft.Checkout(cmd); err != nil {
			return nil, Result{}, err
		}
		units := UnitsBySKU(draft.Lines())
		if err := h.reserve(ctx, meta, draft.BranchID(), id, units, negative, cmd.At); err != nil {
			return nil, Result{}, err
		}
		t, res, err := h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
			if t.Version() != draft.Version() {
				return nil, errDraftChanged
			}
			return t.Checkout(cmd)
		})
		if errors.Is(err, errDraftChanged) && attempt < checkoutAttempts && meta.IfMatch == nil {
			continue
		}
		if errors.Is(err, errDraftChanged) {
			err = ErrVersionMismatch
			if meta.IfMatch == nil {
				err = errTooManyChanges
			}
		}
		if err != nil {
			h.releaseAfterFailedCheckout(ctx, meta, id, draft.BranchID(), units, cmd)
			return nil, Result{}, err
		}
		return t, res, nil
	}
}

// errTooManyChanges: the draft kept changing under the checkout; the
// client retries later (409 concurrency_conflict).
var errTooManyChanges = fmt.Errorf("%w: the draft kept changing during checkout", eventstore.ErrConcurrency)

// UnitsBySKU sums the lines' quantities per SKU.
func UnitsBySKU(lines []transaction.Line) map[string]int64 {
	units := make(map[string]int64, len(lines))
	for _, l := range lines {
		units[l.SKU] += l.Qty
	}
	return units
}

// reserve reserves units for a transaction in the branch's ledgers, all or
// nothing; see Checkout.
func (h *Handlers) reserve(ctx context.Context, meta Meta, branch, tx uuid.UUID, units map[string]int64, negative bool, at time.Time) error {
	skus := slices.Sorted(maps.Keys(units))
	if !negative {
		var short []*stock.ShortageError
		for _, sku := range skus {
			l, _, err := h.Ledger(ctx, meta, branch, sku)
			if err != nil {
				return err
			}
			r, _ := l.Reservation(tx)
			if avail := l.Available() + r.Reserved; avail < units[sku] {
				short = append(short, &stock.ShortageError{BranchID: branch, SKU: sku, Available: avail, Requested: units[sku]})
			}
		}
		if len(short) > 0 {
			return &ShortageError{Shortages: short}
		}
	}
	for i, sku := range skus {
		_, _, err := h.onLedger(ctx, meta, branch, sku, func(l *stock.Ledger) ([]stock.Event, error) {
			return l.Reserve(stock.Reserve{TransactionID: tx, Qty: units[sku], AllowNegative: negative, At: at})
		})
		if err != nil {
			h.release(ctx, meta, branch, tx, skus[:i], "checkout could not reserve every line", at)
			return asShortage(err)
		}
	}
	return nil
}

// releaseAfterFailedCheckout gives back what a failed checkout reserved,
// unless the sale got checked out after all (a concurrent checkout of the
// same draft won: the reservations are its own now).
func (h *Handlers) releaseAfterFailedCheckout(ctx context.Context, meta Meta, id, branch uuid.UUID, units map[string]int64, cmd transaction.Checkout) {
	if ctx.Err() != nil {
		return // the timeout process manager releases them
	}
	t, _, err := load(ctx, h.store, nil, transactionKind, TransactionStream(meta.MerchantID, id))
	if err != nil || t.Status() != transaction.StatusDraft {
		return
	}
	h.release(ctx, meta, branch, id, slices.Sorted(maps.Keys(units)), "checkout failed", cmd.At)
}

// release gives back a transaction's reservations on the ledgers of skus. A
// failure is left to the timeout process manager, which releases whatever
// a draft still holds; release reports nothing because the caller is
// already answering another error.
func (h *Handlers) release(ctx context.Context, meta Meta, branch, tx uuid.UUID, skus []string, reason string, at time.Time) {
	for _, sku := range skus {
		_, _, _ = h.onLedger(ctx, meta, branch, sku, func(l *stock.Ledger) ([]stock.Event, error) {
			return l.Release(stock.Release{TransactionID: tx, Reason: reason, At: at})
		})
	}
}
