package stock_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"pos/domain/money"
	"pos/domain/stock"
)

var (
	long201 = strings.Repeat("b", stock.MaxActorLen+1)
	long501 = strings.Repeat("r", stock.MaxReasonLen+1)
	badUTF8 = "ab\xffcd"
)

func TestReceive(t *testing.T) {
	base := stock.Receive{ReceiptID: rcpt2, Qty: 5, UnitCost: 130, By: "clerk-1", At: at(1)}
	with := func(f func(*stock.Receive)) command {
		c := base
		f(&c)
		return receive(c)
	}
	run(t, []scenario{
		{
			name:  "a first receipt sets the average",
			when:  recv(rcpt1, 10, 100),
			then:  hist(received(rcpt1, 10, 100, 100)),
			want:  state{10, 0, 10, 100},
			given: histNone,
		},
		{
			name:  "a second receipt moves the average: 10 @ 100 + 5 @ 130 = 110",
			given: histStocked,
			when:  recv(rcpt2, 5, 130),
			then:  hist(received(rcpt2, 5, 130, 110)),
			want:  state{15, 0, 15, 110},
		},
		{
			name:  "a receipt leaves reservations alone",
			given: histReserved,
			when:  recv(rcpt2, 5, 130),
			then:  hist(received(rcpt2, 5, 130, 110)),
			want:  state{15, 3, 12, 110},
		},
		{
			name:  "free goods (unit cost 0) halve the average",
			given: histStocked,
			when:  recv(rcpt2, 10, 0),
			then:  hist(received(rcpt2, 10, 0, 50)),
			want:  state{20, 0, 20, 50},
		},
		{
			name: "the largest quantity",
			when: recv(rcpt1, stock.MaxQty, 1),
			then: hist(received(rcpt1, stock.MaxQty, 1, 1)),
			want: state{stock.MaxQty, 0, stock.MaxQty, 1},
		},
		{
			name: "the command's time is stored in UTC",
			when: receive(stock.Receive{ReceiptID: rcpt1, Qty: 1, UnitCost: 7, By: "clerk-1", At: at(1).In(time.FixedZone("WIB", 7*3600))}),
			then: hist(received(rcpt1, 1, 7, 7)),
			want: state{1, 0, 1, 7},
		},
		{
			name:  "a repeated receipt decides nothing",
			given: histStocked,
			when:  recv(rcpt1, 10, 100),
			want:  state{10, 0, 10, 100},
		},
		{
			name:    "a receipt id used for another receipt is refused",
			given:   histStocked,
			when:    recv(rcpt1, 5, 130),
			wantErr: stock.ErrAlreadyExists,
		},
		{
			name:    "a receipt id used for other figures is refused",
			given:   hist(histStocked, received(rcpt2, 5, 130, 110)),
			when:    recv(rcpt2, 1, 1),
			wantErr: stock.ErrAlreadyExists,
		},
		{name: "zero qty", when: with(func(c *stock.Receive) { c.Qty = 0 }), wantField: "qty"},
		{name: "negative qty", when: with(func(c *stock.Receive) { c.Qty = -1 }), wantField: "qty"},
		{name: "qty above MaxQty", when: with(func(c *stock.Receive) { c.Qty = stock.MaxQty + 1 }), wantField: "qty"},
		{name: "negative unit cost", when: with(func(c *stock.Receive) { c.UnitCost = -1 }), wantErr: money.ErrOutOfRange, wantField: "unit_cost"},
		{name: "unit cost above MaxAmount", when: with(func(c *stock.Receive) { c.UnitCost = money.MaxAmount + 1 }), wantField: "unit_cost"},
		{name: "nil receipt id", when: with(func(c *stock.Receive) { c.ReceiptID = [16]byte{} }), wantField: "receipt_id"},
		{name: "zero time", when: with(func(c *stock.Receive) { c.At = time.Time{} }), wantField: "at"},
		{name: "empty by", when: with(func(c *stock.Receive) { c.By = "" }), wantField: "by"},
		{name: "blank by", when: with(func(c *stock.Receive) { c.By = " \t " }), wantField: "by"},
		{name: "by too long", when: with(func(c *stock.Receive) { c.By = long201 }), wantField: "by"},
		{name: "by not UTF-8", when: with(func(c *stock.Receive) { c.By = badUTF8 }), wantField: "by"},
		{
			name:      "a repeated receipt id with a bad qty is still refused",
			given:     histStocked,
			when:      with(func(c *stock.Receive) { c.ReceiptID, c.Qty = rcpt1, 0 }),
			wantField: "qty",
		},
	})
}

