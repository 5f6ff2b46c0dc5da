package transaction_test

import (
	"testing"

	"github.com/google/uuid"

	"pos/domain/money"
	tx "pos/domain/transaction"
)

// paidThreeUnits is a paid sale of one line, 3 units for a total of 10000:
// the units do not divide the total evenly.
func paidThreeUnits(t *testing.T) []tx.Event {
	t.Helper()
	return do(t, hist(evOpened), item(lineA, 3, 3000, 0), item(lineB, 1, 1000, 0), checkout(), pay(payCash, tx.MethodCash, 10000))
}

func TestRefund(t *testing.T) {
	three := paidThreeUnits(t) // line A: 3 units, total 9000; line B: 1 unit, 1000
	run(t, []scenario{
		{name: "part of the amount", given: histPaid, when: refund(tx.Refund{RefundID: refund1, Reason: "damaged", Amount: 3000, At: at(5)}), then: []tx.Event{evRefund3000}},
		{
			name:  "all of the amount",
			given: histCompleted,
			when:  refundAmount(refund1, 10000),
			then:  []tx.Event{tx.RefundIssued{RefundID: refund1, Amount: 10000, Reason: "returned", Status: tx.StatusRefunded, At: at(5)}},
		},
		{
			name:  "the rest after a partial refund",
			given: histPartiallyRefunded,
			when:  refundAmount(refund2, 7000),
			then:  []tx.Event{tx.RefundIssued{RefundID: refund2, Amount: 7000, Reason: "returned", Status: tx.StatusRefunded, At: at(5)}},
		},
		{name: "above paid", given: histPaid, when: refundAmount(refund1, 10001), wantErr: tx.ErrRefundExceedsPaid},
		{name: "above paid minus refunded", given: histPartiallyRefunded, when: refundAmount(refund2, 7001), wantErr: tx.ErrRefundExceedsPaid},
		{name: "after a full refund", given: histRefunded, when: refundAmount(refund2, 1), wantErr: tx.ErrInvalidState},
		{
			name:  "by line, pro rata of the frozen total",
			given: three,
			when:  refundLines(refund1, tx.RefundLine{LineID: lineA, Qty: 1}),
			then: []tx.Event{tx.RefundIssued{RefundID: refund1, Amount: 3000, Reason: "returned", Status: tx.StatusPartiallyRefunded, At: at(5),
				Lines: []tx.RefundedLine{{LineID: lineA, Qty: 1, Amount: 3000}}}},
		},
		{
			name:  "every line in full",
			given: three,
			when:  refundLines(refund1, tx.RefundLine{LineID: lineA, Qty: 3}, tx.RefundLine{LineID: lineB, Qty: 1}),
			then: []tx.Event{tx.RefundIssued{RefundID: refund1, Amount: 10000, Reason: "returned", Status: tx.StatusRefunded, At: at(5),
				Lines: []tx.RefundedLine{{LineID: lineA, Qty: 3, Amount: 9000}, {LineID: lineB, Qty: 1, Amount: 1000}}}},
		},
		{name: "more units than sold", given: three, when: refundLines(refund1, tx.RefundLine{LineID: lineA, Qty: 4}), wantErr: tx.ErrRefundExceedsPaid},
		{
			name:    "more units than left",
			given:   hist(three, tx.RefundIssued{RefundID: refund1, Amount: 6000, Reason: "x", Status: tx.StatusPartiallyRefunded, At: at(5), Lines: []tx.RefundedLine{{LineID: lineA, Qty: 2, Amount: 6000}}}),
			when:    refundLines(refund2, tx.RefundLine{LineID: lineA, Qty: 2}),
			wantErr: tx.ErrRefundExceedsPaid,
		},
		{
			name:    "by line after an amount refund took the money",
			given:   hist(three, tx.RefundIssued{RefundID: refund1, Amount: 9500, Reason: "x", Status: tx.StatusPartiallyRefunded, At: at(5)}),
			when:    refundLines(refund2, tx.RefundLine{LineID: lineB, Qty: 1}),
			wantErr: tx.ErrRefundExceedsPaid,
		},
		{name: "unknown line", given: three, when: refundLines(refund1, tx.RefundLine{LineID: lineC, Qty: 1}), wantErr: tx.ErrNotFound},
		{name: "a line twice", given: three, when: refundLines(refund1, tx.RefundLine{LineID: lineA, Qty: 1}, tx.RefundLine{LineID: lineA, Qty: 1}), wantErr: tx.ErrInvalid, wantField: "lines[1].line_id"},
		{name: "zero units", given: three, when: refundLines(refund1, tx.RefundLine{LineID: lineA, Qty: 0}), wantErr: tx.ErrInvalid, wantField: "lines[0].qty"},
		{name: "nil line id", given: three, when: refundLines(refund1, tx.RefundLine{Qty: 1}), wantErr: tx.ErrInvalid, wantField: "lines[0].line_id"},
		{name: "both amount and lines", given: three, when: refund(tx.Refund{RefundID: refund1, Reason: "x", Amount: 5, Lines: []tx.RefundLine{{LineID: lineA, Qty: 1}}, At: at(5)}), wantErr: tx.ErrInvalid, wantField: "amount"},
		{name: "neither amount nor lines", given: three, when: refundAmount(refund1, 0), wantErr: tx.ErrInvalid, wantField: "amount"},
		{name: "negative amount", given: three, when: refundAmount(refund1, -1), wantErr: tx.ErrInvalid, wantField: "amount"},
		{name: "amount above the ceiling", given: three, when: refundAmount(refund1, int64(money.MaxAmount)+1), wantErr: money.ErrOutOfRange, wantField: "amount"},
		{name: "no reason", given: three, when: refund(tx.Refund{RefundID: refund1, Amount: 5, At: at(5)}), wantErr: tx.ErrInvalid, wantField: "reason"},
		{name: "nil refund id", given: three, when: refundAmount(uuid.Nil, 5), wantErr: tx.ErrInvalid, wantField: "refund_id"},
		{name: "refund id taken", given: histPartiallyRefunded, when: refundAmount(refund1, 5), wantErr: tx.ErrAlreadyExists},
		{name: "another currency", given: histPaid, when: refund(tx.Refund{RefundID: refund1, Reason: "x", Amount: 5, Currency: "USD", At: at(5)}), wantErr: tx.ErrCurrencyMismatch},
		{name: "before payment", given: histPending, when: refundAmount(refund1, 5), wantErr: tx.ErrInvalidState},
		{name: "a voided sale", given: histVoided, when: refundAmount(refund1, 5), wantErr: tx.ErrInvalidState},
		{name: "not opened", when: refundAmount(refund1, 5), wantErr: tx.ErrNotFound},
	})
}

