package transaction_test

import (
	"testing"

	"github.com/google/uuid"

	"pos/domain/money"
	tx "pos/domain/transaction"
)

func TestAddPayment(t *testing.T) {
	checkedOut := hist(histDraft, evCheckout) // grand total 10000, nothing paid
	cashPart := tx.PaymentAdded{PaymentID: payCash, Method: tx.MethodCash, Amount: 3000, Applied: 3000, Status: tx.PaymentStatusSettled, At: at(3)}
	cardAll := tx.PaymentAdded{PaymentID: payCard, Method: tx.MethodCard, Amount: 10000, Applied: 10000, Status: tx.PaymentStatusPending, At: at(3)}
	run(t, []scenario{
		{
			name:  "cash exact pays the sale",
			given: checkedOut,
			when:  pay(payCash, tx.MethodCash, 10000),
			then:  []tx.Event{evCashAll, evPaid},
		},
		{
			name:  "cash above due gives change",
			given: checkedOut,
			when:  pay(payCash, tx.MethodCash, 50000),
			then: []tx.Event{
				tx.PaymentAdded{PaymentID: payCash, Method: tx.MethodCash, Amount: 50000, Applied: 10000, Change: 40000, Status: tx.PaymentStatusSettled, At: at(3)},
				evPaid,
			},
		},
		{
			name:  "cash below due leaves the sale open",
			given: checkedOut,
			when:  pay(payCash, tx.MethodCash, 3000),
			then:  []tx.Event{cashPart},
		},
		{
			name:  "cash for the rest pays the sale",
			given: hist(checkedOut, cashPart),
			when:  pay(payNew, tx.MethodCash, 7500),
			then: []tx.Event{
				tx.PaymentAdded{PaymentID: payNew, Method: tx.MethodCash, Amount: 7500, Applied: 7000, Change: 500, Status: tx.PaymentStatusSettled, At: at(3)},
				evPaid,
			},
		},
		{
			name:  "cash beside a pending card pays only what is not reserved",
			given: histPending, // card 4000 pending
			when:  pay(payNew, tx.MethodCash, 10000),
			then:  []tx.Event{tx.PaymentAdded{PaymentID: payNew, Method: tx.MethodCash, Amount: 10000, Applied: 6000, Change: 4000, Status: tx.PaymentStatusSettled, At: at(3)}},
		},
		{name: "cash when pending payments reserve everything", given: hist(checkedOut, cardAll), when: pay(payNew, tx.MethodCash, 100), wantErr: tx.ErrInvalidState},
		{
			name:  "card starts pending",
			given: checkedOut,
			when:  pay(payCard, tx.MethodCard, 10000),
			then:  []tx.Event{cardAll},
		},
		{
			name:  "QRIS up to what is due beside a pending card",
			given: histPending,
			when:  pay(payNew, tx.MethodQRIS, 6000),
			then:  []tx.Event{tx.PaymentAdded{PaymentID: payNew, Method: tx.MethodQRIS, Amount: 6000, Applied: 6000, Status: tx.PaymentStatusPending, At: at(3)}},
		},
		{name: "card above due", given: checkedOut, when: pay(payCard, tx.MethodCard, 10001), wantErr: tx.ErrOverpayment},
		{name: "e-wallet above what pending payments leave", given: histPending, when: pay(payNew, tx.MethodEWallet, 6001), wantErr: tx.ErrOverpayment},
		{name: "card when pending payments reserve everything", given: hist(checkedOut, cardAll), when: pay(payNew, tx.MethodCard, 1), wantErr: tx.ErrOverpayment},
		{
			name:  "a declined payment no longer reserves",
			given: hist(checkedOut, cardAll, tx.PaymentDeclined{PaymentID: payCard, Reason: "x", At: at(4)}),
			when:  pay(payNew, tx.MethodCash, 10000),
			then: []tx.Event{
				tx.PaymentAdded{PaymentID: payNew, Method: tx.MethodCash, Amount: 10000, Applied: 10000, Status: tx.PaymentStatusSettled, At: at(3)},
				evPaid,
			},
		},
		{name: "zero amount", given: checkedOut, when: pay(payCash, tx.MethodCash, 0), wantErr: tx.ErrInvalid, wantField: "amount"},
		{name: "negative amount", given: checkedOut, when: pay(payCash, tx.MethodCash, -5), wantErr: tx.ErrInvalid, wantField: "amount"},
		{name: "amount above the ceiling", given: checkedOut, when: pay(payCash, tx.MethodCash, int64(money.MaxAmount)+1), wantErr: money.ErrOutOfRange, wantField: "amount"},
		{name: "unknown method", given: checkedOut, when: pay(payCash, "CHEQUE", 100), wantErr: tx.ErrInvalid, wantField: "method"},
		{name: "lower-case method", given: checkedOut, when: pay(payCash, "cash", 100), wantErr: tx.ErrInvalid, wantField: "method"},
		{name: "nil payment id", given: checkedOut, when: pay(uuid.Nil, tx.MethodCash, 100), wantErr: tx.ErrInvalid, wantField: "payment_id"},
		{name: "payment id taken", given: histPending, when: pay(payCard, tx.MethodCash, 100), wantErr: tx.ErrAlreadyExists},
		{name: "another currency", given: checkedOut, when: addPayment(tx.AddPayment{PaymentID: payCash, Method: tx.MethodCash, Amount: 100, Currency: "USD", At: at(3)}), wantErr: tx.ErrCurrencyMismatch},
		{name: "in a draft", given: histDraft, when: pay(payCash, tx.MethodCash, 100), wantErr: tx.ErrInvalidState},
		{name: "when paid", given: histPaid, when: pay(payNew, tx.MethodCash, 100), wantErr: tx.ErrInvalidState},
		{name: "not opened", when: pay(payCash, tx.MethodCash, 100), wantErr: tx.ErrNotFound},
	})
}

