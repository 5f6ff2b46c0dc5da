package transaction_test

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
	tx "pos/domain/transaction"
)

// Fixed ids and times: the aggregate reads no clock and no random source,
// so every expected event is a literal.
var (
	txID       = uuid.MustParse("0193a5c0-0000-7000-8000-000000000001")
	merchantID = uuid.MustParse("0193a5c0-0000-7000-8000-0000000000aa")
	branchID   = uuid.MustParse("0193a5c0-0000-7000-8000-0000000000bb")
	lineA      = uuid.MustParse("0193a5c0-0000-7000-8000-00000000a001")
	lineB      = uuid.MustParse("0193a5c0-0000-7000-8000-00000000a002")
	lineC      = uuid.MustParse("0193a5c0-0000-7000-8000-00000000a003")
	disc1      = uuid.MustParse("0193a5c0-0000-7000-8000-00000000d001")
	disc2      = uuid.MustParse("0193a5c0-0000-7000-8000-00000000d002")
	payCard    = uuid.MustParse("0193a5c0-0000-7000-8000-00000000c001")
	payCash    = uuid.MustParse("0193a5c0-0000-7000-8000-00000000c002")
	payNew     = uuid.MustParse("0193a5c0-0000-7000-8000-00000000c003")
	refund1    = uuid.MustParse("0193a5c0-0000-7000-8000-00000000e001")
	refund2    = uuid.MustParse("0193a5c0-0000-7000-8000-00000000e002")
	refund3    = uuid.MustParse("0193a5c0-0000-7000-8000-00000000e003")

	t0 = time.Date(2025, 3, 1, 3, 0, 0, 0, time.UTC)
)

// at returns t0 plus n minutes: the time of the n-th step of a scenario.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }

// The building blocks of histories. The default sale is IDR, tax-exclusive,
// one line of 2 × 5000 at 0 % tax: grand total 10000.
var (
	evOpened   = tx.TransactionOpened{TransactionID: txID, MerchantID: merchantID, BranchID: branchID, Code: "T-0001", Currency: "IDR", OpenedAt: t0, OpenedBy: "cashier-1"}
	evAddA     = tx.ItemAdded{LineID: lineA, SKU: "SKU-A", Name: "Coffee", Qty: 2, UnitPrice: 5000, At: at(1)}
	evCheckout = tx.CheckedOut{Subtotal: 10000, GrandTotal: 10000, Currency: "IDR", At: at(2),
		Lines: []tx.LineTotals{{LineID: lineA, Qty: 2, Gross: 10000, Net: 10000, Total: 10000}}}
	evCardPending = tx.PaymentAdded{PaymentID: payCard, Method: tx.MethodCard, Amount: 4000, Applied: 4000, Status: tx.PaymentStatusPending, At: at(3)}
	evCashAll     = tx.PaymentAdded{PaymentID: payCash, Method: tx.MethodCash, Amount: 10000, Applied: 10000, Status: tx.PaymentStatusSettled, At: at(3)}
	evPaid        = tx.TransactionPaid{PaidTotal: 10000, At: at(3)}
	evCompleted   = tx.TransactionCompleted{At: at(4)}
	evVoided      = tx.TransactionVoided{Reason: "wrong customer", PreviousStatus: tx.StatusDraft, At: at(4)}
	evRefund3000  = tx.RefundIssued{RefundID: refund1, Amount: 3000, Reason: "damaged", Status: tx.StatusPartiallyRefunded, At: at(5)}
	evRefundAll   = tx.RefundIssued{RefundID: refund1, Amount: 10000, Reason: "returned", Status: tx.StatusRefunded, At: at(5)}
)

// hist concatenates histories and events into one history.
func hist(parts ...any) []tx.Event {
	var out []tx.Event
	for _, p := range parts {
		switch p := p.(type) {
		case tx.Event:
			out = append(out, p)
		case []tx.Event:
			out = append(out, p...)
		default:
			panic(fmt.Sprintf("hist: %T", p))
		}
	}
	return out
}

