package stock_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/domain/money"
	"pos/domain/stock"
)

// Fixed ids and times: the ledger reads no clock and no random source, so
// every expected event is a literal.
var (
	merchantID  = uuid.MustParse("0193a5c0-0000-7000-8000-0000000000aa")
	branchID    = uuid.MustParse("0193a5c0-0000-7000-8000-0000000000bb")
	otherBranch = uuid.MustParse("0193a5c0-0000-7000-8000-0000000000bc")
	thirdBranch = uuid.MustParse("0193a5c0-0000-7000-8000-0000000000bd")
	otherMerch  = uuid.MustParse("0193a5c0-0000-7000-8000-0000000000ab")

	rcpt1 = uuid.MustParse("0193a5c0-0000-7000-8000-00000000f001")
	rcpt2 = uuid.MustParse("0193a5c0-0000-7000-8000-00000000f002")
	rcpt3 = uuid.MustParse("0193a5c0-0000-7000-8000-00000000f003")
	adj1  = uuid.MustParse("0193a5c0-0000-7000-8000-00000000ad01")
	adj2  = uuid.MustParse("0193a5c0-0000-7000-8000-00000000ad02")
	tx1   = uuid.MustParse("0193a5c0-0000-7000-8000-000000000001")
	tx2   = uuid.MustParse("0193a5c0-0000-7000-8000-000000000002")
	tx3   = uuid.MustParse("0193a5c0-0000-7000-8000-000000000003")
	ref1  = uuid.MustParse("0193a5c0-0000-7000-8000-00000000e001")
	ref2  = uuid.MustParse("0193a5c0-0000-7000-8000-00000000e002")
	xfer1 = uuid.MustParse("0193a5c0-0000-7000-8000-00000000c001")
	xfer2 = uuid.MustParse("0193a5c0-0000-7000-8000-00000000c002")

	t0 = time.Date(2025, 3, 1, 3, 0, 0, 0, time.UTC)
)

const sku = "SKU-A"

// key is the ledger most scenarios run on; otherKey is the same SKU in
// another branch (the other end of a transfer).
var (
	key      = stock.NewKey(merchantID, branchID, sku)
	otherKey = stock.NewKey(merchantID, otherBranch, sku)
)

// at returns t0 plus n minutes: the time of the n-th step of a scenario.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }

// amt converts test literals to money.Amount.
func amt(v int64) money.Amount { return money.Amount(v) }

// Event builders for the default ledger.

func received(id uuid.UUID, qty, unit, avg int64) stock.StockReceived {
	return stock.StockReceived{Key: key, ReceiptID: id, Qty: qty, UnitCost: amt(unit), AvgCost: amt(avg), By: "clerk-1", At: at(1)}
}

func adjusted(id uuid.UUID, delta int64) stock.StockAdjusted {
	return stock.StockAdjusted{Key: key, AdjustmentID: id, Delta: delta, Reason: "count", By: "clerk-1", At: at(1)}
}

func reserved(id uuid.UUID, qty int64) stock.StockReserved {
	return stock.StockReserved{Key: key, TransactionID: id, Qty: qty, Attempt: 1, At: at(2)}
}

func released(id uuid.UUID, qty int64) stock.ReservationReleased {
	return stock.ReservationReleased{Key: key, TransactionID: id, Qty: qty, Reason: "voided", At: at(3)}
}

func sold(id uuid.UUID, qty, fromReserved, unit int64) stock.StockSold {
	return stock.StockSold{Key: key, TransactionID: id, Qty: qty, Reserved: fromReserved, UnitCost: amt(unit), CostOfGoods: amt(qty * unit), At: at(3)}
}

func returned(id, source uuid.UUID, qty, unit, avg int64) stock.StockReturned {
	return stock.StockReturned{Key: key, TransactionID: id, SourceID: source, Qty: qty, UnitCost: amt(unit), AvgCost: amt(avg), At: at(4)}
}

func transferredOut(id uuid.UUID, qty, unit int64) stock.StockTransferredOut {
	return stock.StockTransferredOut{Key: key, TransferID: id, ToBranchID: otherBranch, Qty: qty, UnitCost: amt(unit), By: "clerk-1", At: at(5)}
}

func transferredIn(id uuid.UUID, qty, unit, avg int64) stock.StockTransferredIn {
	return stock.StockTransferredIn{Key: key, TransferID: id, FromBranchID: otherBranch, Qty: qty, UnitCost: amt(unit), AvgCost: amt(avg), At: at(5)}
}

