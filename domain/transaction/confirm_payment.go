package transaction

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// ConfirmPayment is the command that records a gateway's confirmation of a
// pending payment.
type ConfirmPayment struct {
	PaymentID  uuid.UUID
	GatewayRef string
	At         time.Time
}

// ConfirmPayment decides settling a pending payment. An unknown payment is
// ErrNotFound; one that is not pending (cash, already confirmed or declined)
// is ErrInvalidState. When settled payments then cover the grand total, the
// same append records TransactionPaid.
func (t *Transaction) ConfirmPayment(cmd ConfirmPayment) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := firstError(
		checkID("payment_id", cmd.PaymentID),
		checkText("gateway_ref", cmd.GatewayRef, MaxGatewayRefLen, true),
		checkAt(cmd.At),
	); err != nil {
		return nil, err
	}
	if err := t.mustBe("confirm a payment of", StatusPendingPayment); err != nil {
		return nil, err
	}
	p, err := t.pendingPaymentFor(cmd.PaymentID)
	if err != nil {
		return nil, err
	}
	at := utc(cmd.At)
	events := []Event{PaymentConfirmed{PaymentID: cmd.PaymentID, GatewayRef: cmd.GatewayRef, At: at}}
	if t.settled+p.Applied == t.totals.GrandTotal {
		events = append(events, TransactionPaid{PaidTotal: t.totals.GrandTotal, At: at})
	}
	return events, nil
}

// pendingPaymentFor finds a payment that a gateway can still confirm or
// decline, with the errors a command reports.
func (t *Transaction) pendingPaymentFor(id uuid.UUID) (Payment, error) {
	p := t.payment(id)
	if p == nil {
		return Payment{}, fmt.Errorf("payment %s: %w", id, ErrNotFound)
	}
	if p.Status != PaymentStatusPending {
		return Payment{}, fmt.Errorf("%w: payment %s is %s, not pending", ErrInvalidState, id, p.Status)
	}
	return *p, nil
}
