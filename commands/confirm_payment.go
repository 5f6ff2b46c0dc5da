package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// ConfirmPayment records a gateway's confirmation of a pending payment.
func (h *Handlers) ConfirmPayment(ctx context.Context, meta Meta, id uuid.UUID, cmd transaction.ConfirmPayment) (*transaction.Transaction, Result, error) {
	cmd.At = h.now(meta)
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.ConfirmPayment(cmd)
	})
}