func TestAdjust(t *testing.T) {
	base := stock.Adjust{AdjustmentID: adj1, Delta: -1, Reason: "breakage", By: "clerk-1", At: at(1)}
	with := func(f func(*stock.Adjust)) command {
		c := base
		f(&c)
		return adjust(c)
	}
	run(t, []scenario{
		{
			name: "a found box on an empty ledger",
			when: adj(adj1, 5, false),
			then: hist(adjusted(adj1, 5)),
			want: state{5, 0, 5, 0},
		},
		{
			name:  "a removal within available leaves the average",
			given: histStocked,
			when:  adj(adj1, -4, false),
			then:  hist(adjusted(adj1, -4)),
			want:  state{6, 0, 6, 100},
		},
		{
			name:  "a removal down to exactly zero available",
			given: histReserved,
			when:  adj(adj1, -7, false),
			then:  hist(adjusted(adj1, -7)),
			want:  state{3, 3, 0, 100},
		},
		{
			name:      "a removal beyond available is a shortage",
			given:     histReserved,
			when:      adj(adj1, -8, false),
			wantShort: &stock.ShortageError{BranchID: branchID, SKU: sku, Available: 7, Requested: 8},
		},
		{
			name:  "a removal beyond available with negative stock allowed",
			given: histReserved,
			when:  adj(adj1, -8, true),
			then:  hist(adjusted(adj1, -8)),
			want:  state{2, 3, -1, 100},
		},
		{
			name:      "a removal on a SKU never received is a shortage",
			when:      adj(adj1, -2, false),
			wantShort: &stock.ShortageError{BranchID: branchID, SKU: sku, Available: 0, Requested: 2},
		},
		{
			name: "a removal on a SKU never received with negative stock allowed",
			when: adj(adj1, -2, true),
			then: hist(adjusted(adj1, -2)),
			want: state{-2, 0, -2, 0},
		},
		{
			name:  "an addition while available is negative is allowed",
			given: hist(histStocked, sold(tx2, 12, 0, 100)),
			when:  adj(adj1, 1, false),
			then:  hist(adjusted(adj1, 1)),
			want:  state{-1, 0, -1, 100},
		},
		{
			name:  "a repeated adjustment id decides nothing",
			given: hist(histStocked, adjusted(adj1, -4)),
			when:  adj(adj1, -4, false),
			want:  state{6, 0, 6, 100},
		},
		{
			name:  "a repeated adjustment id that would now be short decides nothing",
			given: hist(histStocked, adjusted(adj1, -10)),
			when:  adj(adj1, -10, false),
			want:  state{0, 0, 0, 100},
		},
		{
			name: "the largest removal with negative stock allowed",
			when: adj(adj1, -stock.MaxQty, true),
			then: hist(adjusted(adj1, -stock.MaxQty)),
			want: state{-stock.MaxQty, 0, -stock.MaxQty, 0},
		},
		{
			name: "a reason of MaxReasonLen characters",
			when: adjust(stock.Adjust{AdjustmentID: adj1, Delta: 1, Reason: strings.Repeat("é", stock.MaxReasonLen), By: "clerk-1", At: at(1)}),
			then: hist(stock.StockAdjusted{Key: key, AdjustmentID: adj1, Delta: 1, Reason: strings.Repeat("é", stock.MaxReasonLen), By: "clerk-1", At: at(1)}),
			want: state{1, 0, 1, 0},
		},
		{name: "zero delta", given: histStocked, when: with(func(c *stock.Adjust) { c.Delta = 0 }), wantField: "delta"},
		{name: "delta above MaxQty", given: histStocked, when: with(func(c *stock.Adjust) { c.Delta = stock.MaxQty + 1 }), wantField: "delta"},
		{name: "delta below −MaxQty", given: histStocked, when: with(func(c *stock.Adjust) { c.Delta, c.AllowNegative = -stock.MaxQty-1, true }), wantField: "delta"},
		{name: "empty reason", given: histStocked, when: with(func(c *stock.Adjust) { c.Reason = "" }), wantField: "reason"},
		{name: "blank reason", given: histStocked, when: with(func(c *stock.Adjust) { c.Reason = "   " }), wantField: "reason"},
		{name: "reason too long", given: histStocked, when: with(func(c *stock.Adjust) { c.Reason = long501 }), wantField: "reason"},
		{name: "empty by", given: histStocked, when: with(func(c *stock.Adjust) { c.By = "" }), wantField: "by"},
		{name: "by too long", given: histStocked, when: with(func(c *stock.Adjust) { c.By = long201 }), wantField: "by"},
		{name: "nil adjustment id", given: histStocked, when: with(func(c *stock.Adjust) { c.AdjustmentID = [16]byte{} }), wantField: "adjustment_id"},
		{name: "zero time", given: histStocked, when: with(func(c *stock.Adjust) { c.At = time.Time{} }), wantField: "at"},
	})
}

