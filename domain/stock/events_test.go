package stock_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/google/uuid"

	"pos/domain/stock"
)

// allEvents holds one value of every event type, every field set.
var allEvents = []stock.Event{
	received(rcpt1, 10, 100, 100),
	adjusted(adj1, -2),
	reserved(tx1, 3),
	released(tx1, 3),
	sold(tx1, 3, 3, 100),
	returned(tx1, ref1, 2, 100, 100),
	transferredOut(xfer1, 4, 100),
	transferredIn(xfer2, 4, 120, 110),
}

func TestEventTypes(t *testing.T) {
	var names []string
	for _, e := range allEvents {
		names = append(names, stock.TypeName(e))
		if stock.TypeName(e) != e.EventType() || e.EventType() != reflect.TypeOf(e).Name() {
			t.Errorf("%T: TypeName %q, EventType %q", e, stock.TypeName(e), e.EventType())
		}
		if e.LedgerKey() != key {
			t.Errorf("%T: LedgerKey %+v", e, e.LedgerKey())
		}
	}
	if got := stock.EventTypes(); !slices.Equal(got, names) {
		t.Errorf("EventTypes() = %v, want %v", got, names)
	}
	if stock.SchemaVersion != 1 {
		t.Errorf("SchemaVersion = %d", stock.SchemaVersion)
	}
}

func TestEventsRoundTrip(t *testing.T) {
	roundTrip(t, allEvents)
	// Every field carries a non-zero value, so a dropped or misnamed JSON
	// field cannot pass unnoticed.
	for _, e := range allEvents {
		v := reflect.ValueOf(e)
		for i := range v.NumField() {
			if v.Field(i).IsZero() {
				t.Errorf("fixture %s leaves %s zero", e.EventType(), v.Type().Field(i).Name)
			}
		}
	}
}

func TestDecodeRefusals(t *testing.T) {
	for _, typ := range []string{"", "stockreceived", "StockReceived ", "ItemAdded", "StockMoved"} {
		if e, err := stock.Decode(typ, []byte(`{}`)); !errors.Is(err, stock.ErrUnknownEvent) || e != nil {
			t.Errorf("Decode(%q) = %v, %v; want ErrUnknownEvent", typ, e, err)
		}
	}
	for _, typ := range stock.EventTypes() {
		for _, data := range []string{``, `{`, `[]`, `{"sku":5}`, `{"at":"yesterday"}`, `{"ledger_id":"not-a-uuid"}`} {
			e, err := stock.Decode(typ, []byte(data))
			if err == nil || e != nil {
				t.Errorf("Decode(%s, %q) = %v, %v; want an error", typ, data, e, err)
			}
			if errors.Is(err, stock.ErrUnknownEvent) {
				t.Errorf("Decode(%s, %q): bad data reported as an unknown type", typ, data)
			}
		}
	}
	// A field added by a newer writer does not stop an older reader.
	data := `{"ledger_id":"` + key.LedgerID.String() + `","merchant_id":"` + merchantID.String() + `","branch_id":"` + branchID.String() +
		`","sku":"SKU-A","transaction_id":"` + tx1.String() + `","qty":3,"attempt":1,"at":"2025-03-01T03:02:00Z","priority":"high"}`
	e, err := stock.Decode("StockReserved", []byte(data))
	if err != nil || e != stock.Event(reserved(tx1, 3)) {
		t.Errorf("Decode with an unknown field = %+v, %v", e, err)
	}
}

