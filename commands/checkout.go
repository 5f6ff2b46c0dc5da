package commands

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"pos/domain/stock"
	"pos/domain/transaction"
)

// Checkout reserves every line's units in the branch's stock ledgers, then
// freezes the draft's totals; the sale is then pending payment.
//
// Reservation is all or nothing. Every ledger is read first, and any
// shortage answers a *ShortageError naming every short SKU before anything
// is written. Then each SKU is reserved in turn (sorted, so two checkouts
// take ledgers in the same order); one found short at that point (another
// sale took the units in between) makes Checkout release the reservations
// it made and answer the shortage.
//
// The reservations are made while deciding, for the draft version loaded,
// so a draft that changes before its totals are frozen is decided again
// like any lost race: the next attempt reserves for the new version and
// replaces the quantities (reservations are keyed by transaction). Ledgers
// are written outside any request transaction (see Deps.Ledgers). If the
// checkout fails after reserving, AbandonCheckout gives the units back; a
// crash in between leaves them held by a draft until the stock process
// manager's reservation timeout releases them the same way.
func (h *Handlers) Checkout(ctx context.Context, meta Meta, id uuid.UUID) (*transaction.Transaction, Result, error) {
	cmd := transaction.Checkout{At: h.now(meta)}
	negative, err := h.allowNegativeStock(ctx, meta)
	if err != nil {
		return nil, Result{}, err
	}
	var branch uuid.UUID
	reserved := map[string]int64{} // every SKU any attempt reserved
	// Reserving is an effect of deciding: decide on the sale as stored.
	t, res, err := h.confirming().onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		// Refuse what the checkout itself would refuse before reserving:
		// a stale If-Match too, which execute checks only after deciding.
		if meta.IfMatch != nil && *meta.IfMatch != t.Version() {
			return nil, ErrVersionMismatch
		}
		events, err := t.Checkout(cmd)
		if err != nil {
			return nil, err
		}
		units := UnitsBySKU(t.Lines())
		if err := h.reserve(ctx, ledgerMeta(meta), t.BranchID(), id, units, negative, t.Version(), cmd.At); err != nil {
			return nil, err
		}
		branch = t.BranchID()
		maps.Copy(reserved, units)
		return events, nil
	})
	if err != nil && len(reserved) > 0 && ctx.Err() == nil {
		// A failure here is left to the reservation timeout; the client
		// gets the error that stopped the checkout.
		_ = h.AbandonCheckout(ctx, meta, id, branch, slices.Sorted(maps.Keys(reserved)), "checkout failed")
	}
	return t, res, err
}

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
			// Read from the store, never trusted from a snapshot: a
			// shortage must be found here, before anything is written,
			// and name every short SKU.
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