func TestReserve(t *testing.T) {
	base := stock.Reserve{TransactionID: tx1, Qty: 1, Attempt: 1, At: at(2)}
	with := func(f func(*stock.Reserve)) command {
		c := base
		f(&c)
		return reserve(c)
	}
	run(t, []scenario{
		{
			name:  "a reservation within stock",
			given: histStocked,
			when:  res(tx1, 3, false),
			then:  hist(reserved(tx1, 3)),
			want:  state{10, 3, 7, 100},
		},
		{
			name:  "a reservation of every unit",
			given: histStocked,
			when:  res(tx1, 10, false),
			then:  hist(reserved(tx1, 10)),
			want:  state{10, 10, 0, 100},
		},
		{
			name:      "a reservation beyond on hand is a shortage",
			given:     histStocked,
			when:      res(tx1, 11, false),
			wantShort: &stock.ShortageError{BranchID: branchID, SKU: sku, Available: 10, Requested: 11},
		},
		{
			name:      "a second transaction's reservation beyond available is a shortage",
			given:     histReserved,
			when:      res(tx2, 8, false),
			wantShort: &stock.ShortageError{BranchID: branchID, SKU: sku, Available: 7, Requested: 8},
		},
		{
			name:  "a second transaction's reservation of what is available",
			given: histReserved,
			when:  res(tx2, 7, false),
			then:  hist(reserved(tx2, 7)),
			want:  state{10, 10, 0, 100},
		},
		{
			name:  "a reservation beyond available with negative stock allowed",
			given: histReserved,
			when:  res(tx2, 8, true),
			then:  hist(reserved(tx2, 8)),
			want:  state{10, 11, -1, 100},
		},
		{
			name:      "a SKU never received cannot be reserved",
			when:      res(tx1, 1, false),
			wantShort: &stock.ShortageError{BranchID: branchID, SKU: sku, Available: 0, Requested: 1},
		},
		{
			name: "a SKU never received can be reserved with negative stock allowed",
			when: res(tx1, 1, true),
			then: hist(reserved(tx1, 1)),
			want: state{0, 1, -1, 0},
		},
		{
			name:  "the same quantity again decides nothing",
			given: histReserved,
			when:  res(tx1, 3, false),
			want:  state{10, 3, 7, 100},
		},
		{
			name:  "the same quantity again decides nothing even when now short",
			given: hist(histReserved, adjusted(adj1, -9)),
			when:  res(tx1, 3, false),
			want:  state{1, 3, -2, 100},
		},
		{
			name:  "a larger quantity replaces the reservation, counting its own units as available",
			given: histReserved,
			when:  res(tx1, 10, false),
			then:  hist(reserved(tx1, 10)),
			want:  state{10, 10, 0, 100},
		},
		{
			name:  "a smaller quantity replaces the reservation",
			given: histReserved,
			when:  res(tx1, 1, false),
			then:  hist(reserved(tx1, 1)),
			want:  state{10, 1, 9, 100},
		},
		{
			name:      "a replacement beyond what is available plus its own units is a shortage",
			given:     hist(histReserved, reserved(tx2, 5)),
			when:      res(tx1, 6, false),
			wantShort: &stock.ShortageError{BranchID: branchID, SKU: sku, Available: 2, Requested: 6},
		},
		{
			name:  "a replacement of exactly what is available plus its own units",
			given: hist(histReserved, reserved(tx2, 5)),
			when:  res(tx1, 5, false),
			then:  hist(reserved(tx1, 5)),
			want:  state{10, 10, 0, 100},
		},
		{
			// A checkout of a draft version that a newer checkout overtook.
			name:  "an older attempt than the open reservation's decides nothing",
			given: hist(histStocked, stock.StockReserved{Key: key, TransactionID: tx1, Qty: 3, Attempt: 5, At: at(2)}),
			when:  with(func(c *stock.Reserve) { c.Qty, c.Attempt = 1, 4 }),
			want:  state{10, 3, 7, 100},
		},
		{
			name:  "a newer attempt replaces the reservation",
			given: hist(histStocked, stock.StockReserved{Key: key, TransactionID: tx1, Qty: 3, Attempt: 5, At: at(2)}),
			when:  with(func(c *stock.Reserve) { c.Qty, c.Attempt = 1, 6 }),
			then:  hist(stock.StockReserved{Key: key, TransactionID: tx1, Qty: 1, Attempt: 6, At: at(2)}),
			want:  state{10, 1, 9, 100},
		},
		{
			name:  "a reservation again after a release",
			given: hist(histReserved, released(tx1, 3)),
			when:  res(tx1, 3, false),
			then:  hist(reserved(tx1, 3)),
			want:  state{10, 3, 7, 100},
		},
		{name: "after the sale", given: histSold, when: res(tx1, 3, false), wantErr: stock.ErrInvalidState},
		{name: "after the sale with another quantity", given: histSold, when: res(tx1, 1, false), wantErr: stock.ErrInvalidState},
		{name: "after the sale with negative stock allowed", given: histSold, when: res(tx1, 3, true), wantErr: stock.ErrInvalidState},
		{name: "after a sale without reservation", given: hist(histStocked, sold(tx1, 2, 0, 100)), when: res(tx1, 2, false), wantErr: stock.ErrInvalidState},
		{name: "zero qty", given: histStocked, when: with(func(c *stock.Reserve) { c.Qty = 0 }), wantField: "qty"},
		{name: "negative qty", given: histStocked, when: with(func(c *stock.Reserve) { c.Qty = -3 }), wantField: "qty"},
		{name: "qty above MaxQty", given: histStocked, when: with(func(c *stock.Reserve) { c.Qty, c.AllowNegative = stock.MaxQty+1, true }), wantField: "qty"},
		{name: "nil transaction id", given: histStocked, when: with(func(c *stock.Reserve) { c.TransactionID = [16]byte{} }), wantField: "transaction_id"},
		{name: "zero time", given: histStocked, when: with(func(c *stock.Reserve) { c.At = time.Time{} }), wantField: "at"},
	})
}

