package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// ApplyDiscount applies a transaction-level discount to a draft.
func (h *Handlers) ApplyDiscount(ctx context.Context, meta Meta, id uuid.UUID, cmd transaction.ApplyDiscount) (*transaction.Transaction, Result, error) {
	if cmd.DiscountID == uuid.Nil {
		cmd.DiscountID = h.newID(meta, "discount")
	}
	cmd.At = h.now(meta)
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.ApplyDiscount(cmd)
	})
}
