package commands

import (
	"context"
	"errors"
	"slices"

	"github.com/google/uuid"

	"pos/domain/transaction"
)

// ErrForbidden reports a command on a branch the caller may not act on.
var ErrForbidden = errors.New("commands: not allowed on this branch")

// transactionCategory is the stream category of Transaction aggregates.
const transactionCategory = "transaction"

var transactionKind = kind[*transaction.Transaction, transaction.Event]{
	category: transactionCategory,
	schema:   transaction.SchemaVersion,
	blank:    func() *transaction.Transaction { return &transaction.Transaction{} },
	apply:    (*transaction.Transaction).Apply,
	version:  (*transaction.Transaction).Version,
	decode:   transaction.Decode,
	typeOf:   transaction.TypeName,
	// A sale's commands come one after another from one till: each decides
	// on the aggregate its predecessor left in memory (see
	// Deps.TrustSnapshots) instead of reading the stream again.
	clone: (*transaction.Transaction).Clone,
}

// TransactionStream is the stream of one transaction of a merchant.
func TransactionStream(merchant, id uuid.UUID) string {
	return streamName(transactionCategory, merchant, id)
}

// onTransaction runs decide on an existing transaction the caller may act
// on: a missing one is transaction.ErrNotFound (another merchant's is simply
// missing: its stream has another name), one on a branch outside
// meta.BranchIDs is ErrForbidden.
func (h *Handlers) onTransaction(ctx context.Context, meta Meta, id uuid.UUID, decide func(*transaction.Transaction) ([]transaction.Event, error)) (*transaction.Transaction, Result, error) {
	return execute(ctx, h, transactionKind, meta, id.String(), func(t *transaction.Transaction) ([]transaction.Event, error) {
		if !t.Exists() {
			return nil, transaction.ErrNotFound
		}
		if !meta.mayActOn(t.BranchID()) {
			return nil, ErrForbidden
		}
		return decide(t)
	})
}

func (m Meta) mayActOn(branch uuid.UUID) bool {
	return len(m.BranchIDs) == 0 || slices.Contains(m.BranchIDs, branch)
}
