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
		draft, _, err := load(ctx, h.store, nil, transactionKind, TransactionStream(meta.MerchantID, id), false)
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
		if err := h.reserve(ctx, ledgerMeta(meta), draft.BranchID(), id, units, negative, draft.Version(), cmd.At); err != nil {
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
			h.releaseAfterFailedCheckout(ctx, ledgerMeta(meta), id, draft.BranchID(), units, cmd)
			return nil, Result{}, err
		}
		return t, res, nil
	}
}

// errTooManyChanges: the draft kept changing under the checkout; the
// client retries later (409 concurrency_conflict).
var errTooManyChanges = fmt.Errorf("%w: the draft kept changing during checkout", eventstore.ErrConcurrency)

// ledgerMeta is meta for the ledger commands a command on another aggregate
// sends: the client's If-Match names that aggregate's version, never a
// ledger's.
func ledgerMeta(meta Meta) Meta {
	meta.IfMatch = nil
	return meta
}

// UnitsBySKU sums the lines' quantities per SKU.
func UnitsBySKU(lines []transaction.Line) map[string]int64 {
	units := make(map[string]int64, len(lines))
	for _, l := range lines {
		units[l.SKU] += l.Qty
	}
	return units
}

// reserve reserves units for a transaction in the branch's ledgers, all or
// nothing, for the checkout of the draft at version attempt; see Checkout.
func (h *Handlers) reserve(ctx context.Context, meta Meta, branch, tx uuid.UUID, units map[string]int64, negative bool, attempt uint64, at time.Time) error {
	skus := slices.Sorted(maps.Keys(units))
	if !negative {
		var short []*stock.ShortageError
		for _, sku := range skus {
			var avail int64
			if err := h.readLedger(ctx, meta, branch, sku, func(l *stock.Ledger, _ Result) {
				r, _ := l.Reservation(tx)
				avail = l.Available() + r.Reserved
			}); err != nil {
				return err
			}
			if avail < units[sku] {
				short = append(short, &stock.ShortageError{BranchID: branch, SKU: sku, Available: avail, Requested: units[sku]})
			}
		}
		if len(short) > 0 {
			return &ShortageError{Shortages: short}
		}
	}
	for i, sku := range skus {
		_, _, err := h.onLedger(ctx, meta, branch, sku, false, func(l *stock.Ledger) ([]stock.Event, error) {
			return l.Reserve(stock.Reserve{TransactionID: tx, Qty: units[sku], Attempt: attempt, AllowNegative: negative, At: at})
		})
		if err != nil {
			// Only this attempt's reservations: a newer checkout of the
			// draft keeps its own. A failure here is left to the timeout.
			_ = h.ReleaseReservations(ctx, meta, branch, tx, skus[:i], "checkout could not reserve every line", attempt+1, at)
			return asShortage(err)
		}
	}
	return nil
}

// releaseAfterFailedCheckout gives back what a failed checkout reserved,
// through AbandonCheckout, unless the sale got checked out after all (a
// concurrent checkout of the same draft won: the reservations are its own
// now). A failure is left to the stock process manager's timeout, which
// releases whatever a draft still holds; the caller is answering another
// error already.
func (h *Handlers) releaseAfterFailedCheckout(ctx context.Context, meta Meta, id, branch uuid.UUID, units map[string]int64, cmd transaction.Checkout) {
	if ctx.Err() != nil {
		return // the timeout process manager releases them
	}
	_ = h.AbandonCheckout(ctx, meta, id, branch, slices.Sorted(maps.Keys(units)), "checkout failed")
}