func TestRelease(t *testing.T) {
	base := stock.Release{TransactionID: tx1, Reason: "voided", At: at(3)}
	with := func(f func(*stock.Release)) command {
		c := base
		f(&c)
		return release(c)
	}
	run(t, []scenario{
		{
			name:  "an open reservation is given back",
			given: histReserved,
			when:  rel(tx1),
			then:  hist(released(tx1, 3)),
			want:  state{10, 0, 10, 100},
		},
		{
			name:  "only the transaction's own reservation is given back",
			given: hist(histReserved, reserved(tx2, 4)),
			when:  rel(tx2),
			then:  hist(released(tx2, 4)),
			want:  state{10, 3, 7, 100},
		},
		{
			name:  "the replacing quantity is what is given back",
			given: hist(histReserved, reserved(tx1, 5)),
			when:  rel(tx1),
			then:  hist(released(tx1, 5)),
			want:  state{10, 0, 10, 100},
		},
		{
			name:  "nothing reserved for the transaction decides nothing",
			given: histReserved,
			when:  rel(tx2),
			want:  state{10, 3, 7, 100},
		},
		{
			name: "nothing at all decides nothing",
			when: rel(tx1),
			want: state{0, 0, 0, 0},
		},
		{
			name:  "a second release decides nothing",
			given: hist(histReserved, released(tx1, 3)),
			when:  rel(tx1),
			want:  state{10, 0, 10, 100},
		},
		{
			name:  "a release after the sale decides nothing",
			given: histSold,
			when:  rel(tx1),
			want:  state{7, 0, 7, 100},
		},
		{name: "empty reason", given: histReserved, when: with(func(c *stock.Release) { c.Reason = "" }), wantField: "reason"},
		{name: "reason too long", given: histReserved, when: with(func(c *stock.Release) { c.Reason = long501 }), wantField: "reason"},
		{name: "reason not UTF-8", given: histReserved, when: with(func(c *stock.Release) { c.Reason = badUTF8 }), wantField: "reason"},
		{name: "nil transaction id", given: histReserved, when: with(func(c *stock.Release) { c.TransactionID = [16]byte{} }), wantField: "transaction_id"},
		{name: "zero time", given: histReserved, when: with(func(c *stock.Release) { c.At = time.Time{} }), wantField: "at"},
	})
}