// TestRefundByLineSumsToTheLineTotal checks R7: unit by unit, each refund is
// within rounding of its share, and the last unit refunds exactly the
// remainder, so the line's refunds sum to its frozen total.
func TestRefundByLineSumsToTheLineTotal(t *testing.T) {
	tests := []struct {
		name  string
		qty   int64
		total int64   // the line's frozen total
		steps []int64 // units per refund
		want  []int64 // amount per refund
	}{
		// 10000 over 3 units: 3333.3 each. Cumulative: round(3333.3) = 3333,
		// round(6666.7) = 6667, 10000.
		{name: "thirds", qty: 3, total: 10000, steps: []int64{1, 1, 1}, want: []int64{3333, 3334, 3333}},
		{name: "two then one", qty: 3, total: 10000, steps: []int64{2, 1}, want: []int64{6667, 3333}},
		// 5 over 8 units: 0.625 each. Rounding each refund alone would give
		// 1 × 8 = 8 > 5. Cumulative shares 0.625, 1.25, 1.875, 2.5, 3.125,
		// 3.75, 4.375, 5 round to 1, 1, 2, 2, 3, 4, 4, 5, so the refunds are
		// 1, 0, 1, 0, 1, 1, 0, 1 (Σ 5).
		{name: "fewer minor units than units", qty: 8, total: 5, steps: []int64{1, 1, 1, 1, 1, 1, 1, 1}, want: []int64{1, 0, 1, 0, 1, 1, 0, 1}},
		// 1 over 2 units: 0.5 ties to 0 (even), the last unit takes 1.
		{name: "half-even tie", qty: 2, total: 1, steps: []int64{1, 1}, want: []int64{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One line of qty units with a discount bringing its total to
			// tt.total: price 10000 per unit, discounted by the rest.
			gross := tt.qty * 10000
			h := do(t, hist(evOpened), item(lineA, tt.qty, 10000, 0), amountOff(disc1, gross-tt.total), checkout())
			if tt.total > 0 {
				h = do(t, h, pay(payCash, tx.MethodCash, tt.total))
			}
			var sum int64
			for i, k := range tt.steps {
				id := nthID(0xe0, i)
				agg := load(t, h)
				events, err := agg.Refund(tx.Refund{RefundID: id, Reason: "returned", Lines: []tx.RefundLine{{LineID: lineA, Qty: k}}, At: at(5)})
				if err != nil {
					t.Fatalf("refund %d: %v", i, err)
				}
				r := events[0].(tx.RefundIssued)
				if int64(r.Amount) != tt.want[i] {
					t.Errorf("refund %d of %d units = %d, want %d", i, k, r.Amount, tt.want[i])
				}
				sum += int64(r.Amount)
				h = append(h, events...)
			}
			agg := load(t, h)
			if sum != tt.total || int64(agg.Refunded()) != tt.total {
				t.Errorf("refunds sum to %d (aggregate %d), want the line total %d", sum, agg.Refunded(), tt.total)
			}
			if agg.Status() != tx.StatusRefunded {
				t.Errorf("status = %s, want refunded", agg.Status())
			}
			if l := agg.Lines()[0]; l.RefundedQty != tt.qty || int64(l.RefundedAmount) != tt.total {
				t.Errorf("line refunded %d units for %d", l.RefundedQty, l.RefundedAmount)
			}
		})
	}
}

