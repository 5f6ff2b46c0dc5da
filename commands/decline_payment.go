package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// DeclinePayment records a gateway's refusal of a pending payment.
func (h *Handlers) DeclinePayment(ctx context.Context, meta Meta, id uuid.UUID, cmd transaction.DeclinePayment) (*transaction.Transaction, Result, error) {
	cmd.At = h.now(meta)
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.DeclinePayment(cmd)
	})
}
