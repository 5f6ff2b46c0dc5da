package transaction_test

import (
	"testing"

	"github.com/google/uuid"

	"pos/domain/money"
	tx "pos/domain/transaction"
)

func TestApplyDiscount(t *testing.T) {
	valid := tx.ApplyDiscount{DiscountID: disc1, Kind: tx.DiscountPercent, Bps: 1000, Reason: "member", At: at(1)}
	with := func(f func(*tx.ApplyDiscount)) command {
		c := valid
		f(&c)
		return applyDiscount(c)
	}
	withTenPercent := hist(histDraft, tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountPercent, Bps: 1000, Reason: "member", At: at(1)})
	run(t, []scenario{
		{
			name:  "percent",
			given: histDraft,
			when:  applyDiscount(valid),
			then:  []tx.Event{tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountPercent, Bps: 1000, Reason: "member", At: at(1)}},
		},
		{
			name:  "amount",
			given: histDraft,
			when:  with(func(c *tx.ApplyDiscount) { c.Kind, c.Bps, c.Amount = tx.DiscountAmount, 0, 2500 }),
			then:  []tx.Event{tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountAmount, Amount: 2500, Reason: "member", At: at(1)}},
		},
		{
			name:  "amount equal to the subtotal",
			given: histDraft,
			when:  amountOff(disc1, 10000),
			then:  []tx.Event{tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountAmount, Amount: 10000, Reason: "promo", At: at(1)}},
		},
		{
			name:  "percent 100",
			given: histDraft,
			when:  percentOff(disc1, 10000),
			then:  []tx.Event{tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountPercent, Bps: 10000, Reason: "promo", At: at(1)}},
		},
		{name: "amount above the subtotal", given: histDraft, when: amountOff(disc1, 10001), wantErr: tx.ErrDiscountExceedsTotal},
		{name: "amount on an empty draft", given: hist(evOpened), when: amountOff(disc1, 1), wantErr: tx.ErrDiscountExceedsTotal},
		{name: "percents above 100 together", given: withTenPercent, when: percentOff(disc2, 9001), wantErr: tx.ErrDiscountExceedsTotal},
		{name: "percent and amount above the subtotal", given: withTenPercent, when: amountOff(disc2, 9001), wantErr: tx.ErrDiscountExceedsTotal},
		{
			name:  "percent and amount up to the subtotal",
			given: withTenPercent,
			when:  amountOff(disc2, 9000),
			then:  []tx.Event{tx.DiscountApplied{DiscountID: disc2, Kind: tx.DiscountAmount, Amount: 9000, Reason: "promo", At: at(1)}},
		},
		{name: "the largest amount does not overflow", given: hist(histDraft, tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountAmount, Amount: 1, Reason: "x", At: at(1)}), when: amountOff(disc2, int64(money.MaxAmount)), wantErr: tx.ErrDiscountExceedsTotal},
		{name: "discount id taken", given: withTenPercent, when: percentOff(disc1, 100), wantErr: tx.ErrAlreadyExists},
		{name: "discount id taken by a line", given: histDraft, when: percentOff(lineA, 100), wantErr: tx.ErrAlreadyExists},
		{name: "unknown kind", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Kind = "bogo" }), wantErr: tx.ErrInvalid, wantField: "kind"},
		{name: "bps above 100 %", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Bps = 10001 }), wantErr: tx.ErrInvalid, wantField: "bps"},
		{name: "negative bps", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Bps = -1 }), wantErr: tx.ErrInvalid, wantField: "bps"},
		{name: "percent with an amount", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Amount = 5 }), wantErr: tx.ErrInvalid, wantField: "amount"},
		{name: "zero amount", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Kind, c.Bps = tx.DiscountAmount, 0 }), wantErr: tx.ErrInvalid, wantField: "amount"},
		{name: "amount with bps", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Kind, c.Amount = tx.DiscountAmount, 5 }), wantErr: tx.ErrInvalid, wantField: "bps"},
		{name: "amount above the ceiling", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Kind, c.Bps, c.Amount = tx.DiscountAmount, 0, money.MaxAmount+1 }), wantErr: tx.ErrInvalid, wantField: "amount"},
		{name: "no reason", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Reason = "" }), wantErr: tx.ErrInvalid, wantField: "reason"},
		{name: "nil id", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.DiscountID = uuid.Nil }), wantErr: tx.ErrInvalid, wantField: "discount_id"},
		{name: "another currency", given: histDraft, when: with(func(c *tx.ApplyDiscount) { c.Currency = "JPY" }), wantErr: tx.ErrCurrencyMismatch},
		{name: "not opened", when: applyDiscount(valid), wantErr: tx.ErrNotFound},
		{name: "after checkout", given: hist(histDraft, evCheckout), when: applyDiscount(valid), wantErr: tx.ErrInvalidState},
	})
}