// TestEventJSON pins the stored field names: they are a contract with
// projections, the journal's process manager and every past event.
func TestEventJSON(t *testing.T) {
	const k = `"ledger_id":"` + "%s" + `","merchant_id":"0193a5c0-0000-7000-8000-0000000000aa","branch_id":"0193a5c0-0000-7000-8000-0000000000bb","sku":"SKU-A"`
	kj := fmt.Sprintf(k, key.LedgerID)
	tests := []struct {
		event stock.Event
		want  string
	}{
		{allEvents[0], `{` + kj + `,"receipt_id":"0193a5c0-0000-7000-8000-00000000f001","qty":10,"unit_cost":100,"avg_cost":100,"by":"clerk-1","at":"2025-03-01T03:01:00Z"}`},
		{allEvents[1], `{` + kj + `,"adjustment_id":"0193a5c0-0000-7000-8000-00000000ad01","delta":-2,"reason":"count","by":"clerk-1","at":"2025-03-01T03:01:00Z"}`},
		{allEvents[2], `{` + kj + `,"transaction_id":"0193a5c0-0000-7000-8000-000000000001","qty":3,"attempt":1,"at":"2025-03-01T03:02:00Z"}`},
		{allEvents[3], `{` + kj + `,"transaction_id":"0193a5c0-0000-7000-8000-000000000001","qty":3,"reason":"voided","at":"2025-03-01T03:03:00Z"}`},
		{allEvents[4], `{` + kj + `,"transaction_id":"0193a5c0-0000-7000-8000-000000000001","qty":3,"reserved":3,"unit_cost":100,"cost_of_goods":300,"at":"2025-03-01T03:03:00Z"}`},
		{allEvents[5], `{` + kj + `,"transaction_id":"0193a5c0-0000-7000-8000-000000000001","source_id":"0193a5c0-0000-7000-8000-00000000e001","qty":2,"unit_cost":100,"avg_cost":100,"at":"2025-03-01T03:04:00Z"}`},
		{allEvents[6], `{` + kj + `,"transfer_id":"0193a5c0-0000-7000-8000-00000000c001","to_branch_id":"0193a5c0-0000-7000-8000-0000000000bc","qty":4,"unit_cost":100,"by":"clerk-1","at":"2025-03-01T03:05:00Z"}`},
		{allEvents[7], `{` + kj + `,"transfer_id":"0193a5c0-0000-7000-8000-00000000c002","from_branch_id":"0193a5c0-0000-7000-8000-0000000000bc","qty":4,"unit_cost":120,"avg_cost":110,"at":"2025-03-01T03:05:00Z"}`},
	}
	if len(tests) != len(stock.EventTypes()) {
		t.Fatalf("%d pinned encodings for %d event types", len(tests), len(stock.EventTypes()))
	}
	for _, tt := range tests {
		t.Run(tt.event.EventType(), func(t *testing.T) {
			got, err := json.Marshal(tt.event)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("JSON:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// alien is an event type from outside the package: it embeds a ledger
// event, so it has every method, but it is not one of the closed set.
type alien struct{ stock.StockReceived }

// TestApplyRefusesOtherLedgers checks that Apply refuses an event of another
// ledger (another branch, SKU or merchant, or a key tampered with), with
// ErrInvalidHistory, and changes nothing when it does.
func TestApplyRefusesOtherLedgers(t *testing.T) {
	otherSKU := stock.NewKey(merchantID, branchID, "SKU-B")
	otherMerchant := stock.NewKey(otherMerch, branchID, sku)
	tampered := key
	tampered.SKU = "SKU-B" // same LedgerID, another SKU
	withKey := func(e stock.Event, k stock.Key) stock.Event {
		v := reflect.New(reflect.TypeOf(e)).Elem()
		v.Set(reflect.ValueOf(e))
		v.FieldByName("Key").Set(reflect.ValueOf(k))
		return v.Interface().(stock.Event)
	}
	for _, e := range allEvents {
		for name, k := range map[string]stock.Key{
			"another branch": otherKey, "another SKU": otherSKU, "another merchant": otherMerchant,
			"a tampered key": tampered, "the zero key": {},
		} {
			t.Run(e.EventType()+"/"+name, func(t *testing.T) {
				l := load(t, key, histReserved)
				before := l.Clone()
				if err := l.Apply(withKey(e, k)); !errors.Is(err, stock.ErrInvalidHistory) {
					t.Fatalf("Apply() err = %v, want ErrInvalidHistory", err)
				}
				if !reflect.DeepEqual(l, before) {
					t.Errorf("a refused event changed the state")
				}
			})
		}
	}
	t.Run("a type outside the set", func(t *testing.T) {
		l := load(t, key, histReserved)
		before := l.Clone()
		if err := l.Apply(alien{received(rcpt2, 1, 1, 1)}); !errors.Is(err, stock.ErrInvalidHistory) {
			t.Fatalf("Apply() err = %v, want ErrInvalidHistory", err)
		}
		if !reflect.DeepEqual(l, before) {
			t.Errorf("a refused event changed the state")
		}
	})
}

// TestApplyNil checks that a nil event is refused like any event that does
// not apply, rather than panicking.
func TestApplyNil(t *testing.T) {
	l := load(t, key, histReserved)
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		err = l.Apply(nil)
	}()
	if !errors.Is(err, stock.ErrInvalidHistory) {
		t.Errorf("Apply(nil) err = %v, want ErrInvalidHistory", err)
	}
}

// TestApplyTrustsHistory checks the documented leniency: stored events are
// the truth, so Apply accepts balances a command would have refused.
func TestApplyTrustsHistory(t *testing.T) {
	l := load(t, key, hist(reserved(tx1, 5), sold(tx2, 3, 0, 0), adjusted(adj1, -4)))
	if s := stateOf(l); s != (state{-7, 5, -12, 0}) || l.Version() != 3 {
		t.Errorf("state %+v v%d", s, l.Version())
	}
}

// TestReadViewsAreCopies checks that what the accessors return, and a
// Clone, share nothing with the ledger.
func TestReadViewsAreCopies(t *testing.T) {
	l := load(t, key, hist(histSold, reserved(tx2, 2), received(rcpt2, 5, 100, 100)))
	want := map[uuid.UUID]stock.Reservation{
		tx1: {TransactionID: tx1, Sold: 3, SoldCost: 100},
		tx2: {TransactionID: tx2, Reserved: 2, Attempt: 1},
	}
	if got := l.Reservations(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Reservations() = %+v, want %+v", got, want)
	}
	got := l.Reservations()
	got[tx2] = stock.Reservation{Reserved: 99}
	delete(got, tx1)
	if r, ok := l.Reservation(tx2); !ok || r.Reserved != 2 || len(l.Reservations()) != 2 {
		t.Errorf("changing Reservations() changed the ledger")
	}
	if _, ok := l.Reservation(tx3); ok {
		t.Errorf("Reservation of an unknown transaction found")
	}
	if !l.SeenIn(uuid.Nil, rcpt1) || !l.SeenIn(uuid.Nil, rcpt2) || l.SeenIn(uuid.Nil, tx1) || l.Key() != key {
		t.Errorf("SeenIn/Key wrong")
	}

	c := l.Clone()
	applyAll(t, c, hist(released(tx2, 2), received(rcpt3, 1, 100, 100), returned(tx1, ref1, 1, 100, 100)))
	if l.Reserved() != 2 || l.OnHand() != 12 || l.SeenIn(uuid.Nil, rcpt3) || l.SeenIn(tx1, ref1) || l.Version() != 5 {
		t.Errorf("changing a clone changed the original: %+v v%d", stateOf(l), l.Version())
	}
	if r, _ := l.Reservation(tx1); r.Returned != 0 {
		t.Errorf("a clone shares reservation records")
	}
	if c.Reserved() != 0 || c.OnHand() != 14 || c.Version() != 8 {
		t.Errorf("clone %+v v%d", stateOf(c), c.Version())
	}
}

// TestReservationRecord follows one transaction's record through its life.
func TestReservationRecord(t *testing.T) {
	steps := []struct {
		event stock.Event
		want  stock.Reservation
	}{
		{reserved(tx1, 3), stock.Reservation{TransactionID: tx1, Reserved: 3, Attempt: 1}},
		{released(tx1, 3), stock.Reservation{TransactionID: tx1, Released: true}},
		{reserved(tx1, 2), stock.Reservation{TransactionID: tx1, Reserved: 2, Attempt: 1}},
		{sold(tx1, 2, 2, 100), stock.Reservation{TransactionID: tx1, Sold: 2, SoldCost: 100}},
		{returned(tx1, ref1, 1, 100, 100), stock.Reservation{TransactionID: tx1, Sold: 2, SoldCost: 100, Returned: 1}},
		{returned(tx1, tx1, 1, 100, 100), stock.Reservation{TransactionID: tx1, Sold: 2, SoldCost: 100, Returned: 2}},
	}
	l := load(t, key, histStocked)
	for i, s := range steps {
		applyAll(t, l, []stock.Event{s.event})
		if got, ok := l.Reservation(tx1); !ok || got != s.want {
			t.Errorf("after %d (%s): %+v, want %+v", i, s.event.EventType(), got, s.want)
		}
	}
}
