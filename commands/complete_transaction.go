package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// CompleteTransaction closes a paid sale.
func (h *Handlers) CompleteTransaction(ctx context.Context, meta Meta, id uuid.UUID) (*transaction.Transaction, Result, error) {
	cmd := transaction.Complete{At: h.now(meta)}
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.Complete(cmd)
	})
}