func TestSell(t *testing.T) {
	base := stock.Sell{TransactionID: tx1, Qty: 3, At: at(3)}
	with := func(f func(*stock.Sell)) command {
		c := base
		f(&c)
		return sell(c)
	}
	run(t, []scenario{
		{
			name:  "a sale consumes its reservation and records cost of goods",
			given: histReserved,
			when:  sl(tx1, 3),
			then:  hist(sold(tx1, 3, 3, 100)),
			want:  state{7, 0, 7, 100},
		},
		{
			name:  "a sale of fewer units than reserved frees the rest",
			given: histReserved,
			when:  sl(tx1, 2),
			then:  hist(sold(tx1, 2, 3, 100)),
			want:  state{8, 0, 8, 100},
		},
		{
			name:  "a sale of more units than reserved",
			given: histReserved,
			when:  sl(tx1, 5),
			then:  hist(sold(tx1, 5, 3, 100)),
			want:  state{5, 0, 5, 100},
		},
		{
			name:  "a sale leaves other reservations",
			given: hist(histReserved, reserved(tx2, 4)),
			when:  sl(tx1, 3),
			then:  hist(sold(tx1, 3, 3, 100)),
			want:  state{7, 4, 3, 100},
		},
		{
			name:  "cost of goods = qty × the moving average",
			given: hist(histStocked, received(rcpt2, 5, 130, 110), reserved(tx1, 4)),
			when:  sl(tx1, 4),
			then:  hist(stock.StockSold{Key: key, TransactionID: tx1, Qty: 4, Reserved: 4, UnitCost: 110, CostOfGoods: 440, At: at(3)}),
			want:  state{11, 0, 11, 110},
		},
		{
			name:  "a sale without reservation",
			given: histStocked,
			when:  sl(tx2, 4),
			then:  hist(sold(tx2, 4, 0, 100)),
			want:  state{6, 0, 6, 100},
		},
		{
			name:  "a sale without reservation is never refused: on hand goes negative",
			given: histStocked,
			when:  sl(tx2, 12),
			then:  hist(sold(tx2, 12, 0, 100)),
			want:  state{-2, 0, -2, 100},
		},
		{
			name:  "a sale without reservation may eat other reservations' units",
			given: histReserved,
			when:  sl(tx2, 9),
			then:  hist(sold(tx2, 9, 0, 100)),
			want:  state{1, 3, -2, 100},
		},
		{
			name: "a sale of a SKU never received costs nothing",
			when: sl(tx1, 2),
			then: hist(sold(tx1, 2, 0, 0)),
			want: state{-2, 0, -2, 0},
		},
		{
			name:  "a sale after its reservation was released",
			given: hist(histReserved, released(tx1, 3)),
			when:  sl(tx1, 3),
			then:  hist(sold(tx1, 3, 0, 100)),
			want:  state{7, 0, 7, 100},
		},
		{
			name:  "a second sale decides nothing",
			given: histSold,
			when:  sl(tx1, 3),
			want:  state{7, 0, 7, 100},
		},
		{
			name:  "a second sale with another quantity decides nothing",
			given: histSold,
			when:  sl(tx1, 1),
			want:  state{7, 0, 7, 100},
		},
		{
			name:  "a sale after the units came back decides nothing",
			given: hist(histSold, returned(tx1, ref1, 3, 100, 100)),
			when:  sl(tx1, 3),
			want:  state{10, 0, 10, 100},
		},
		{name: "zero qty", given: histReserved, when: with(func(c *stock.Sell) { c.Qty = 0 }), wantField: "qty"},
		{name: "negative qty", given: histReserved, when: with(func(c *stock.Sell) { c.Qty = -3 }), wantField: "qty"},
		{name: "qty above MaxQty", given: histReserved, when: with(func(c *stock.Sell) { c.Qty = stock.MaxQty + 1 }), wantField: "qty"},
		{name: "nil transaction id", given: histReserved, when: with(func(c *stock.Sell) { c.TransactionID = [16]byte{} }), wantField: "transaction_id"},
		{name: "zero time", given: histReserved, when: with(func(c *stock.Sell) { c.At = time.Time{} }), wantField: "at"},
	})
}

