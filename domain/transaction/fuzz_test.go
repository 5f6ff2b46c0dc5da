package transaction_test

import (
	"errors"
	"math/big"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"pos/domain/money"
	tx "pos/domain/transaction"
)

// knownErrors are the only errors a command may return: anything else
// would reach the client as a 500.
var knownErrors = []error{
	tx.ErrInvalid, tx.ErrNotFound, tx.ErrAlreadyExists, tx.ErrInvalidState,
	tx.ErrDiscountExceedsTotal, tx.ErrOverpayment, tx.ErrRefundExceedsPaid, tx.ErrCurrencyMismatch,
}

func known(err error) bool {
	for _, k := range knownErrors {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// FuzzAddItem checks that no quantity and price, however large, panics or
// wraps: a quantity past tx.MaxQty is refused, a line whose gross or totals
// exceed 2^53−1 is a validation error wrapping money.ErrOutOfRange, and any
// other valid line is accepted.
func FuzzAddItem(f *testing.F) {
	f.Add(int64(3), int64(3333), int64(1100), false)
	f.Add(int64(1<<40), int64(1<<20), int64(0), false)
	f.Add(int64(tx.MaxQty), int64(1<<24), int64(0), false)
	f.Add(int64(money.MaxAmount), int64(money.MaxAmount), int64(10000), true)
	f.Add(int64(1), int64(money.MaxAmount), int64(1), false)
	f.Add(int64(-1), int64(5), int64(0), false)
	f.Fuzz(func(t *testing.T, qty, price, rate int64, inclusive bool) {
		agg := draft(t, "IDR", inclusive)
		events, err := agg.AddItem(tx.AddItem{LineID: lineA, SKU: "S", Name: "N", Qty: qty, UnitPrice: money.Amount(price), TaxRateBps: rate, At: at(1)})
		validInput := qty > 0 && qty <= tx.MaxQty && money.Amount(price).Valid() && rate >= 0 && rate <= 10000
		if !validInput {
			if !errors.Is(err, tx.ErrInvalid) {
				t.Fatalf("AddItem(qty %d, price %d, rate %d) err = %v, want ErrInvalid", qty, price, rate, err)
			}
			return
		}
		gross := new(big.Int).Mul(big.NewInt(qty), big.NewInt(price))
		if gross.Cmp(big.NewInt(int64(money.MaxAmount))) > 0 {
			if !errors.Is(err, tx.ErrInvalid) || !errors.Is(err, money.ErrOutOfRange) {
				t.Fatalf("AddItem(qty %d, price %d) err = %v, want ErrInvalid and ErrOutOfRange", qty, price, err)
			}
			return
		}
		if err != nil {
			// Only the tax on top of an exclusive price can still overflow.
			if inclusive || !errors.Is(err, money.ErrOutOfRange) {
				t.Fatalf("AddItem(qty %d, price %d, rate %d) err = %v", qty, price, rate, err)
			}
			return
		}
		if err := agg.Apply(events[0]); err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, agg)
	})
}

// FuzzTotals checks R1–R6 on random drafts: figures never negative, lines
// sum to the totals, net + tax = grand total with exclusive prices and
// grand total − tax = pre-tax net with inclusive ones, the discount never
// above the subtotal, and checkout freezing exactly the live figures.
func FuzzTotals(f *testing.F) {
	f.Add(int64(3), int64(3333), int64(1100), int64(1), int64(1000), int64(0), int64(1000), int64(500), false)
	f.Add(int64(1), int64(10000), int64(1100), int64(2), int64(777), int64(700), int64(0), int64(3), true)
	f.Add(int64(1), int64(1), int64(10000), int64(1), int64(1), int64(10000), int64(10000), int64(0), true)
	f.Add(int64(7), int64(99999), int64(1250), int64(3), int64(12345), int64(0), int64(9999), int64(1), false)
	f.Fuzz(func(t *testing.T, q1, p1, r1, q2, p2, r2, bps, amount int64, inclusive bool) {
		agg := draft(t, "USD", inclusive)
		try := func(c command) {
			t.Helper()
			events, err := c(agg)
			if err != nil {
				if !known(err) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			for _, e := range events {
				if err := agg.Apply(e); err != nil {
					t.Fatalf("apply: %v", err)
				}
			}
		}
		// Keep most inputs in a realistic range while letting the
		// extremes through now and then.
		small := func(v, m int64) int64 {
			if v < 0 || v > m*1000 {
				return v
			}
			return v % m
		}
		try(item(lineA, small(q1, 1000), small(p1, 10_000_000), small(r1, 10001)))
		try(item(lineB, small(q2, 1000), small(p2, 10_000_000), small(r2, 10001)))
		try(percentOff(disc1, small(bps, 10001)))
		try(amountOff(disc2, small(amount, 100_000)))
		checkInvariants(t, agg)
		if len(agg.Lines()) == 0 {
			return
		}
		events, err := agg.Checkout(tx.Checkout{At: at(2)})
		if err != nil {
			t.Fatalf("checkout: %v", err)
		}
		for _, e := range events {
			if err := agg.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
		checkInvariants(t, agg)
		if paid := agg.Totals().GrandTotal == 0; paid != (agg.Status() == tx.StatusPaid) {
			t.Errorf("grand total %d, status %s", agg.Totals().GrandTotal, agg.Status())
		}
	})
}

// bytesIn hands out fuzz bytes as small numbers, and zeros when exhausted.
type bytesIn struct{ b []byte }

func (r *bytesIn) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *bytesIn) n(m int) int64 { return int64(r.byte()) % int64(m) }

func (r *bytesIn) u16() int64 { return int64(r.byte())<<8 | int64(r.byte()) }

// FuzzRefunds checks, over random paid sales and random refund sequences,
// that refunds never exceed what was paid, that no line gives back more
// units or money than it sold for, that a line refunded unit by unit
// returns exactly its frozen total, and that the status agrees.
func FuzzRefunds(f *testing.F) {
	f.Add([]byte{3, 0x0d, 0x05, 2, 1, 0x01, 0x00, 7, 1, 1, 1, 0, 2, 3, 0, 0x10, 0x00})
	f.Add([]byte{7, 0x00, 0x05, 8, 0, 0x00, 0x01, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	f.Add([]byte{1, 0x27, 0x10, 1, 1, 0x27, 0x10, 1, 2, 0, 2, 1, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &bytesIn{data}
		lines := []uuid.UUID{lineA, lineB, lineC}
		inclusive := in.byte()&1 == 1
		history := do(t, nil, open(tx.Open{TransactionID: txID, MerchantID: merchantID, BranchID: branchID, Code: "T", Currency: "IDR", PricesIncludeTax: inclusive, By: "u", At: t0}))
		for _, id := range lines {
			history = do(t, history, item(id, 1+in.n(10), in.u16(), in.n(4)*500))
		}
		if d := in.u16(); d > 0 {
			if _, err := load(t, history).ApplyDiscount(tx.ApplyDiscount{DiscountID: disc1, Kind: tx.DiscountAmount, Amount: money.Amount(d), Reason: "x", At: at(1)}); err == nil {
				history = do(t, history, amountOff(disc1, d))
			}
		}
		history = do(t, history, checkout())
		agg := load(t, history)
		if g := agg.Totals().GrandTotal; g > 0 {
			history = do(t, history, pay(payCash, tx.MethodCash, int64(g)))
		}
		agg = load(t, history)
		paid := agg.Totals().GrandTotal

		for i := 0; len(in.b) > 0 && i < 40; i++ {
			var c tx.Refund
			c.RefundID, c.Reason, c.At = nthID(0xe0, i), "r", at(5)
			if in.byte()&1 == 0 {
				c.Amount = money.Amount(in.u16())
			} else {
				for _, id := range lines {
					if q := in.n(4); q > 0 {
						c.Lines = append(c.Lines, tx.RefundLine{LineID: id, Qty: q})
					}
				}
			}
			events, err := agg.Refund(c)
			if err != nil {
				if !known(err) {
					t.Fatalf("refund %+v: %v", c, err)
				}
				continue
			}
			for _, e := range events {
				if err := agg.Apply(e); err != nil {
					t.Fatal(err)
				}
			}
			history = append(history, events...)

			if agg.Refunded() > paid {
				t.Fatalf("refunded %d of %d paid", agg.Refunded(), paid)
			}
			for _, l := range agg.Lines() {
				if l.RefundedQty > l.Qty || l.RefundedAmount > l.Total {
					t.Fatalf("line over-refunded: %+v", l)
				}
				if l.RefundedQty == l.Qty && l.RefundedAmount != l.Total {
					t.Fatalf("line fully returned for %d of its %d", l.RefundedAmount, l.Total)
				}
			}
			full := agg.Refunded() == paid && paid > 0
			if full != (agg.Status() == tx.StatusRefunded) && paid > 0 {
				t.Fatalf("refunded %d of %d, status %s", agg.Refunded(), paid, agg.Status())
			}
		}
		if rebuilt := load(t, history); !reflect.DeepEqual(rebuilt, agg) {
			t.Fatalf("rebuilding from history differs from the state built step by step")
		}
	})
}

// FuzzLifecycle drives a transaction with random commands, ids drawn from a
// small pool so that duplicates and unknown ids happen, and checks after
// each step: only known errors, refusals change nothing, and the money
// invariants hold (payments never exceed the total, a paid sale is paid in
// full, refunds never exceed payments). At the end, Load of the history
// must equal the state built step by step.
func FuzzLifecycle(f *testing.F) {
	// Seeds walk whole sales; the byte layout is the decoding below: an
	// opcode, then its arguments (ids are pool indexes 0..7).
	f.Add([]byte{
		0, 0, // open, exclusive
		1, 0, 2, 0x02, 0x00, 1, // item id1: 2 × 512 at 5.5 %
		1, 1, 1, 0x00, 0x64, 0, // item id2: 1 × 100
		3, 1, 2, 0x00, 0x32, // amount discount id3: 50
		4,                   // checkout: grand total 588
		5, 3, 1, 0x01, 0x2c, // card id4: 300, pending
		5, 4, 0, 0x03, 0xe8, // cash id5: 1000 → 288 applied, 712 change
		6, 3, // confirm id4 → paid
		8,                    // complete
		10, 0, 5, 0x00, 0x64, // refund id6: amount 100
		10, 1, 6, 0, 1, // refund id7: line id1, 2 units
	})
	f.Add([]byte{
		0, 1, // open, inclusive
		1, 0, 1, 0x27, 0x10, 2, // item id1: 1 × 10000 at 11 %
		4,                   // checkout
		5, 1, 2, 0x27, 0x10, // QRIS id2: 10000, pending
		7, 1, // decline id2
		5, 2, 0, 0x27, 0x10, // cash id3: 10000 → paid
		9, // void a paid sale
	})
	f.Add([]byte{
		0, 0, 1, 0, 1, 0, 0, 0, // open; a free item id1
		4, 8, // checkout → paid at once; complete
		10, 1, 1, 0, 0, // refund id2: line id1, 1 unit
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &bytesIn{data}
		pool := func() uuid.UUID { return nthID(0x50, int(in.n(8))+1) }
		agg := &tx.Transaction{}
		var history []tx.Event
		for step := 0; len(in.b) > 0 && step < 60; step++ {
			var c command
			switch in.n(11) {
			case 0:
				o := validOpen()
				o.PricesIncludeTax = in.byte()&1 == 1
				c = open(o)
			case 1:
				c = item(pool(), in.n(5), in.u16(), in.n(3)*550)
			case 2:
				c = removeItem(pool())
			case 3:
				if in.byte()&1 == 0 {
					c = percentOff(pool(), in.n(40)*250)
				} else {
					c = amountOff(pool(), in.u16())
				}
			case 4:
				c = checkout()
			case 5:
				c = pay(pool(), []tx.Method{tx.MethodCash, tx.MethodCard, tx.MethodQRIS, tx.MethodEWallet}[in.n(4)], in.u16())
			case 6:
				c = confirm(pool())
			case 7:
				c = decline(pool())
			case 8:
				c = complete()
			case 9:
				c = void("v")
			case 10:
				if in.byte()&1 == 0 {
					c = refundAmount(pool(), in.u16())
				} else {
					c = refundLines(pool(), tx.RefundLine{LineID: pool(), Qty: 1 + in.n(3)})
				}
			}
			before := load(t, history)
			events, err := c(agg)
			if !reflect.DeepEqual(agg, before) {
				t.Fatalf("step %d: a command changed the state", step)
			}
			if err != nil {
				if !known(err) {
					t.Fatalf("step %d: unexpected error %v", step, err)
				}
				continue
			}
			for _, e := range events {
				if err := agg.Apply(e); err != nil {
					t.Fatalf("step %d: apply %s: %v", step, e.EventType(), err)
				}
			}
			history = append(history, events...)

			tot := agg.Totals()
			if agg.Paid()+agg.Pending() > tot.GrandTotal {
				t.Fatalf("step %d: settled %d + pending %d exceed the total %d", step, agg.Paid(), agg.Pending(), tot.GrandTotal)
			}
			switch agg.Status() {
			case tx.StatusDraft:
				checkInvariants(t, agg)
			case tx.StatusPaid, tx.StatusCompleted, tx.StatusRefunded, tx.StatusPartiallyRefunded:
				if agg.Paid() != tot.GrandTotal || agg.Pending() != 0 {
					t.Fatalf("step %d: %s with %d paid and %d pending of %d", step, agg.Status(), agg.Paid(), agg.Pending(), tot.GrandTotal)
				}
			}
			if agg.Refunded() > agg.Paid() {
				t.Fatalf("step %d: refunded %d of %d paid", step, agg.Refunded(), agg.Paid())
			}
			roundTrip(t, events)
		}
		if rebuilt := load(t, history); !reflect.DeepEqual(rebuilt, agg) {
			t.Fatalf("rebuilding from history differs from the state built step by step")
		}
	})
}

// FuzzDecode checks that no stored bytes make Decode or Apply panic.
func FuzzDecode(f *testing.F) {
	f.Add("ItemAdded", []byte(`{"line_id":"0193a5c0-0000-7000-8000-00000000a009","qty":1,"unit_price":5}`))
	f.Add("CheckedOut", []byte(`{"lines":[{"line_id":"0193a5c0-0000-7000-8000-00000000a001"}]}`))
	f.Add("RefundIssued", []byte(`{"amount":-1,"status":"refunded"}`))
	f.Add("PaymentAdded", []byte(`{"status":"pending","applied":9007199254740992}`))
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		e, err := tx.Decode(typ, data)
		if err != nil {
			return
		}
		for _, h := range [][]tx.Event{histNone, histDraft, histPending, histPaid} {
			agg := load(t, h)
			if err := agg.Apply(e); err != nil && !errors.Is(err, tx.ErrInvalidHistory) {
				t.Fatalf("Apply(%s) err = %v, want ErrInvalidHistory", typ, err)
			}
		}
	})
}
