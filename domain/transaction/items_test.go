package transaction_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/domain/money"
	tx "pos/domain/transaction"
)

func TestAddItem(t *testing.T) {
	valid := tx.AddItem{LineID: lineB, SKU: "SKU-B", Name: "Tea", Qty: 3, UnitPrice: 3333, TaxRateBps: 1100, At: at(1)}
	with := func(f func(*tx.AddItem)) command {
		c := valid
		f(&c)
		return addItem(c)
	}
	fullDraft := hist(evOpened)
	for i := range tx.MaxLines {
		fullDraft = append(fullDraft, tx.ItemAdded{LineID: nthID(0x10, i), SKU: "S", Name: "N", Qty: 1, UnitPrice: 1, At: at(1)})
	}
	run(t, []scenario{
		{
			name:  "adds a line",
			given: hist(evOpened),
			when:  addItem(valid),
			then:  []tx.Event{tx.ItemAdded{LineID: lineB, SKU: "SKU-B", Name: "Tea", Qty: 3, UnitPrice: 3333, TaxRateBps: 1100, At: at(1)}},
		},
		{
			name:  "a free item is a line",
			given: hist(evOpened),
			when:  with(func(c *tx.AddItem) { c.UnitPrice = 0 }),
			then:  []tx.Event{tx.ItemAdded{LineID: lineB, SKU: "SKU-B", Name: "Tea", Qty: 3, UnitPrice: 0, TaxRateBps: 1100, At: at(1)}},
		},
		{
			name:  "the transaction's currency may be stated",
			given: hist(evOpened),
			when:  with(func(c *tx.AddItem) { c.Currency = "IDR"; c.TaxRateBps = 10000 }),
			then:  []tx.Event{tx.ItemAdded{LineID: lineB, SKU: "SKU-B", Name: "Tea", Qty: 3, UnitPrice: 3333, TaxRateBps: 10000, At: at(1)}},
		},
		{name: "another currency", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.Currency = "USD" }), wantErr: tx.ErrCurrencyMismatch},
		{name: "not opened", when: addItem(valid), wantErr: tx.ErrNotFound},
		{name: "zero qty", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.Qty = 0 }), wantErr: tx.ErrInvalid, wantField: "qty"},
		{name: "negative qty", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.Qty = -1 }), wantErr: tx.ErrInvalid, wantField: "qty"},
		{name: "negative price", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.UnitPrice = -1 }), wantErr: tx.ErrInvalid, wantField: "unit_price"},
		{name: "price above the ceiling", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.UnitPrice = money.MaxAmount + 1 }), wantErr: money.ErrOutOfRange, wantField: "unit_price"},
		{name: "negative rate", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.TaxRateBps = -1 }), wantErr: tx.ErrInvalid, wantField: "tax_rate_bps"},
		{name: "rate above 100 %", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.TaxRateBps = 10001 }), wantErr: tx.ErrInvalid, wantField: "tax_rate_bps"},
		{name: "nil line id", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.LineID = uuid.Nil }), wantErr: tx.ErrInvalid, wantField: "line_id"},
		{name: "no sku", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.SKU = "" }), wantErr: tx.ErrInvalid, wantField: "sku"},
		// A line becomes a stock ledger's reservation at checkout: what a
		// ledger would refuse is refused here, not after the sale is rung up.
		{name: "sku with a trailing space", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.SKU = "TEA " }), wantErr: tx.ErrInvalid, wantField: "sku"},
		{name: "sku with a control character", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.SKU = "TE\x01A" }), wantErr: tx.ErrInvalid, wantField: "sku"},
		{name: "qty above what a ledger takes", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.Qty = tx.MaxQty + 1; c.UnitPrice = 0 }), wantErr: tx.ErrInvalid, wantField: "qty"},
		{name: "a SKU's units on the sale above what a ledger takes",
			given: hist(evOpened, tx.ItemAdded{LineID: lineA, SKU: "SKU-B", Name: "Tea", Qty: tx.MaxQty - 2, UnitPrice: 0, At: at(1)}),
			when:  with(func(c *tx.AddItem) { c.UnitPrice = 0 }), wantErr: tx.ErrInvalid, wantField: "qty"},
		{name: "another SKU's units are its own",
			given: hist(evOpened, tx.ItemAdded{LineID: lineA, SKU: "SKU-A", Name: "Tea", Qty: tx.MaxQty - 2, UnitPrice: 0, At: at(1)}),
			when:  with(func(c *tx.AddItem) { c.UnitPrice = 0 }),
			then:  []tx.Event{tx.ItemAdded{LineID: lineB, SKU: "SKU-B", Name: "Tea", Qty: 3, UnitPrice: 0, TaxRateBps: 1100, At: at(1)}}},
		{name: "qty at what a ledger takes", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.Qty = tx.MaxQty; c.UnitPrice = 0 }),
			then: []tx.Event{tx.ItemAdded{LineID: lineB, SKU: "SKU-B", Name: "Tea", Qty: tx.MaxQty, UnitPrice: 0, TaxRateBps: 1100, At: at(1)}}},
		{name: "no name", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.Name = "\t" }), wantErr: tx.ErrInvalid, wantField: "name"},
		{name: "name too long", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.Name = strings.Repeat("é", tx.MaxNameLen+1) }), wantErr: tx.ErrInvalid, wantField: "name"},
		{name: "name not UTF-8", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.Name = "\xff" }), wantErr: tx.ErrInvalid, wantField: "name"},
		{name: "no time", given: hist(evOpened), when: with(func(c *tx.AddItem) { c.At = time.Time{} }), wantErr: tx.ErrInvalid, wantField: "at"},
		{
			name:      "qty × price overflows",
			given:     hist(evOpened),
			when:      with(func(c *tx.AddItem) { c.Qty = tx.MaxQty; c.UnitPrice = 1 << 24 }),
			wantErr:   money.ErrOutOfRange,
			wantField: "qty",
		},
		{
			name:      "huge qty × huge price does not wrap",
			given:     hist(evOpened),
			when:      with(func(c *tx.AddItem) { c.Qty = tx.MaxQty; c.UnitPrice = money.MaxAmount }),
			wantErr:   tx.ErrInvalid,
			wantField: "qty",
		},
		{
			name:      "subtotal overflows",
			given:     hist(evOpened, tx.ItemAdded{LineID: lineA, SKU: "A", Name: "A", Qty: 1, UnitPrice: money.MaxAmount, At: at(1)}),
			when:      with(func(c *tx.AddItem) { c.Qty = 1; c.UnitPrice = 1; c.TaxRateBps = 0 }),
			wantErr:   money.ErrOutOfRange,
			wantField: "qty",
		},
		{
			name:      "tax on top overflows the grand total",
			given:     hist(evOpened),
			when:      with(func(c *tx.AddItem) { c.Qty = 1; c.UnitPrice = money.MaxAmount }),
			wantErr:   money.ErrOutOfRange,
			wantField: "qty",
		},
		{name: "line id taken", given: histDraft, when: with(func(c *tx.AddItem) { c.LineID = lineA }), wantErr: tx.ErrAlreadyExists},
		{name: "removed line id is not reused", given: hist(histDraft, tx.ItemRemoved{LineID: lineA, At: at(1)}), when: with(func(c *tx.AddItem) { c.LineID = lineA }), wantErr: tx.ErrAlreadyExists},
		{name: "too many lines", given: fullDraft, when: addItem(valid), wantErr: tx.ErrInvalid, wantField: "lines"},
		{name: "after checkout", given: hist(histDraft, evCheckout), when: addItem(valid), wantErr: tx.ErrInvalidState},
	})
}

