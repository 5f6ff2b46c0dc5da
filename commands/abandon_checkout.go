package commands

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// errNotDraft stops AbandonCheckout when the sale is no longer a draft.
var errNotDraft = errors.New("commands: the sale is no longer a draft")

// AbandonCheckout releases what failed or abandoned checkouts of a draft
// reserved on the ledgers of skus in branch. It first marks the draft
// (CheckoutAbandoned) at its current version, then releases only the
// reservations made for older versions of the draft:
//
//   - a checkout racing it, which reserved for an older version, fails to
//     freeze its totals (the draft moved) and reserves again for the new
//     version, which the release leaves alone;
//   - if instead that checkout froze the totals first, the sale is no
//     longer a draft, and nothing is marked or released.
//
// So units are never released from under a sale that was checked out. A
// sale that is not a draft is not an error: there is nothing to do.
func (h *Handlers) AbandonCheckout(ctx context.Context, meta Meta, id, branch uuid.UUID, skus []string, reason string) error {
	meta = ledgerMeta(meta)
	at := h.now(meta)
	_, res, err := h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		if t.Status() != transaction.StatusDraft {
			return nil, errNotDraft
		}
		return t.AbandonCheckout(transaction.AbandonCheckout{Reason: reason, At: at})
	})
	if errors.Is(err, errNotDraft) {
		return nil
	}
	if err != nil {
		return err
	}
	return h.ReleaseReservations(ctx, meta, branch, id, skus, reason, res.Version, at)
}
