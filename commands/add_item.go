package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// AddItem adds a line to a draft; a zero LineID is generated.
func (h *Handlers) AddItem(ctx context.Context, meta Meta, id uuid.UUID, cmd transaction.AddItem) (*transaction.Transaction, Result, error) {
	if cmd.LineID == uuid.Nil {
		cmd.LineID = h.newID(meta, "line")
	}
	cmd.At = h.now(meta)
	return h.onTransaction(ctx, meta, id, func(t *transaction.Transaction) ([]transaction.Event, error) {
		return t.AddItem(cmd)
	})
}
