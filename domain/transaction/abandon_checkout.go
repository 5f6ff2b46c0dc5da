package transaction

import "time"

// AbandonCheckout records that a draft no longer holds the stock a checkout
// reserved for it: a checkout that failed half way, or one whose draft was
// left past the reservation timeout, before its units are released. It
// changes nothing else (the draft stays a draft), but it takes a version:
// a checkout that reserved and is about to freeze the totals at the version
// it loaded then fails and reserves again, instead of checking out a sale
// whose units were just released (and sold to someone else).
type AbandonCheckout struct {
	Reason string
	At     time.Time
}

// AbandonCheckout decides the marker; only a draft takes it.
func (t *Transaction) AbandonCheckout(cmd AbandonCheckout) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := checkAt(cmd.At); err != nil {
		return nil, err
	}
	if err := checkText("reason", cmd.Reason, MaxReasonLen, true); err != nil {
		return nil, err
	}
	if err := t.mustBe("abandon the checkout of", StatusDraft); err != nil {
		return nil, err
	}
	return []Event{CheckoutAbandoned{Reason: cmd.Reason, At: utc(cmd.At)}}, nil
}
