package stock

import "github.com/google/uuid"

// SeenIn reports whether the ledger remembers a movement of id in scope
// (seenKey): uuid.Nil for receipts, adjustments and transfers out, the
// source branch for transfers in, the transaction for returns.
func (l *Ledger) SeenIn(scope, id uuid.UUID) bool {
	_, ok := l.seen[seenKey{scope, id}]
	return ok
}
