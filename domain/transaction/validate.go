package transaction

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/money"
)

// Input checks shared by the commands. Each returns a *ValidationError
// naming the field as the wire spells it.

func invalid(field, code, reason string) error {
	return &ValidationError{Field: field, Code: code, Reason: reason}
}

func checkID(field string, id uuid.UUID) error {
	if id == uuid.Nil {
		return invalid(field, domain.CodeRequired, "must be a non-nil UUID")
	}
	return nil
}

// checkText is domain.CheckText, the text rule every aggregate shares.
var checkText = domain.CheckText

// checkAt requires the command's time: the aggregate reads no clock, so a
// zero time is a caller's bug, not "now".
func checkAt(at time.Time) error {
	if at.IsZero() {
		return invalid("at", domain.CodeRequired, "the command's time must be set")
	}
	return nil
}

// checkAmount requires a valid amount, and a positive one when positive.
func checkAmount(field string, a money.Amount, positive bool) error {
	if err := a.Check(); err != nil {
		return &ValidationError{Field: field, Code: domain.CodeOutOfRange, Reason: fmt.Sprintf("must be within 0..%d", int64(money.MaxAmount)), Err: err}
	}
	if positive && a == 0 {
		return invalid(field, domain.CodeOutOfRange, "must be greater than zero")
	}
	return nil
}

func checkBps(field string, bps int64) error {
	if bps < 0 || bps > MaxRateBps {
		return invalid(field, domain.CodeOutOfRange, fmt.Sprintf("must be within 0..%d basis points", MaxRateBps))
	}
	return nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// utc is how command times are stored: in UTC and without the monotonic
// clock reading, so an event compares equal to itself decoded from JSON.
func utc(at time.Time) time.Time { return at.UTC() }

// mustExist refuses commands on a transaction that has no history.
func (t *Transaction) mustExist() error {
	if t.version == 0 {
		return fmt.Errorf("transaction: %w", ErrNotFound)
	}
	return nil
}

// mustBe refuses a command the current status does not allow.
func (t *Transaction) mustBe(action string, allowed ...Status) error {
	if !slices.Contains(allowed, t.status) {
		return fmt.Errorf("%w: cannot %s a %s transaction", ErrInvalidState, action, t.status)
	}
	return nil
}

// checkCurrency accepts an unstated currency (""), or the transaction's.
func (t *Transaction) checkCurrency(c money.Currency) error {
	if c != "" && c != t.currency {
		return fmt.Errorf("%w: %s given, the transaction is in %s", ErrCurrencyMismatch, c, t.currency)
	}
	return nil
}

// mustBeNew refuses an id already used in this transaction.
func (t *Transaction) mustBeNew(kind string, id uuid.UUID) error {
	if t.used(id) {
		return fmt.Errorf("%s %s: %w", kind, id, ErrAlreadyExists)
	}
	return nil
}
