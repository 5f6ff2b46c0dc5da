package transaction_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"

	tx "pos/domain/transaction"
)

// allEvents holds one value of every event type.
var allEvents = []tx.Event{
	evOpened, evAddA, tx.ItemRemoved{LineID: lineA, At: at(1)},
	tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountPercent, Bps: 1000, Reason: "r", At: at(1)},
	evCheckout, evCardPending,
	tx.PaymentConfirmed{PaymentID: payCard, GatewayRef: "gw", At: at(4)},
	tx.PaymentDeclined{PaymentID: payCard, Reason: "no", At: at(4)},
	evPaid, evCompleted, evVoided,
	tx.RefundIssued{RefundID: refund1, Amount: 5, Reason: "r", Status: tx.StatusPartiallyRefunded, At: at(5), Lines: []tx.RefundedLine{{LineID: lineA, Qty: 1, Amount: 5}}},
	tx.CheckoutAbandoned{Reason: "checkout failed", At: at(3)},
}

func TestEventTypes(t *testing.T) {
	var names []string
	for _, e := range allEvents {
		names = append(names, tx.TypeName(e))
	}
	if got := tx.EventTypes(); !slices.Equal(got, names) {
		t.Errorf("EventTypes() = %v, want %v", got, names)
	}
	roundTrip(t, allEvents)
	if _, err := tx.Decode("StockReserved", []byte(`{}`)); !errors.Is(err, tx.ErrUnknownEvent) {
		t.Errorf("Decode(unknown) err = %v, want ErrUnknownEvent", err)
	}
	if _, err := tx.Decode("ItemAdded", []byte(`{"qty": "two"}`)); err == nil {
		t.Errorf("Decode(bad JSON) succeeded")
	}
	// A field added by a newer writer does not stop an older reader.
	e, err := tx.Decode("ItemRemoved", []byte(`{"line_id":"`+lineA.String()+`","at":"2025-03-01T03:01:00Z","new_field":1}`))
	if err != nil || e != (tx.ItemRemoved{LineID: lineA, At: at(1)}) {
		t.Errorf("Decode with an unknown field = %+v, %v", e, err)
	}
}

