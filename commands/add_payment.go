package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// AddPayment tenders a payment; a zero PaymentID is generated.
func (h *Handlers) AddPayment(ctx context.Context, meta Meta, id uuid.UUID, cmd transaction.AddPayment) (*transaction.Transaction, Result, error) {
	if cmd.PaymentID == uuid.Nil {
		cmd.PaymentID = h.newID(meta, "payment")
	}
	cmd.At = h.now(meta)
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.AddPayment(cmd)
	})
}
