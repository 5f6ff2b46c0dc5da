package transaction_test

import (
	"reflect"
	"testing"

	tx "pos/domain/transaction"
)

// A clone and its original go their own ways: events applied to one leave
// the other as it was, whether they append to its slices and ids or change
// lines and payments in place (commands decide on clones of the aggregate
// the cache keeps).
func TestCloneIsIndependent(t *testing.T) {
	evAddB := tx.ItemAdded{LineID: lineB, SKU: "SKU-B", Name: "Tea", Qty: 1, UnitPrice: 3000, At: at(1)}
	evConfirm := tx.PaymentConfirmed{PaymentID: payCard, GatewayRef: "gw-1", At: at(4)}
	evRefundLine := tx.RefundIssued{RefundID: refund1, Amount: 5000, Reason: "returned", Status: tx.StatusPartiallyRefunded, At: at(5),
		Lines: []tx.RefundedLine{{LineID: lineA, Qty: 1, Amount: 5000}}}
	tests := []struct {
		name         string
		before, then []tx.Event
	}{
		{"a line added", hist(evOpened, evAddA), hist(evAddB)},
		{"lines frozen at checkout", hist(evOpened, evAddA), hist(evCheckout)},
		{"a pending payment confirmed", hist(evOpened, evAddA, evCheckout, evCardPending), hist(evConfirm)},
		{"a line refunded", hist(evOpened, evAddA, evCheckout, evCashAll, evPaid, evCompleted), hist(evRefundLine)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			load := func(h []tx.Event) *tx.Transaction {
				t.Helper()
				agg, err := tx.Load(h)
				if err != nil {
					t.Fatal(err)
				}
				return agg
			}
			before, after := load(tt.before), load(hist(tt.before, tt.then))
			for _, changeClone := range []bool{true, false} {
				orig := load(tt.before)
				clone := orig.Clone()
				changed, kept := clone, orig
				if !changeClone {
					changed, kept = orig, clone
				}
				for _, e := range tt.then {
					if err := changed.Apply(e); err != nil {
						t.Fatal(err)
					}
				}
				if !reflect.DeepEqual(changed, after) {
					t.Errorf("changed (clone: %v): %+v, want %+v", changeClone, changed, after)
				}
				if !reflect.DeepEqual(kept, before) {
					t.Errorf("kept (clone: %v) changed too: %+v, want %+v", !changeClone, kept, before)
				}
			}
		})
	}
}