// TestEventJSON pins the stored field names: they are a contract with
// projections, the audit feed and every past event in the store.
func TestEventJSON(t *testing.T) {
	tests := []struct {
		event tx.Event
		want  string
	}{
		{evOpened, `{"transaction_id":"0193a5c0-0000-7000-8000-000000000001","merchant_id":"0193a5c0-0000-7000-8000-0000000000aa","branch_id":"0193a5c0-0000-7000-8000-0000000000bb","code":"T-0001","currency":"IDR","prices_include_tax":false,"opened_at":"2025-03-01T03:00:00Z","opened_by":"cashier-1"}`},
		{evAddA, `{"line_id":"0193a5c0-0000-7000-8000-00000000a001","sku":"SKU-A","name":"Coffee","qty":2,"unit_price":5000,"tax_rate_bps":0,"at":"2025-03-01T03:01:00Z"}`},
		{tx.ItemRemoved{LineID: lineA, At: at(1)}, `{"line_id":"0193a5c0-0000-7000-8000-00000000a001","at":"2025-03-01T03:01:00Z"}`},
		{tx.DiscountApplied{DiscountID: disc1, Kind: tx.DiscountAmount, Amount: 500, Reason: "r", At: at(1)}, `{"discount_id":"0193a5c0-0000-7000-8000-00000000d001","kind":"amount","bps":0,"amount":500,"reason":"r","at":"2025-03-01T03:01:00Z"}`},
		{evCheckout, `{"subtotal":10000,"discount":0,"tax":0,"grand_total":10000,"currency":"IDR","lines":[{"line_id":"0193a5c0-0000-7000-8000-00000000a001","qty":2,"gross":10000,"discount":0,"net":10000,"tax":0,"total":10000}],"at":"2025-03-01T03:02:00Z"}`},
		{evCashAll, `{"payment_id":"0193a5c0-0000-7000-8000-00000000c002","method":"CASH","amount":10000,"applied":10000,"change":0,"status":"settled","at":"2025-03-01T03:03:00Z"}`},
		{tx.PaymentConfirmed{PaymentID: payCard, GatewayRef: "gw", At: at(4)}, `{"payment_id":"0193a5c0-0000-7000-8000-00000000c001","gateway_ref":"gw","at":"2025-03-01T03:04:00Z"}`},
		{tx.PaymentDeclined{PaymentID: payCard, Reason: "no", At: at(4)}, `{"payment_id":"0193a5c0-0000-7000-8000-00000000c001","reason":"no","at":"2025-03-01T03:04:00Z"}`},
		{evPaid, `{"paid_total":10000,"at":"2025-03-01T03:03:00Z"}`},
		{evCompleted, `{"at":"2025-03-01T03:04:00Z"}`},
		{evVoided, `{"reason":"wrong customer","previous_status":"draft","at":"2025-03-01T03:04:00Z"}`},
		{evRefund3000, `{"refund_id":"0193a5c0-0000-7000-8000-00000000e001","amount":3000,"reason":"damaged","status":"partially_refunded","at":"2025-03-01T03:05:00Z"}`},
		{tx.RefundIssued{RefundID: refund1, Amount: 5, Reason: "r", Status: tx.StatusRefunded, At: at(5), Lines: []tx.RefundedLine{{LineID: lineA, Qty: 1, Amount: 5}}}, `{"refund_id":"0193a5c0-0000-7000-8000-00000000e001","amount":5,"reason":"r","lines":[{"line_id":"0193a5c0-0000-7000-8000-00000000a001","qty":1,"amount":5}],"status":"refunded","at":"2025-03-01T03:05:00Z"}`},
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

// TestApplyRefusesImpossibleHistory checks that Apply reports events that
// cannot follow the state before them, and changes nothing when it does.
func TestApplyRefusesImpossibleHistory(t *testing.T) {
	tests := []struct {
		name    string
		given   []tx.Event
		event   tx.Event
		wantErr error
	}{
		{"an item before opening", nil, evAddA, tx.ErrInvalidHistory},
		{"a second opening", hist(evOpened), evOpened, tx.ErrInvalidHistory},
		{"a reused line id", histDraft, evAddA, tx.ErrInvalidHistory},
		{"removing an unknown line", hist(evOpened), tx.ItemRemoved{LineID: lineA}, tx.ErrInvalidHistory},
		{"frozen figures for another line", histDraft, tx.CheckedOut{Lines: []tx.LineTotals{{LineID: lineB}}}, tx.ErrInvalidHistory},
		{"frozen figures missing a line", histDraft, tx.CheckedOut{}, tx.ErrInvalidHistory},
		{"confirming an unknown payment", hist(histDraft, evCheckout), tx.PaymentConfirmed{PaymentID: payCard}, tx.ErrInvalidHistory},
		{"declining a settled payment", hist(histDraft, evCheckout, evCashAll), tx.PaymentDeclined{PaymentID: payCash}, tx.ErrInvalidHistory},
		{"a payment of unknown status", hist(histDraft, evCheckout), tx.PaymentAdded{PaymentID: payCash, Status: "lost"}, tx.ErrInvalidHistory},
		{"a refund leaving a draft status", histPaid, tx.RefundIssued{RefundID: refund1, Status: tx.StatusDraft}, tx.ErrInvalidHistory},
		{"a refund of an unknown line", histPaid, tx.RefundIssued{RefundID: refund1, Status: tx.StatusRefunded, Lines: []tx.RefundedLine{{LineID: lineC}}}, tx.ErrInvalidHistory},
		{"frozen figures naming a line twice", hist(histDraft, tx.ItemAdded{LineID: lineB, SKU: "B", Name: "B", Qty: 1, At: at(1)}), tx.CheckedOut{Lines: []tx.LineTotals{{LineID: lineA}, {LineID: lineA}}}, tx.ErrInvalidHistory},
		{"a refund of more units than sold", histPaid, tx.RefundIssued{RefundID: refund1, Status: tx.StatusRefunded, Lines: []tx.RefundedLine{{LineID: lineA, Qty: 3}}}, tx.ErrInvalidHistory},
		{"an overflowing item", hist(evOpened), tx.ItemAdded{LineID: lineA, Qty: 2, UnitPrice: 1 << 53}, tx.ErrInvalidHistory},
		{"a nil event", histDraft, nil, tx.ErrInvalidHistory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agg := load(t, tt.given)
			before := load(t, tt.given)
			if err := agg.Apply(tt.event); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply() err = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(agg, before) {
				t.Errorf("a refused event changed the state")
			}
			if _, err := tx.Load(append(slices.Clone(tt.given), tt.event)); !errors.Is(err, tt.wantErr) {
				t.Errorf("Load() err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