// One history per status.
var (
	histNone              []tx.Event
	histDraft             = hist(evOpened, evAddA)
	histPending           = hist(histDraft, evCheckout, evCardPending)
	histPaid              = hist(histDraft, evCheckout, evCashAll, evPaid)
	histCompleted         = hist(histPaid, evCompleted)
	histVoided            = hist(histDraft, evVoided)
	histPartiallyRefunded = hist(histPaid, evRefund3000)
	histRefunded          = hist(histPaid, evRefundAll)
)

// command is the "when" of a scenario.
type command func(*tx.Transaction) ([]tx.Event, error)

// scenario reads: given this history, when this command, then these events
// or this error.
type scenario struct {
	name      string
	given     []tx.Event
	when      command
	then      []tx.Event
	wantErr   error
	wantField string // for validation errors, the field named
}

// run runs scenarios. Beyond comparing the outcome it checks that the
// command changed nothing (commands only decide), that the decided events
// apply, and that each survives a JSON round trip through Decode.
func run(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { check(t, sc) })
	}
}

func check(t *testing.T, sc scenario) ([]tx.Event, *tx.Transaction) {
	t.Helper()
	agg := load(t, sc.given)
	before := load(t, sc.given)
	got, err := sc.when(agg)
	if !reflect.DeepEqual(agg, before) {
		t.Errorf("the command changed the aggregate's state")
	}
	if sc.wantErr != nil || err != nil {
		if !errors.Is(err, sc.wantErr) {
			t.Fatalf("err = %v, want %v", err, sc.wantErr)
		}
		if got != nil {
			t.Errorf("events = %s alongside an error", show(got))
		}
		if sc.wantField != "" {
			var ve *tx.ValidationError
			if !errors.As(err, &ve) || ve.Field != sc.wantField {
				t.Errorf("err = %v, want a validation error on %q", err, sc.wantField)
			}
		}
		return nil, agg
	}
	if sc.then != nil && !reflect.DeepEqual(got, sc.then) {
		t.Fatalf("events:\n got %s\nwant %s", show(got), show(sc.then))
	}
	roundTrip(t, got)
	for _, e := range got {
		if err := agg.Apply(e); err != nil {
			t.Fatalf("apply decided event %s: %v", e.EventType(), err)
		}
	}
	if want := uint64(len(sc.given) + len(got)); agg.Version() != want {
		t.Errorf("version = %d, want %d", agg.Version(), want)
	}
	return got, agg
}

func load(t *testing.T, history []tx.Event) *tx.Transaction {
	t.Helper()
	agg, err := tx.Load(history)
	if err != nil {
		t.Fatalf("load given history: %v", err)
	}
	return agg
}

// roundTrip checks that events survive encoding and Decode unchanged.
func roundTrip(t *testing.T, events []tx.Event) {
	t.Helper()
	for _, e := range events {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("marshal %s: %v", e.EventType(), err)
		}
		back, err := tx.Decode(e.EventType(), data)
		if err != nil {
			t.Fatalf("decode %s: %v", e.EventType(), err)
		}
		if !reflect.DeepEqual(back, e) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", e.EventType(), back, e)
		}
	}
}

// do runs commands on a history and returns the longer history, failing
// the test on any error: a shorthand for building sales in rounding tests.
func do(t *testing.T, history []tx.Event, cmds ...command) []tx.Event {
	t.Helper()
	agg := load(t, history)
	out := append([]tx.Event(nil), history...)
	for i, c := range cmds {
		events, err := c(agg)
		if err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
		for _, e := range events {
			if err := agg.Apply(e); err != nil {
				t.Fatalf("command %d: apply: %v", i, err)
			}
		}
		out = append(out, events...)
	}
	return out
}