func TestCheckout(t *testing.T) {
	// Two lines, 11 % tax on the first, a 1000 discount: exact shares
	// 1000 × 9999/10999 = 909.09 and 1000 × 1000/10999 = 90.92 → floors
	// 909 + 90 = 999, and the leftover unit goes to the larger remainder
	// (line B, .92 against .09).
	twoLines := do(t, hist(evOpened), item(lineA, 3, 3333, 1100), item(lineB, 1, 1000, 0), amountOff(disc1, 1000))
	run(t, []scenario{
		{name: "freezes the totals", given: histDraft, when: checkout(), then: []tx.Event{evCheckout}},
		{
			name:  "freezes every line's figures",
			given: twoLines,
			when:  checkout(),
			then: []tx.Event{tx.CheckedOut{
				// A: net 9999 − 909 = 9090, tax round(999.9) = 1000.
				// B: net 1000 − 91 = 909, no tax.
				Subtotal: 10999, Discount: 1000, Tax: 1000, GrandTotal: 10999, Currency: "IDR", At: at(2),
				Lines: []tx.LineTotals{
					{LineID: lineA, Qty: 3, Gross: 9999, Discount: 909, Net: 9090, Tax: 1000, Total: 10090},
					{LineID: lineB, Qty: 1, Gross: 1000, Discount: 91, Net: 909, Tax: 0, Total: 909},
				},
			}},
		},
		{
			name:  "a sale discounted to zero is paid at checkout",
			given: hist(histDraft, tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountPercent, Bps: 10000, Reason: "staff", At: at(1)}),
			when:  checkout(),
			then: []tx.Event{
				tx.CheckedOut{Subtotal: 10000, Discount: 10000, Currency: "IDR", At: at(2),
					Lines: []tx.LineTotals{{LineID: lineA, Qty: 2, Gross: 10000, Discount: 10000}}},
				tx.TransactionPaid{PaidTotal: 0, At: at(2)},
			},
		},
		{
			name:  "free items only are paid at checkout",
			given: hist(evOpened, tx.ItemAdded{LineID: lineA, SKU: "GIFT", Name: "Gift", Qty: 1, At: at(1)}),
			when:  checkout(),
			then: []tx.Event{
				tx.CheckedOut{Currency: "IDR", At: at(2), Lines: []tx.LineTotals{{LineID: lineA, Qty: 1}}},
				tx.TransactionPaid{PaidTotal: 0, At: at(2)},
			},
		},
		{name: "an empty draft", given: hist(evOpened), when: checkout(), wantErr: tx.ErrInvalidState},
		{name: "a draft emptied", given: hist(histDraft, tx.ItemRemoved{LineID: lineA, At: at(1)}), when: checkout(), wantErr: tx.ErrInvalidState},
		{name: "twice", given: hist(histDraft, evCheckout), when: checkout(), wantErr: tx.ErrInvalidState},
		{name: "not opened", when: checkout(), wantErr: tx.ErrNotFound},
	})
}

// TestCheckoutFreezes checks that the figures frozen at checkout are the
// ones the aggregate reports afterwards, even if the history's figures
// differ from what today's rules would compute (a rule changed since).
func TestCheckoutFreezes(t *testing.T) {
	frozen := tx.CheckedOut{Subtotal: 10000, Discount: 0, Tax: 1, GrandTotal: 10001, Currency: "IDR", At: at(2),
		Lines: []tx.LineTotals{{LineID: lineA, Qty: 2, Gross: 10000, Net: 10000, Tax: 1, Total: 10001}}}
	agg := load(t, hist(histDraft, frozen))
	if got, want := agg.Totals(), (tx.Totals{Currency: "IDR", Subtotal: 10000, Tax: 1, GrandTotal: 10001}); got != want {
		t.Errorf("Totals() = %+v, want %+v", got, want)
	}
	if l := agg.Lines()[0]; l.Tax != 1 || l.Total != 10001 {
		t.Errorf("line = %+v, want the frozen figures", l)
	}
	if agg.Due() != 10001 {
		t.Errorf("Due() = %d, want 10001", agg.Due())
	}
}