// hist concatenates histories and events into one history.
func hist(parts ...any) []stock.Event {
	var out []stock.Event
	for _, p := range parts {
		switch p := p.(type) {
		case stock.Event:
			out = append(out, p)
		case []stock.Event:
			out = append(out, p...)
		default:
			panic(fmt.Sprintf("hist: %T", p))
		}
	}
	return out
}

// Building-block histories.
var (
	histNone     []stock.Event
	histStocked  = hist(received(rcpt1, 10, 100, 100))      // 10 on hand @ 100
	histReserved = hist(histStocked, reserved(tx1, 3))      // 3 of them reserved by tx1
	histSold     = hist(histReserved, sold(tx1, 3, 3, 100)) // tx1 sold its 3: 7 on hand
)

// state is what a ledger reports.
type state struct {
	onHand, reserved, available int64
	avg                         int64
}

func stateOf(l *stock.Ledger) state {
	return state{l.OnHand(), l.Reserved(), l.Available(), int64(l.AvgCost())}
}

// command is the "when" of a scenario.
type command func(*stock.Ledger) ([]stock.Event, error)

// scenario reads: given this history, when this command, then these events
// (nil: none at all) and this state, or this error.
type scenario struct {
	name      string
	key       *stock.Key // the ledger's key; the default key when nil
	given     []stock.Event
	when      command
	then      []stock.Event
	want      state // after applying then
	wantErr   error
	wantField string               // for validation errors, the field named
	wantShort *stock.ShortageError // for shortages, the report
}

func run(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { check(t, sc) })
	}
}

// check runs one scenario. Beyond comparing the outcome it checks that the
// command changed nothing (commands only decide), that the decided events
// apply and survive a JSON round trip, and the state and version after.
func check(t *testing.T, sc scenario) *stock.Ledger {
	t.Helper()
	k := key
	if sc.key != nil {
		k = *sc.key
	}
	l := load(t, k, sc.given)
	before := l.Clone()
	got, err := sc.when(l)
	if !reflect.DeepEqual(l, before) {
		t.Errorf("the command changed the ledger's state")
	}
	if sc.wantErr != nil || sc.wantShort != nil || sc.wantField != "" || err != nil {
		checkErr(t, err, sc.wantErr, sc.wantField, sc.wantShort)
		if got != nil {
			t.Errorf("events = %s alongside an error", show(got))
		}
		return l
	}
	if len(sc.then) == 0 {
		if len(got) != 0 {
			t.Fatalf("events = %s, want none", show(got))
		}
	} else if !reflect.DeepEqual(got, sc.then) {
		t.Fatalf("events:\n got %s\nwant %s", show(got), show(sc.then))
	}
	roundTrip(t, got)
	applyAll(t, l, got)
	if s := stateOf(l); s != sc.want {
		t.Errorf("state = %+v, want %+v", s, sc.want)
	}
	if s := sc.want; s.available != s.onHand-s.reserved {
		t.Errorf("bad fixture: available %d ≠ on hand %d − reserved %d", s.available, s.onHand, s.reserved)
	}
	if want := uint64(len(sc.given) + len(got)); l.Version() != want {
		t.Errorf("version = %d, want %d", l.Version(), want)
	}
	return l
}

// checkErr checks err against the expected sentinel, validation field and
// shortage report.
func checkErr(t *testing.T, err, wantErr error, wantField string, wantShort *stock.ShortageError) {
	t.Helper()
	if wantShort != nil && wantErr == nil {
		wantErr = stock.ErrInsufficientStock
	}
	if wantField != "" && wantErr == nil {
		wantErr = stock.ErrInvalid
	}
	if !errors.Is(err, wantErr) {
		t.Fatalf("err = %v, want %v", err, wantErr)
	}
	if wantField != "" {
		var ve *stock.ValidationError
		if !errors.As(err, &ve) || ve.Field != wantField {
			t.Errorf("err = %v, want a validation error on %q", err, wantField)
		}
	}
	if wantShort != nil {
		var se *stock.ShortageError
		if !errors.As(err, &se) {
			t.Fatalf("err = %v (%T), want a *ShortageError", err, err)
		}
		if *se != *wantShort {
			t.Errorf("shortage = %+v, want %+v", *se, *wantShort)
		}
	}
}

// load builds the ledger of k from history.
func load(t testing.TB, k stock.Key, history []stock.Event) *stock.Ledger {
	t.Helper()
	l := stock.New(k)
	applyAll(t, l, history)
	return l
}

