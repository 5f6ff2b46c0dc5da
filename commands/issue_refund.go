package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// IssueRefund refunds an amount or lines of a paid or completed sale; a zero
// RefundID is generated. The caller checks the role (MANAGER or ADMIN).
func (h *Handlers) IssueRefund(ctx context.Context, meta Meta, id uuid.UUID, cmd transaction.Refund) (*transaction.Transaction, Result, error) {
	if cmd.RefundID == uuid.Nil {
		cmd.RefundID = h.newID(meta, "refund")
	}
	cmd.At = h.now(meta)
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.Refund(cmd)
	})
}
