package projtest

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/domain/money"
	"pos/domain/stock"
	"pos/eventstore"
)

// stockCategory is the stream category of stock ledgers (as
// projections.StockCategory, which this package cannot import).
const stockCategory = "stock"

// Ledger is one stock ledger being moved: each method decides a command on
// domain/stock's own aggregate, appends the events to the store and applies
// them to the aggregate, as the command side would. Not safe for
// concurrent use.
type Ledger struct {
	t      testing.TB
	env    *Env
	agg    *stock.Ledger
	stream string
	// Events are every event of the ledger so far, as recorded.
	Events []eventstore.RecordedEvent
}

// OpenLedger returns the (empty) ledger of sku in merchant's branch.
func (env *Env) OpenLedger(t testing.TB, merchant, branch uuid.UUID, sku string) *Ledger {
	key := stock.NewKey(merchant, branch, sku)
	return &Ledger{t: t, env: env, agg: stock.New(key),
		stream: eventstore.StreamName(stockCategory, merchant.String(), key.LedgerID.String())}
}

// Aggregate is the ledger as its events so far make it.
func (l *Ledger) Aggregate() *stock.Ledger { return l.agg }

// Stream is the ledger's stream name.
func (l *Ledger) Stream() string { return l.stream }

// Do appends what decide decides and reports whether it decided anything; a
// refused command fails the test unless refusable (then it reports false).
func (l *Ledger) Do(decide func(*stock.Ledger) ([]stock.Event, error), refusable bool) bool {
	l.t.Helper()
	events, err := decide(l.agg)
	if err != nil {
		if refusable {
			return false
		}
		l.t.Fatalf("projtest: ledger %s: %v", l.agg.Key().SKU, err)
	}
	out := make([]interface{ EventType() string }, len(events))
	for i, e := range events {
		if err := l.agg.Apply(e); err != nil {
			l.t.Fatalf("projtest: apply: %v", err)
		}
		out[i] = e
	}
	l.Events = append(l.Events, l.env.Append(l.t, l.stream, l.agg.Key().MerchantID.String(), out...)...)
	return len(events) > 0
}

// Receive receives qty units at cost each and returns the receipt's id.
func (l *Ledger) Receive(qty int64, cost money.Amount, at time.Time) uuid.UUID {
	l.t.Helper()
	id := NewID(l.t)
	l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
		return x.Receive(stock.Receive{ReceiptID: id, Qty: qty, UnitCost: cost, By: "clerk", At: at})
	}, false)
	return id
}

// Adjust corrects on hand by delta (a count).
func (l *Ledger) Adjust(delta int64, at time.Time) {
	l.t.Helper()
	l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
		return x.Adjust(stock.Adjust{AdjustmentID: NewID(l.t), Delta: delta, Reason: "count", By: "manager", At: at})
	}, false)
}

// Reserve reserves qty units for sale tx (replacing its open reservation).
func (l *Ledger) Reserve(tx uuid.UUID, qty int64, at time.Time) {
	l.t.Helper()
	l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
		return x.Reserve(stock.Reserve{TransactionID: tx, Qty: qty, At: at})
	}, false)
}

// Release releases sale tx's reservation.
func (l *Ledger) Release(tx uuid.UUID, at time.Time) {
	l.t.Helper()
	l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
		return x.Release(stock.Release{TransactionID: tx, Reason: "voided", At: at})
	}, false)
}

// Sell takes qty units out for sale tx.
func (l *Ledger) Sell(tx uuid.UUID, qty int64, at time.Time) {
	l.t.Helper()
	l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
		return x.Sell(stock.Sell{TransactionID: tx, Qty: qty, At: at})
	}, false)
}

// GiveBack returns qty units of sale tx (a refund's return).
func (l *Ledger) GiveBack(tx uuid.UUID, qty int64, at time.Time) {
	l.t.Helper()
	l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
		return x.Return(stock.Return{TransactionID: tx, SourceID: NewID(l.t), Qty: qty, At: at})
	}, false)
}

// Transfer moves qty units from l to to (the same SKU in another branch)
// at l's average cost.
func (l *Ledger) Transfer(to *Ledger, qty int64, at time.Time) {
	l.t.Helper()
	id := NewID(l.t)
	var cost money.Amount
	l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
		cost = x.AvgCost()
		return x.TransferOut(stock.TransferOut{TransferID: id, ToBranchID: to.agg.Key().BranchID, Qty: qty, By: "clerk", At: at})
	}, false)
	to.Do(func(x *stock.Ledger) ([]stock.Event, error) {
		return x.TransferIn(stock.TransferIn{TransferID: id, FromBranchID: l.agg.Key().BranchID, Qty: qty, UnitCost: cost, At: at})
	}, false)
}