func TestReturn(t *testing.T) {
	base := stock.Return{TransactionID: tx1, SourceID: ref1, Qty: 1, At: at(4)}
	with := func(f func(*stock.Return)) command {
		c := base
		f(&c)
		return ret(c)
	}
	run(t, []scenario{
		{
			name:  "a partial return at the sale's unit cost",
			given: histSold,
			when:  rt(tx1, ref1, 2),
			then:  hist(returned(tx1, ref1, 2, 100, 100)),
			want:  state{9, 0, 9, 100},
		},
		{
			name:  "qty 0 (a void) returns everything sold",
			given: histSold,
			when:  rt(tx1, tx1, 0),
			then:  hist(returned(tx1, tx1, 3, 100, 100)),
			want:  state{10, 0, 10, 100},
		},
		{
			name:  "a return is capped at what was sold",
			given: histSold,
			when:  rt(tx1, ref1, 5),
			then:  hist(returned(tx1, ref1, 3, 100, 100)),
			want:  state{10, 0, 10, 100},
		},
		{
			name:  "a return is capped at sold − returned",
			given: hist(histSold, returned(tx1, ref1, 2, 100, 100)),
			when:  rt(tx1, ref2, 5),
			then:  hist(returned(tx1, ref2, 1, 100, 100)),
			want:  state{10, 0, 10, 100},
		},
		{
			name:  "a void after a partial refund returns the rest",
			given: hist(histSold, returned(tx1, ref1, 2, 100, 100)),
			when:  rt(tx1, tx1, 0),
			then:  hist(returned(tx1, tx1, 1, 100, 100)),
			want:  state{10, 0, 10, 100},
		},
		{
			name:  "nothing left to return decides nothing",
			given: hist(histSold, returned(tx1, ref1, 3, 100, 100)),
			when:  rt(tx1, ref2, 1),
			want:  state{10, 0, 10, 100},
		},
		{
			name:  "a return of a transaction never sold here decides nothing",
			given: histSold,
			when:  rt(tx2, ref1, 1),
			want:  state{7, 0, 7, 100},
		},
		{
			name:  "a return of a transaction only reserved decides nothing",
			given: histReserved,
			when:  rt(tx1, ref1, 1),
			want:  state{10, 3, 7, 100},
		},
		{
			name:  "the same source twice decides nothing",
			given: hist(histSold, returned(tx1, ref1, 1, 100, 100)),
			when:  rt(tx1, ref1, 1),
			want:  state{8, 0, 8, 100},
		},
		{
			// A refund id is unique within its sale only: another sale's
			// refund of the same id returns its own units.
			name:  "one source in two sales returns for each",
			given: hist(received(rcpt1, 10, 100, 100), sold(tx1, 3, 0, 100), sold(tx2, 2, 0, 100), returned(tx1, ref1, 1, 100, 100)),
			when:  rt(tx2, ref1, 1),
			then:  hist(returned(tx2, ref1, 1, 100, 100)),
			want:  state{7, 0, 7, 100},
		},
		{
			name:  "a source that was a receipt's id returns",
			given: hist(received(rcpt1, 10, 100, 100), sold(tx1, 3, 0, 100)),
			when:  rt(tx1, rcpt1, 1),
			then:  hist(returned(tx1, rcpt1, 1, 100, 100)),
			want:  state{8, 0, 8, 100},
		},
		{
			name:  "a return on negative on hand sets the average to the sale's cost",
			given: hist(received(rcpt1, 2, 100, 100), sold(tx1, 2, 0, 100), received(rcpt2, 1, 300, 300), sold(tx2, 4, 0, 300)),
			when:  rt(tx1, ref1, 2),
			then:  hist(returned(tx1, ref1, 2, 100, 100)),
			want:  state{-1, 0, -1, 100},
		},
		{
			name:  "qty MaxQty is capped at what was sold",
			given: histSold,
			when:  rt(tx1, ref1, stock.MaxQty),
			then:  hist(returned(tx1, ref1, 3, 100, 100)),
			want:  state{10, 0, 10, 100},
		},
		{name: "negative qty", given: histSold, when: with(func(c *stock.Return) { c.Qty = -1 }), wantField: "qty"},
		{name: "qty above MaxQty", given: histSold, when: with(func(c *stock.Return) { c.Qty = stock.MaxQty + 1 }), wantField: "qty"},
		{name: "nil source id", given: histSold, when: with(func(c *stock.Return) { c.SourceID = [16]byte{} }), wantField: "source_id"},
		{name: "nil transaction id", given: histSold, when: with(func(c *stock.Return) { c.TransactionID = [16]byte{} }), wantField: "transaction_id"},
		{name: "zero time", given: histSold, when: with(func(c *stock.Return) { c.At = time.Time{} }), wantField: "at"},
	})
}

