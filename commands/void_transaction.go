package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// VoidTransaction voids a draft, pending or paid sale. The caller checks the
// role (MANAGER or ADMIN); approval policies come with the Approval aggregate.
func (h *Handlers) VoidTransaction(ctx context.Context, meta Meta, id uuid.UUID, cmd transaction.Void) (*transaction.Transaction, Result, error) {
	cmd.At = h.now(meta)
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.Void(cmd)
	})
}
