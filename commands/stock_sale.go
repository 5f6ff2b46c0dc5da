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
)

// The commands the stock process manager sends when a sale moves on (package
// processes). Each is idempotent: a ledger remembers what it did for each
// transaction, refund and transfer, so the same command twice changes
// nothing, and with Meta.DeriveIDsFrom set to the source event's id even a
// race between two deliveries appends the events once. They take their time
// from the source event, never the clock, so a redelivery decides exactly the
// same events.

// Transaction loads a transaction for reading, as stored: from a snapshot
// only once the store confirms it, reading just the events after it.
func (h *Handlers) Transaction(ctx context.Context, meta Meta, id uuid.UUID) (*transaction.Transaction, Result, error) {
	t, pos, _, err := load(ctx, h.store, h.deps.Snapshots, transactionKind, TransactionStream(meta.MerchantID, id), false, false)
	if err != nil {
		return nil, Result{}, err
	}
	return t, Result{Version: t.Version(), Position: pos}, nil
}

// SellPaid commits a paid sale's units as sold, consuming its reservations.
func (h *Handlers) SellPaid(ctx context.Context, meta Meta, t *transaction.Transaction, at time.Time) error {
	return h.eachSKU(ctx, meta, t.BranchID(), UnitsBySKU(t.Lines()), func(l *stock.Ledger, qty int64) ([]stock.Event, error) {
		return l.Sell(stock.Sell{TransactionID: t.ID(), Qty: qty, At: at})
	})
}

// ReleaseReservations gives back what a transaction holds on the ledgers of
// skus in branch (a void before payment, a timeout, an abandoned draft);
// with before not 0, only reservations made for draft versions below it
// (see stock.Release).
func (h *Handlers) ReleaseReservations(ctx context.Context, meta Meta, branch, tx uuid.UUID, skus []string, reason string, before uint64, at time.Time) error {
	units := make(map[string]int64, len(skus))
	for _, sku := range skus {
		units[sku] = 0
	}
	return h.eachSKU(ctx, meta, branch, units, func(l *stock.Ledger, _ int64) ([]stock.Event, error) {
		return l.Release(stock.Release{TransactionID: tx, Reason: reason, Before: before, At: at})
	})
}

// ReturnUnits puts units of a sale back on hand: units per SKU, 0 meaning
// all that is sold and not yet returned (a void after payment). source is
// the refund id, or the transaction id for a void; each source returns once.
func (h *Handlers) ReturnUnits(ctx context.Context, meta Meta, branch, tx, source uuid.UUID, units map[string]int64, at time.Time) error {
	return h.eachSKU(ctx, meta, branch, units, func(l *stock.Ledger, qty int64) ([]stock.Event, error) {
		return l.Return(stock.Return{TransactionID: tx, SourceID: source, Qty: qty, At: at})
	})
}

// RefundedUnits returns the units a refund by lines gives back, per SKU.
func RefundedUnits(t *transaction.Transaction, refund transaction.RefundIssued) map[string]int64 {
	skuOf := make(map[uuid.UUID]string, len(t.Lines()))
	for _, l := range t.Lines() {
		skuOf[l.LineID] = l.SKU
	}
	units := make(map[string]int64, len(refund.Lines))
	for _, rl := range refund.Lines {
		if sku, ok := skuOf[rl.LineID]; ok {
			units[sku] += rl.Qty
		}
	}
	return units
}

// eachSKU runs decide on the ledger of every SKU of units in branch, in SKU
// order, and joins the failures: one ledger's failure does not stop the
// others (each is idempotent; the caller retries the whole).
func (h *Handlers) eachSKU(ctx context.Context, meta Meta, branch uuid.UUID, units map[string]int64, decide func(*stock.Ledger, int64) ([]stock.Event, error)) error {
	var errs []error
	for _, sku := range slices.Sorted(maps.Keys(units)) {
		if _, _, err := h.onLedger(ctx, meta, branch, sku, false, func(l *stock.Ledger) ([]stock.Event, error) {
			return decide(l, units[sku])
		}); err != nil {
			errs = append(errs, fmt.Errorf("ledger %s/%s: %w", branch, sku, err))
		}
	}
	return errors.Join(errs...)
}