func TestTransferOut(t *testing.T) {
	base := stock.TransferOut{TransferID: xfer1, ToBranchID: otherBranch, Qty: 1, By: "clerk-1", At: at(5)}
	with := func(f func(*stock.TransferOut)) command {
		c := base
		f(&c)
		return transferOut(c)
	}
	run(t, []scenario{
		{
			name:  "units leave at the average cost",
			given: hist(histStocked, received(rcpt2, 5, 130, 110)),
			when:  out(xfer1, 4, false),
			then:  hist(transferredOut(xfer1, 4, 110)),
			want:  state{11, 0, 11, 110},
		},
		{
			name:  "every available unit",
			given: histReserved,
			when:  out(xfer1, 7, false),
			then:  hist(transferredOut(xfer1, 7, 100)),
			want:  state{3, 3, 0, 100},
		},
		{
			name:      "beyond available is a shortage",
			given:     histReserved,
			when:      out(xfer1, 8, false),
			wantShort: &stock.ShortageError{BranchID: branchID, SKU: sku, Available: 7, Requested: 8},
		},
		{
			name:  "beyond available with negative stock allowed",
			given: histReserved,
			when:  out(xfer1, 8, true),
			then:  hist(transferredOut(xfer1, 8, 100)),
			want:  state{2, 3, -1, 100},
		},
		{
			name:      "a SKU never received is a shortage",
			when:      out(xfer1, 1, false),
			wantShort: &stock.ShortageError{BranchID: branchID, SKU: sku, Available: 0, Requested: 1},
		},
		{
			name:  "a repeated transfer id decides nothing",
			given: hist(histStocked, transferredOut(xfer1, 4, 100)),
			when:  out(xfer1, 4, false),
			want:  state{6, 0, 6, 100},
		},
		{
			name:  "a repeated transfer id that would now be short decides nothing",
			given: hist(histStocked, transferredOut(xfer1, 10, 100)),
			when:  out(xfer1, 10, false),
			want:  state{0, 0, 0, 100},
		},
		{name: "to its own branch", given: histStocked, when: with(func(c *stock.TransferOut) { c.ToBranchID = branchID }), wantField: "to_branch_id"},
		{name: "to a nil branch", given: histStocked, when: with(func(c *stock.TransferOut) { c.ToBranchID = [16]byte{} }), wantField: "to_branch_id"},
		{name: "zero qty", given: histStocked, when: with(func(c *stock.TransferOut) { c.Qty = 0 }), wantField: "qty"},
		{name: "negative qty", given: histStocked, when: with(func(c *stock.TransferOut) { c.Qty = -1 }), wantField: "qty"},
		{name: "qty above MaxQty", given: histStocked, when: with(func(c *stock.TransferOut) { c.Qty, c.AllowNegative = stock.MaxQty+1, true }), wantField: "qty"},
		{name: "empty by", given: histStocked, when: with(func(c *stock.TransferOut) { c.By = "" }), wantField: "by"},
		{name: "by too long", given: histStocked, when: with(func(c *stock.TransferOut) { c.By = long201 }), wantField: "by"},
		{name: "nil transfer id", given: histStocked, when: with(func(c *stock.TransferOut) { c.TransferID = [16]byte{} }), wantField: "transfer_id"},
		{name: "zero time", given: histStocked, when: with(func(c *stock.TransferOut) { c.At = time.Time{} }), wantField: "at"},
	})
}

func TestTransferIn(t *testing.T) {
	base := stock.TransferIn{TransferID: xfer1, FromBranchID: otherBranch, Qty: 1, UnitCost: 100, At: at(5)}
	with := func(f func(*stock.TransferIn)) command {
		c := base
		f(&c)
		return transferIn(c)
	}
	run(t, []scenario{
		{
			name: "into an empty ledger sets the average to the source's cost",
			when: in(xfer1, 4, 115),
			then: hist(transferredIn(xfer1, 4, 115, 115)),
			want: state{4, 0, 4, 115},
		},
		{
			name:  "into a stocked ledger moves the average",
			given: histStocked,
			when:  in(xfer1, 10, 130),
			then:  hist(transferredIn(xfer1, 10, 130, 115)),
			want:  state{20, 0, 20, 115},
		},
		{
			name:  "into a reserved ledger leaves the reservation",
			given: histReserved,
			when:  in(xfer1, 10, 100),
			then:  hist(transferredIn(xfer1, 10, 100, 100)),
			want:  state{20, 3, 17, 100},
		},
		{
			name:  "a repeated transfer id decides nothing",
			given: hist(histStocked, transferredIn(xfer1, 10, 130, 115)),
			when:  in(xfer1, 10, 130),
			want:  state{20, 0, 20, 115},
		},
		{
			// A transfer id is unique at its source ledger only: one slip
			// may pull the same SKU from two branches. Refused here, the
			// second transfer's units, already gone from their branch,
			// would be lost.
			name:  "one transfer id from two branches is received from each",
			given: hist(histStocked, transferredIn(xfer1, 10, 130, 115)),
			when:  transferIn(stock.TransferIn{TransferID: xfer1, FromBranchID: thirdBranch, Qty: 5, UnitCost: 115, At: at(5)}),
			then:  hist(stock.StockTransferredIn{Key: key, TransferID: xfer1, FromBranchID: thirdBranch, Qty: 5, UnitCost: 115, AvgCost: 115, At: at(5)}),
			want:  state{25, 0, 25, 115},
		},
		{
			name:  "a transfer id this ledger sent out is received back",
			given: hist(histStocked, transferredOut(xfer1, 4, 100)),
			when:  in(xfer1, 4, 100),
			then:  hist(transferredIn(xfer1, 4, 100, 100)),
			want:  state{10, 0, 10, 100},
		},
		{name: "from its own branch", given: histStocked, when: with(func(c *stock.TransferIn) { c.FromBranchID = branchID }), wantField: "from_branch_id"},
		{name: "from a nil branch", given: histStocked, when: with(func(c *stock.TransferIn) { c.FromBranchID = [16]byte{} }), wantField: "from_branch_id"},
		{name: "zero qty", given: histStocked, when: with(func(c *stock.TransferIn) { c.Qty = 0 }), wantField: "qty"},
		{name: "negative qty", given: histStocked, when: with(func(c *stock.TransferIn) { c.Qty = -1 }), wantField: "qty"},
		{name: "qty above MaxQty", given: histStocked, when: with(func(c *stock.TransferIn) { c.Qty = stock.MaxQty + 1 }), wantField: "qty"},
		{name: "negative unit cost", given: histStocked, when: with(func(c *stock.TransferIn) { c.UnitCost = -1 }), wantField: "unit_cost"},
		{name: "unit cost above MaxAmount", given: histStocked, when: with(func(c *stock.TransferIn) { c.UnitCost = money.MaxAmount + 1 }), wantField: "unit_cost"},
		{name: "nil transfer id", given: histStocked, when: with(func(c *stock.TransferIn) { c.TransferID = [16]byte{} }), wantField: "transfer_id"},
		{name: "zero time", given: histStocked, when: with(func(c *stock.TransferIn) { c.At = time.Time{} }), wantField: "at"},
	})
}