func show(events []tx.Event) string {
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

// Command shorthands with valid inputs; scenarios override what they test.

func open(c tx.Open) command {
	return func(a *tx.Transaction) ([]tx.Event, error) { return a.Open(c) }
}

func validOpen() tx.Open {
	return tx.Open{TransactionID: txID, MerchantID: merchantID, BranchID: branchID, Code: "T-0001", Currency: "IDR", By: "cashier-1", At: t0}
}

func addItem(c tx.AddItem) command {
	return func(a *tx.Transaction) ([]tx.Event, error) { return a.AddItem(c) }
}

func item(id uuid.UUID, qty int64, price int64, rateBps int64) command {
	return addItem(tx.AddItem{LineID: id, SKU: "SKU-" + id.String()[34:], Name: "Item", Qty: qty, UnitPrice: amt(price), TaxRateBps: rateBps, At: at(1)})
}

func removeItem(id uuid.UUID) command {
	return func(a *tx.Transaction) ([]tx.Event, error) {
		return a.RemoveItem(tx.RemoveItem{LineID: id, At: at(1)})
	}
}

func applyDiscount(c tx.ApplyDiscount) command {
	return func(a *tx.Transaction) ([]tx.Event, error) { return a.ApplyDiscount(c) }
}

func percentOff(id uuid.UUID, bps int64) command {
	return applyDiscount(tx.ApplyDiscount{DiscountID: id, Kind: tx.DiscountPercent, Bps: bps, Reason: "promo", At: at(1)})
}

func amountOff(id uuid.UUID, amount int64) command {
	return applyDiscount(tx.ApplyDiscount{DiscountID: id, Kind: tx.DiscountAmount, Amount: amt(amount), Reason: "promo", At: at(1)})
}

func checkout() command {
	return func(a *tx.Transaction) ([]tx.Event, error) { return a.Checkout(tx.Checkout{At: at(2)}) }
}

func pay(id uuid.UUID, m tx.Method, amount int64) command {
	return addPayment(tx.AddPayment{PaymentID: id, Method: m, Amount: amt(amount), At: at(3)})
}

func addPayment(c tx.AddPayment) command {
	return func(a *tx.Transaction) ([]tx.Event, error) { return a.AddPayment(c) }
}

func confirm(id uuid.UUID) command {
	return func(a *tx.Transaction) ([]tx.Event, error) {
		return a.ConfirmPayment(tx.ConfirmPayment{PaymentID: id, GatewayRef: "gw-1", At: at(4)})
	}
}

func decline(id uuid.UUID) command {
	return func(a *tx.Transaction) ([]tx.Event, error) {
		return a.DeclinePayment(tx.DeclinePayment{PaymentID: id, Reason: "insufficient funds", At: at(4)})
	}
}

func complete() command {
	return func(a *tx.Transaction) ([]tx.Event, error) { return a.Complete(tx.Complete{At: at(4)}) }
}

func void(reason string) command {
	return func(a *tx.Transaction) ([]tx.Event, error) { return a.Void(tx.Void{Reason: reason, At: at(4)}) }
}

func refund(c tx.Refund) command {
	return func(a *tx.Transaction) ([]tx.Event, error) { return a.Refund(c) }
}

func refundAmount(id uuid.UUID, amount int64) command {
	return refund(tx.Refund{RefundID: id, Reason: "returned", Amount: amt(amount), At: at(5)})
}

func refundLines(id uuid.UUID, lines ...tx.RefundLine) command {
	return refund(tx.Refund{RefundID: id, Reason: "returned", Lines: lines, At: at(5)})
}

// amt converts test literals to money.Amount.
func amt(v int64) money.Amount { return money.Amount(v) }

// nthID returns a distinct, deterministic id for index i within kind.
func nthID(kind byte, i int) uuid.UUID {
	var id uuid.UUID
	id[0], id[6], id[8] = kind, 0x70, 0x80
	id[12], id[13], id[14], id[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return id
}