func applyAll(t testing.TB, l *stock.Ledger, events []stock.Event) {
	t.Helper()
	for _, e := range events {
		if err := l.Apply(e); err != nil {
			t.Fatalf("apply %s: %v", e.EventType(), err)
		}
	}
}

// roundTrip checks that events survive encoding and Decode unchanged.
func roundTrip(t testing.TB, events []stock.Event) {
	t.Helper()
	for _, e := range events {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("marshal %s: %v", e.EventType(), err)
		}
		back, err := stock.Decode(e.EventType(), data)
		if err != nil {
			t.Fatalf("decode %s: %v", e.EventType(), err)
		}
		if !reflect.DeepEqual(back, e) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", e.EventType(), back, e)
		}
	}
}

// do runs commands on the ledger of k and returns the longer history,
// failing the test on any error.
func do(t testing.TB, k stock.Key, history []stock.Event, cmds ...command) []stock.Event {
	t.Helper()
	l := load(t, k, history)
	out := append([]stock.Event(nil), history...)
	for i, c := range cmds {
		events, err := c(l)
		if err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
		applyAll(t, l, events)
		out = append(out, events...)
	}
	return out
}

func show(events []stock.Event) string {
	var b strings.Builder
	b.WriteString("[")
	for i, e := range events {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s%+v", e.EventType(), e)
	}
	b.WriteString("]")
	return b.String()
}

// Command shorthands with valid inputs; scenarios override what they test
// by building the command literal themselves.

func receive(c stock.Receive) command {
	return func(l *stock.Ledger) ([]stock.Event, error) { return l.Receive(c) }
}

func recv(id uuid.UUID, qty, unit int64) command {
	return receive(stock.Receive{ReceiptID: id, Qty: qty, UnitCost: amt(unit), By: "clerk-1", At: at(1)})
}

func adjust(c stock.Adjust) command {
	return func(l *stock.Ledger) ([]stock.Event, error) { return l.Adjust(c) }
}

func adj(id uuid.UUID, delta int64, allowNegative bool) command {
	return adjust(stock.Adjust{AdjustmentID: id, Delta: delta, Reason: "count", By: "clerk-1", AllowNegative: allowNegative, At: at(1)})
}

func reserve(c stock.Reserve) command {
	return func(l *stock.Ledger) ([]stock.Event, error) { return l.Reserve(c) }
}

func res(id uuid.UUID, qty int64, allowNegative bool) command {
	return reserve(stock.Reserve{TransactionID: id, Qty: qty, Attempt: 1, AllowNegative: allowNegative, At: at(2)})
}

func release(c stock.Release) command {
	return func(l *stock.Ledger) ([]stock.Event, error) { return l.Release(c) }
}

func rel(id uuid.UUID) command {
	return release(stock.Release{TransactionID: id, Reason: "voided", At: at(3)})
}

func sell(c stock.Sell) command {
	return func(l *stock.Ledger) ([]stock.Event, error) { return l.Sell(c) }
}

func sl(id uuid.UUID, qty int64) command {
	return sell(stock.Sell{TransactionID: id, Qty: qty, At: at(3)})
}

func ret(c stock.Return) command {
	return func(l *stock.Ledger) ([]stock.Event, error) { return l.Return(c) }
}

func rt(id, source uuid.UUID, qty int64) command {
	return ret(stock.Return{TransactionID: id, SourceID: source, Qty: qty, At: at(4)})
}

func transferOut(c stock.TransferOut) command {
	return func(l *stock.Ledger) ([]stock.Event, error) { return l.TransferOut(c) }
}

func out(id uuid.UUID, qty int64, allowNegative bool) command {
	return transferOut(stock.TransferOut{TransferID: id, ToBranchID: otherBranch, Qty: qty, AllowNegative: allowNegative, By: "clerk-1", At: at(5)})
}

func transferIn(c stock.TransferIn) command {
	return func(l *stock.Ledger) ([]stock.Event, error) { return l.TransferIn(c) }
}

func in(id uuid.UUID, qty, unit int64) command {
	return transferIn(stock.TransferIn{TransferID: id, FromBranchID: otherBranch, Qty: qty, UnitCost: amt(unit), At: at(5)})
}

// nthID returns a distinct, deterministic id for index i within kind.
func nthID(kind byte, i int) uuid.UUID {
	var id uuid.UUID
	id[0], id[6], id[8] = kind, 0x70, 0x80
	id[12], id[13], id[14], id[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return id
}