// TestTimesStoredInUTC checks that every command stores its time in UTC,
// whatever zone the caller's clock reads in.
func TestTimesStoredInUTC(t *testing.T) {
	wib := at(9).In(time.FixedZone("WIB", 7*3600))
	cmds := []struct {
		name string
		cmd  command
	}{
		{"Receive", receive(stock.Receive{ReceiptID: rcpt2, Qty: 1, UnitCost: 1, By: "c", At: wib})},
		{"Adjust", adjust(stock.Adjust{AdjustmentID: adj1, Delta: 1, Reason: "r", By: "c", At: wib})},
		{"Reserve", reserve(stock.Reserve{TransactionID: tx2, Qty: 1, At: wib})},
		{"Release", release(stock.Release{TransactionID: tx3, Reason: "r", At: wib})},
		{"Sell", sell(stock.Sell{TransactionID: tx2, Qty: 1, At: wib})},
		{"Return", ret(stock.Return{TransactionID: tx1, SourceID: ref1, At: wib})},
		{"TransferOut", transferOut(stock.TransferOut{TransferID: xfer1, ToBranchID: otherBranch, Qty: 1, By: "c", At: wib})},
		{"TransferIn", transferIn(stock.TransferIn{TransferID: xfer2, FromBranchID: otherBranch, Qty: 1, UnitCost: 1, At: wib})},
	}
	for _, c := range cmds {
		t.Run(c.name, func(t *testing.T) {
			l := load(t, key, hist(histSold, reserved(tx3, 1)))
			events, err := c.cmd(l)
			if err != nil || len(events) != 1 {
				t.Fatalf("events %s, err %v", show(events), err)
			}
			got := reflect.ValueOf(events[0]).FieldByName("At").Interface().(time.Time)
			if got != at(9) || got.Location() != time.UTC {
				t.Errorf("At = %v (%v), want %v in UTC", got, got.Location(), at(9))
			}
		})
	}
}

// A release for an abandoned checkout takes only what checkouts of older
// draft versions reserved: a newer checkout of the same draft keeps its
// units.
func TestReleaseBeforeAttempt(t *testing.T) {
	l := load(t, key, hist(histStocked))
	decide := func(events []stock.Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if err := l.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	decide(l.Reserve(stock.Reserve{TransactionID: tx1, Qty: 2, Attempt: 3, At: at(2)}))
	// The same quantity by a newer attempt is a new reservation event.
	events, err := l.Reserve(stock.Reserve{TransactionID: tx1, Qty: 2, Attempt: 5, At: at(2)})
	if err != nil || len(events) != 1 {
		t.Fatalf("re-reserve by a newer attempt: %v, %v", events, err)
	}
	decide(events, nil)
	if events, err := l.Release(stock.Release{TransactionID: tx1, Reason: "abandoned", Before: 5, At: at(3)}); err != nil || len(events) != 0 {
		t.Fatalf("release before attempt 5 of a reservation by attempt 5: %v, %v", events, err)
	}
	if l.Reserved() != 2 {
		t.Fatalf("reserved %d, want 2", l.Reserved())
	}
	decide(l.Release(stock.Release{TransactionID: tx1, Reason: "abandoned", Before: 6, At: at(3)}))
	if l.Reserved() != 0 {
		t.Fatalf("reserved %d after the release, want 0", l.Reserved())
	}
}