func TestConfirmPayment(t *testing.T) {
	checkedOut := hist(histDraft, evCheckout)
	cardRest := tx.PaymentAdded{PaymentID: payNew, Method: tx.MethodCard, Amount: 6000, Applied: 6000, Status: tx.PaymentStatusPending, At: at(3)}
	run(t, []scenario{
		{
			name:  "confirms without covering the total",
			given: histPending,
			when:  confirm(payCard),
			then:  []tx.Event{tx.PaymentConfirmed{PaymentID: payCard, GatewayRef: "gw-1", At: at(4)}},
		},
		{
			name:  "the confirmation that covers the total pays the sale",
			given: hist(histPending, cardRest, tx.PaymentConfirmed{PaymentID: payNew, GatewayRef: "gw-0", At: at(4)}),
			when:  confirm(payCard),
			then: []tx.Event{
				tx.PaymentConfirmed{PaymentID: payCard, GatewayRef: "gw-1", At: at(4)},
				tx.TransactionPaid{PaidTotal: 10000, At: at(4)},
			},
		},
		{
			name:  "cash and a confirmed card together",
			given: hist(checkedOut, tx.PaymentAdded{PaymentID: payCash, Method: tx.MethodCash, Amount: 6000, Applied: 6000, Status: tx.PaymentStatusSettled, At: at(3)}, evCardPending),
			when:  confirm(payCard),
			then: []tx.Event{
				tx.PaymentConfirmed{PaymentID: payCard, GatewayRef: "gw-1", At: at(4)},
				tx.TransactionPaid{PaidTotal: 10000, At: at(4)},
			},
		},
		{name: "unknown payment", given: histPending, when: confirm(payNew), wantErr: tx.ErrNotFound},
		{name: "a cash payment", given: hist(checkedOut, tx.PaymentAdded{PaymentID: payCash, Method: tx.MethodCash, Amount: 10, Applied: 10, Status: tx.PaymentStatusSettled, At: at(3)}), when: confirm(payCash), wantErr: tx.ErrInvalidState},
		{name: "confirmed twice", given: hist(histPending, tx.PaymentConfirmed{PaymentID: payCard, GatewayRef: "gw", At: at(4)}), when: confirm(payCard), wantErr: tx.ErrInvalidState},
		{name: "a declined payment", given: hist(histPending, tx.PaymentDeclined{PaymentID: payCard, At: at(4)}), when: confirm(payCard), wantErr: tx.ErrInvalidState},
		{name: "no gateway reference", given: histPending, when: func(a *tx.Transaction) ([]tx.Event, error) {
			return a.ConfirmPayment(tx.ConfirmPayment{PaymentID: payCard, At: at(4)})
		}, wantErr: tx.ErrInvalid, wantField: "gateway_ref"},
		{name: "after a void", given: hist(histPending, tx.TransactionVoided{Reason: "x", PreviousStatus: tx.StatusPendingPayment, At: at(4)}), when: confirm(payCard), wantErr: tx.ErrInvalidState},
		{name: "not opened", when: confirm(payCard), wantErr: tx.ErrNotFound},
	})
}

