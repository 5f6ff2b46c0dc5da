package transaction_test

import (
	"slices"
	"testing"

	"pos/domain/money"
	tx "pos/domain/transaction"
)

// draft opens a sale in currency with the tax mode and runs cmds on it.
func draft(t *testing.T, currency money.Currency, inclusive bool, cmds ...command) *tx.Transaction {
	t.Helper()
	o := validOpen()
	o.Currency, o.PricesIncludeTax = currency, inclusive
	return load(t, do(t, nil, append([]command{open(o)}, cmds...)...))
}

// TestRoundingRules pins the named rules of the package documentation to
// worked examples.
func TestRoundingRules(t *testing.T) {
	tests := []struct {
		name      string
		currency  money.Currency
		inclusive bool
		cmds      []command
		want      tx.Totals
		// per line: discount share, tax
		wantShares []money.Amount
		wantTaxes  []money.Amount
	}{
		{
			// R1, R4: 3 × 3333 = 9999; 11 % = 1099.89 → 1100.
			name:       "IDR exclusive 11 % on 3 × 3333",
			currency:   "IDR",
			cmds:       []command{item(lineA, 3, 3333, 1100)},
			want:       tx.Totals{Currency: "IDR", Subtotal: 9999, Tax: 1100, GrandTotal: 11099},
			wantShares: []money.Amount{0}, wantTaxes: []money.Amount{1100},
		},
		{
			// R5: pre-tax 10000 × 10000 / 11100 = 9009.009 → 9009; tax 991.
			name:       "IDR inclusive 11 % on 10000",
			currency:   "IDR",
			inclusive:  true,
			cmds:       []command{item(lineA, 1, 10000, 1100)},
			want:       tx.Totals{Currency: "IDR", Subtotal: 10000, Tax: 991, GrandTotal: 10000},
			wantShares: []money.Amount{0}, wantTaxes: []money.Amount{991},
		},
		{
			// R4 ties: 10 % of 1.25 USD is 12.5 cents → 12 (even); of 1.35
			// is 13.5 → 14 (even). Rounding half up would give 13 + 14.
			name:       "USD exclusive half-even ties",
			currency:   "USD",
			cmds:       []command{item(lineA, 1, 125, 1000), item(lineB, 1, 135, 1000)},
			want:       tx.Totals{Currency: "USD", Subtotal: 260, Tax: 26, GrandTotal: 286},
			wantShares: []money.Amount{0, 0}, wantTaxes: []money.Amount{12, 14},
		},
		{
			// R5 ties: at 100 %, 5 cents hold 2.5 pre-tax → 2 (tax 3) and 7
			// cents hold 3.5 → 4 (tax 3).
			name:       "USD inclusive half-even ties",
			currency:   "USD",
			inclusive:  true,
			cmds:       []command{item(lineA, 1, 5, 10000), item(lineB, 1, 7, 10000)},
			want:       tx.Totals{Currency: "USD", Subtotal: 12, Tax: 6, GrandTotal: 12},
			wantShares: []money.Amount{0, 0}, wantTaxes: []money.Amount{3, 3},
		},
		{
			// R2: 10 % of 25 cents = 2.5 → 2.
			name:       "USD percent discount ties to even",
			currency:   "USD",
			cmds:       []command{item(lineA, 1, 25, 0), percentOff(disc1, 1000)},
			want:       tx.Totals{Currency: "USD", Subtotal: 25, Discount: 2, GrandTotal: 23},
			wantShares: []money.Amount{2}, wantTaxes: []money.Amount{0},
		},
		{
			// R2: percents add up, not compound: 10 % + 5 % of 10000 = 1500.
			name:       "percent discounts add up",
			currency:   "IDR",
			cmds:       []command{item(lineA, 1, 10000, 0), percentOff(disc1, 1000), percentOff(disc2, 500)},
			want:       tx.Totals{Currency: "IDR", Subtotal: 10000, Discount: 1500, GrandTotal: 8500},
			wantShares: []money.Amount{1500}, wantTaxes: []money.Amount{0},
		},
		{
			// R3: 100 over three equal lines: 33.3 each; the leftover unit
			// goes to the first (ties to the earlier line).
			name:       "discount allocation across 3 equal lines",
			currency:   "IDR",
			cmds:       []command{item(lineA, 1, 1000, 0), item(lineB, 1, 1000, 0), item(lineC, 1, 1000, 0), amountOff(disc1, 100)},
			want:       tx.Totals{Currency: "IDR", Subtotal: 3000, Discount: 100, GrandTotal: 2900},
			wantShares: []money.Amount{34, 33, 33}, wantTaxes: []money.Amount{0, 0, 0},
		},
		{
			// R3: 1000 over 3333/3333/3334: 333.3, 333.3, 333.4 → the
			// leftover unit goes to the largest remainder, the third line.
			// R4 on each net: 3000 → 330, 3000 → 330, 3001 → 330.11 → 330.
			name:       "discount allocation by largest remainder, then tax",
			currency:   "IDR",
			cmds:       []command{item(lineA, 1, 3333, 1100), item(lineB, 1, 3333, 1100), item(lineC, 1, 3334, 1100), amountOff(disc1, 1000)},
			want:       tx.Totals{Currency: "IDR", Subtotal: 10000, Discount: 1000, Tax: 990, GrandTotal: 9990},
			wantShares: []money.Amount{333, 333, 334}, wantTaxes: []money.Amount{330, 330, 330},
		},
		{
			// R3 + R5: 10 % off 10000 + 5000, inclusive 11 % and 0 %.
			// Shares 1000 and 500; nets 9000, 4500; tax 9000 − round(8108.1)
			// = 892 on the first.
			name:       "inclusive with a discount and mixed rates",
			currency:   "IDR",
			inclusive:  true,
			cmds:       []command{item(lineA, 1, 10000, 1100), item(lineB, 1, 5000, 0), percentOff(disc1, 1000)},
			want:       tx.Totals{Currency: "IDR", Subtotal: 15000, Discount: 1500, Tax: 892, GrandTotal: 13500},
			wantShares: []money.Amount{1000, 500}, wantTaxes: []money.Amount{892, 0},
		},
		{
			// JPY has no minor unit: amounts are whole yen, same rules.
			name:       "JPY exclusive 10 %",
			currency:   "JPY",
			cmds:       []command{item(lineA, 3, 333, 1000)},
			want:       tx.Totals{Currency: "JPY", Subtotal: 999, Tax: 100, GrandTotal: 1099},
			wantShares: []money.Amount{0}, wantTaxes: []money.Amount{100},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agg := draft(t, tt.currency, tt.inclusive, tt.cmds...)
			if got := agg.Totals(); got != tt.want {
				t.Errorf("Totals() = %+v, want %+v", got, tt.want)
			}
			var shares, taxes []money.Amount
			for _, l := range agg.Lines() {
				shares, taxes = append(shares, l.Discount), append(taxes, l.Tax)
			}
			if !slices.Equal(shares, tt.wantShares) || !slices.Equal(taxes, tt.wantTaxes) {
				t.Errorf("line shares %v taxes %v, want %v %v", shares, taxes, tt.wantShares, tt.wantTaxes)
			}
			checkInvariants(t, agg)

			// Checkout freezes exactly these figures.
			events, err := agg.Checkout(tx.Checkout{At: at(2)})
			if err != nil {
				t.Fatal(err)
			}
			co := events[0].(tx.CheckedOut)
			got := tx.Totals{Currency: co.Currency, Subtotal: co.Subtotal, Discount: co.Discount, Tax: co.Tax, GrandTotal: co.GrandTotal}
			if got != tt.want {
				t.Errorf("CheckedOut totals = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestPercentDiscountFollowsTheSubtotal checks R2 while in draft: a percent
// discount is recomputed when lines change.
func TestPercentDiscountFollowsTheSubtotal(t *testing.T) {
	agg := draft(t, "IDR", false, item(lineA, 1, 10000, 0), percentOff(disc1, 1000), item(lineB, 1, 5000, 0))
	if got := agg.Totals().Discount; got != 1500 {
		t.Errorf("discount after adding a line = %d, want 1500", got)
	}
	agg = load(t, do(t, nil, open(validOpen()), item(lineA, 1, 10000, 0), percentOff(disc1, 1000), item(lineB, 1, 5000, 0), removeItem(lineA)))
	if got := agg.Totals().Discount; got != 500 {
		t.Errorf("discount after removing a line = %d, want 500", got)
	}
}

// checkInvariants asserts R6's identities on an aggregate's figures.
func checkInvariants(t *testing.T, agg *tx.Transaction) {
	t.Helper()
	tot := agg.Totals()
	var gross, share, net, tax, total, pre money.Amount
	for _, l := range agg.Lines() {
		for _, a := range []money.Amount{l.Gross, l.Discount, l.Net, l.Tax, l.Total} {
			if !a.Valid() {
				t.Fatalf("line %s has an invalid figure: %+v", l.LineID, l)
			}
		}
		if l.Net != l.Gross-l.Discount {
			t.Errorf("line %s: net %d ≠ gross %d − discount %d", l.LineID, l.Net, l.Gross, l.Discount)
		}
		if agg.PricesIncludeTax() {
			if l.Total != l.Net || l.Tax > l.Net {
				t.Errorf("inclusive line %s: %+v", l.LineID, l)
			}
			pre += l.Net - l.Tax
		} else {
			if l.Total != l.Net+l.Tax {
				t.Errorf("exclusive line %s: total %d ≠ net %d + tax %d", l.LineID, l.Total, l.Net, l.Tax)
			}
			pre += l.Net
		}
		gross, share, net, tax, total = gross+l.Gross, share+l.Discount, net+l.Net, tax+l.Tax, total+l.Total
	}
	for _, a := range []money.Amount{tot.Subtotal, tot.Discount, tot.Tax, tot.GrandTotal} {
		if !a.Valid() {
			t.Fatalf("totals out of range: %+v", tot)
		}
	}
	if tot.Subtotal != gross || tot.Discount != share || tot.Tax != tax || tot.GrandTotal != total {
		t.Errorf("totals %+v, lines sum to gross %d discount %d tax %d total %d", tot, gross, share, tax, total)
	}
	if tot.Discount > tot.Subtotal {
		t.Errorf("discount %d above subtotal %d", tot.Discount, tot.Subtotal)
	}
	if !agg.PricesIncludeTax() && tot.GrandTotal != net+tax {
		t.Errorf("exclusive: grand total %d ≠ Σ net %d + Σ tax %d", tot.GrandTotal, net, tax)
	}
	if tot.GrandTotal-tot.Tax != pre {
		t.Errorf("grand total %d − tax %d ≠ pre-tax net %d", tot.GrandTotal, tot.Tax, pre)
	}
}
