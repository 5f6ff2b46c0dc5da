package transaction

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/money"
)

// AddPayment is the command that adds a tender to a transaction awaiting
// payment.
type AddPayment struct {
	PaymentID uuid.UUID
	Method    Method
	// Amount is what is tendered, greater than zero. For cash it may exceed
	// what is due (the rest is change); for other methods it may not.
	Amount money.Amount
	// Currency, when set, must be the transaction's (ErrCurrencyMismatch).
	Currency money.Currency
	At       time.Time
}

// AddPayment decides a payment. Due is grand total − settled − pending: a
// pending non-cash payment reserves its amount until it is confirmed or
// declined.
//
// CASH settles at once with applied = min(amount, due) and change = amount −
// applied; when nothing is due (pending payments reserve the rest) there is
// nothing for cash to pay, and it is ErrInvalidState. CARD, QRIS and EWALLET
// start pending with applied = amount, refused with ErrOverpayment when
// amount > due. When settled payments then cover the grand total, the same
// append records TransactionPaid.
func (t *Transaction) AddPayment(cmd AddPayment) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := firstError(
		checkID("payment_id", cmd.PaymentID),
		checkAmount("amount", cmd.Amount, true),
		checkAt(cmd.At),
	); err != nil {
		return nil, err
	}
	if !cmd.Method.Valid() {
		return nil, invalid("method", domain.CodeInvalid, "must be CASH, CARD, QRIS or EWALLET")
	}
	if err := t.checkCurrency(cmd.Currency); err != nil {
		return nil, err
	}
	if err := t.mustBe("pay", StatusPendingPayment); err != nil {
		return nil, err
	}
	if len(t.payments) >= MaxPayments {
		return nil, invalid("payments", domain.CodeTooLong, fmt.Sprintf("a transaction takes at most %d payments", MaxPayments))
	}
	if err := t.mustBeNew("payment", cmd.PaymentID); err != nil {
		return nil, err
	}
	due := t.due()
	at := utc(cmd.At)
	e := PaymentAdded{PaymentID: cmd.PaymentID, Method: cmd.Method, Amount: cmd.Amount, At: at}
	if cmd.Method == MethodCash {
		if due == 0 {
			return nil, fmt.Errorf("%w: nothing is due in cash; pending payments reserve %d", ErrInvalidState, t.pending)
		}
		e.Applied = min(cmd.Amount, due)
		e.Change = cmd.Amount - e.Applied
		e.Status = PaymentStatusSettled
	} else {
		if cmd.Amount > due {
			return nil, fmt.Errorf("%w: %d tendered, %d due", ErrOverpayment, cmd.Amount, due)
		}
		e.Applied = cmd.Amount
		e.Status = PaymentStatusPending
	}
	events := []Event{e}
	if e.Status == PaymentStatusSettled && t.settled+e.Applied == t.totals.GrandTotal {
		events = append(events, TransactionPaid{PaidTotal: t.totals.GrandTotal, At: at})
	}
	return events, nil
}
