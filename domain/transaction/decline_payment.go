package transaction

import (
	"time"

	"github.com/google/uuid"
)

// DeclinePayment is the command that records a gateway's refusal of a
// pending payment.
type DeclinePayment struct {
	PaymentID uuid.UUID
	// Reason is the gateway's reason, required.
	Reason string
	At     time.Time
}

// DeclinePayment decides declining a pending payment: it stops counting, and
// its amount is due again, so the sale stays open for another tender. An
// unknown payment is ErrNotFound; one that is not pending is
// ErrInvalidState.
func (t *Transaction) DeclinePayment(cmd DeclinePayment) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := firstError(
		checkID("payment_id", cmd.PaymentID),
		checkText("reason", cmd.Reason, MaxReasonLen, true),
		checkAt(cmd.At),
	); err != nil {
		return nil, err
	}
	if err := t.mustBe("decline a payment of", StatusPendingPayment); err != nil {
		return nil, err
	}
	if _, err := t.pendingPaymentFor(cmd.PaymentID); err != nil {
		return nil, err
	}
	return []Event{PaymentDeclined{PaymentID: cmd.PaymentID, Reason: cmd.Reason, At: utc(cmd.At)}}, nil
}