func TestDeclinePayment(t *testing.T) {
	run(t, []scenario{
		{
			name:  "declines a pending payment",
			given: histPending,
			when:  decline(payCard),
			then:  []tx.Event{tx.PaymentDeclined{PaymentID: payCard, Reason: "insufficient funds", At: at(4)}},
		},
		{
			// API.md: the decline's body is {"reason"}, not {"reason"?}.
			name:  "without a reason",
			given: histPending,
			when: func(a *tx.Transaction) ([]tx.Event, error) {
				return a.DeclinePayment(tx.DeclinePayment{PaymentID: payCard, At: at(4)})
			},
			wantErr: tx.ErrInvalid, wantField: "reason",
		},
		{name: "unknown payment", given: histPending, when: decline(payNew), wantErr: tx.ErrNotFound},
		{name: "declined twice", given: hist(histPending, tx.PaymentDeclined{PaymentID: payCard, At: at(4)}), when: decline(payCard), wantErr: tx.ErrInvalidState},
		{name: "confirmed already", given: hist(histPending, tx.PaymentConfirmed{PaymentID: payCard, GatewayRef: "gw", At: at(4)}), when: decline(payCard), wantErr: tx.ErrInvalidState},
		{name: "nil id", given: histPending, when: decline(uuid.Nil), wantErr: tx.ErrInvalid, wantField: "payment_id"},
		{name: "not opened", when: decline(payCard), wantErr: tx.ErrNotFound},
	})
}

// TestDeclineReleasesTheReservation follows a sale through a declined card
// and a second tender.
func TestDeclineReleasesTheReservation(t *testing.T) {
	h := do(t, histPending, decline(payCard))
	agg := load(t, h)
	if agg.Pending() != 0 || agg.Due() != 10000 || agg.Status() != tx.StatusPendingPayment {
		t.Fatalf("after decline: pending %d due %d status %s", agg.Pending(), agg.Due(), agg.Status())
	}
	if p := agg.Payments()[0]; p.Status != tx.PaymentStatusDeclined || p.DeclineReason != "insufficient funds" {
		t.Errorf("payment = %+v", p)
	}
	h = do(t, h, pay(payNew, tx.MethodQRIS, 10000), confirm(payNew))
	agg = load(t, h)
	if agg.Status() != tx.StatusPaid || agg.Paid() != 10000 || agg.Refundable() != 10000 {
		t.Errorf("after the second tender: status %s paid %d refundable %d", agg.Status(), agg.Paid(), agg.Refundable())
	}
	if p := agg.Payments()[1]; p.Status != tx.PaymentStatusSettled || p.GatewayRef != "gw-1" {
		t.Errorf("payment = %+v", p)
	}
}

func TestCompleteAndVoid(t *testing.T) {
	run(t, []scenario{
		{name: "completes a paid sale", given: histPaid, when: complete(), then: []tx.Event{evCompleted}},
		{name: "voids a draft", given: histDraft, when: void("wrong customer"), then: []tx.Event{evVoided}},
		{
			name:  "voids a sale awaiting payment",
			given: hist(histDraft, evCheckout),
			when:  void("customer left"),
			then:  []tx.Event{tx.TransactionVoided{Reason: "customer left", PreviousStatus: tx.StatusPendingPayment, At: at(4)}},
		},
		// A pending payment's outcome would come after the void, which
		// refuses it: the gateway's money would have nowhere to go.
		{name: "refuses a void while a payment is pending", given: histPending, when: void("customer left"), wantErr: tx.ErrInvalidState},
		{
			name:  "voids once the pending payment is declined",
			given: hist(histPending, tx.PaymentDeclined{PaymentID: payCard, Reason: "no", At: at(4)}),
			when:  void("customer left"),
			then:  []tx.Event{tx.TransactionVoided{Reason: "customer left", PreviousStatus: tx.StatusPendingPayment, At: at(4)}},
		},
		{
			name:  "voids a paid sale",
			given: histPaid,
			when:  void("approved by manager"),
			then:  []tx.Event{tx.TransactionVoided{Reason: "approved by manager", PreviousStatus: tx.StatusPaid, At: at(4)}},
		},
		{name: "void needs a reason", given: histDraft, when: void(" "), wantErr: tx.ErrInvalid, wantField: "reason"},
		{name: "void twice", given: histVoided, when: void("again"), wantErr: tx.ErrInvalidState},
		{name: "complete a draft", given: histDraft, when: complete(), wantErr: tx.ErrInvalidState},
		{name: "complete twice", given: histCompleted, when: complete(), wantErr: tx.ErrInvalidState},
	})
}