func TestRemoveItem(t *testing.T) {
	run(t, []scenario{
		{name: "removes a line", given: histDraft, when: removeItem(lineA), then: []tx.Event{tx.ItemRemoved{LineID: lineA, At: at(1)}}},
		{name: "unknown line", given: histDraft, when: removeItem(lineB), wantErr: tx.ErrNotFound},
		{name: "removed twice", given: hist(histDraft, tx.ItemRemoved{LineID: lineA, At: at(1)}), when: removeItem(lineA), wantErr: tx.ErrNotFound},
		{name: "nil line id", given: histDraft, when: removeItem(uuid.Nil), wantErr: tx.ErrInvalid, wantField: "line_id"},
		{name: "not opened", when: removeItem(lineA), wantErr: tx.ErrNotFound},
		{name: "after checkout", given: hist(histDraft, evCheckout), when: removeItem(lineA), wantErr: tx.ErrInvalidState},
	})
}

// TestRemoveItemCapsDiscount checks R2's cap: an amount discount that
// fitted the subtotal when applied is capped when a line is removed, so the
// total reaches zero and never goes below.
func TestRemoveItemCapsDiscount(t *testing.T) {
	h := do(t, hist(evOpened), item(lineA, 1, 6000, 0), item(lineB, 1, 4000, 0), amountOff(disc1, 7000), removeItem(lineA))
	agg := load(t, h)
	want := tx.Totals{Currency: "IDR", Subtotal: 4000, Discount: 4000, GrandTotal: 0}
	if got := agg.Totals(); got != want {
		t.Errorf("Totals() = %+v, want %+v", got, want)
	}
	// Another discount is refused: the discounts already exceed the subtotal.
	if _, err := agg.ApplyDiscount(tx.ApplyDiscount{DiscountID: disc2, Kind: tx.DiscountPercent, Bps: 0, Reason: "x", At: at(1)}); !errors.Is(err, tx.ErrDiscountExceedsTotal) {
		t.Errorf("a further discount over a capped one: err = %v, want ErrDiscountExceedsTotal", err)
	}
	// Checking out the fully discounted sale pays it at once.
	events, err := agg.Checkout(tx.Checkout{At: at(2)})
	if err != nil || len(events) != 2 || events[1] != (tx.TransactionPaid{PaidTotal: 0, At: at(2)}) {
		t.Fatalf("Checkout() = %s, %v", show(events), err)
	}
}
