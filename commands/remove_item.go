package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// RemoveItem removes a line from a draft.
func (h *Handlers) RemoveItem(ctx context.Context, meta Meta, id uuid.UUID, cmd transaction.RemoveItem) (*transaction.Transaction, Result, error) {
	cmd.At = h.now(meta)
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.RemoveItem(cmd)
	})
}
