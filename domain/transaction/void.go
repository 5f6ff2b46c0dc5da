package transaction

import (
	"fmt"
	"time"
)

// Void is the command that cancels a sale before it is completed. Who may
// void, and whether a paid void needs approval first, is decided outside
// the aggregate (the approval process runs this command once granted).
type Void struct {
	Reason string
	At     time.Time
}

// Void decides cancelling a draft, a transaction awaiting payment or a paid
// one. Payments already settled in pending_payment, or the whole payment of
// a paid sale, are given back by the consumers of TransactionVoided (its
// previous_status tells them what to undo), not by further events here. A
// payment still pending is refused first: its outcome arrives after the
// void, which refuses it, and money the gateway took would have no sale
// to be recorded or given back against. It is confirmed or declined first
// (the reservation timeout waits for it the same way).
func (t *Transaction) Void(cmd Void) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := firstError(checkText("reason", cmd.Reason, MaxReasonLen, true), checkAt(cmd.At)); err != nil {
		return nil, err
	}
	if err := t.mustBe("void", StatusDraft, StatusPendingPayment, StatusPaid); err != nil {
		return nil, err
	}
	for _, p := range t.payments {
		if p.Status == PaymentStatusPending {
			return nil, fmt.Errorf("%w: payment %s is pending: confirm or decline it before voiding", ErrInvalidState, p.PaymentID)
		}
	}
	return []Event{TransactionVoided{Reason: cmd.Reason, PreviousStatus: t.status, At: utc(cmd.At)}}, nil
}
