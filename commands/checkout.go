package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// Checkout freezes a draft's totals; it is then pending payment.
func (h *Handlers) Checkout(ctx context.Context, meta Meta, id uuid.UUID) (*transaction.Transaction, Result, error) {
	cmd := transaction.Checkout{At: h.deps.Now()}
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.Checkout(cmd)
	})
}