// TestRefundOfAFreeSale checks the zero-total sale: no money can be
// refunded, goods can be returned (refunds of amount 0 by line), and it is
// refunded once every unit is back.
func TestRefundOfAFreeSale(t *testing.T) {
	h := do(t, hist(evOpened), item(lineA, 2, 0, 0), item(lineB, 1, 0, 0), checkout(), complete())
	run(t, []scenario{
		{name: "no money to refund", given: h, when: refundAmount(refund1, 1), wantErr: tx.ErrRefundExceedsPaid},
		{
			name:  "some goods back",
			given: h,
			when:  refundLines(refund1, tx.RefundLine{LineID: lineA, Qty: 2}),
			then: []tx.Event{tx.RefundIssued{RefundID: refund1, Reason: "returned", Status: tx.StatusPartiallyRefunded, At: at(5),
				Lines: []tx.RefundedLine{{LineID: lineA, Qty: 2}}}},
		},
		{
			name:  "the last goods back",
			given: hist(h, tx.RefundIssued{RefundID: refund1, Reason: "returned", Status: tx.StatusPartiallyRefunded, At: at(5), Lines: []tx.RefundedLine{{LineID: lineA, Qty: 2}}}),
			when:  refundLines(refund2, tx.RefundLine{LineID: lineB, Qty: 1}),
			then: []tx.Event{tx.RefundIssued{RefundID: refund2, Reason: "returned", Status: tx.StatusRefunded, At: at(5),
				Lines: []tx.RefundedLine{{LineID: lineB, Qty: 1}}}},
		},
	})
}

// TestRefundOfAFreeLineInAPaidSale checks that returning a free item
// refunds nothing and leaves the sale partially refunded.
func TestRefundOfAFreeLineInAPaidSale(t *testing.T) {
	h := do(t, hist(evOpened), item(lineA, 1, 5000, 0), item(lineB, 1, 0, 0), checkout(), pay(payCash, tx.MethodCash, 5000))
	run(t, []scenario{{
		name:  "free line back",
		given: h,
		when:  refundLines(refund1, tx.RefundLine{LineID: lineB, Qty: 1}),
		then: []tx.Event{tx.RefundIssued{RefundID: refund1, Reason: "returned", Status: tx.StatusPartiallyRefunded, At: at(5),
			Lines: []tx.RefundedLine{{LineID: lineB, Qty: 1}}}},
	}})
}
