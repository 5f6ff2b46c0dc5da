// Package domain holds the error vocabulary shared by the aggregates under
// domain/ (transaction, settings, and the stock, approval and journal
// aggregates to come). Each sentinel here is one outcome that the API maps to
// one status and code, so the single error-mapping middleware needs to know
// these values rather than one copy per aggregate. Aggregate packages
// re-export them under their own names (transaction.ErrInvalidState is
// domain.ErrInvalidState), and add their own sentinels for the business rules
// that only they break.
//
// Like every package under domain/, it imports no infrastructure.
package domain

import (
	"errors"
	"fmt"
)

// MaxActorLen is the longest actor id (a token's sub) an aggregate records;
// the API refuses a token with a longer sub (401), so no command meets one.
const MaxActorLen = 200

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrInvalid reports malformed command input: a missing id, a quantity
	// of zero, a rate out of range. The API answers 400 invalid_request.
	// Commands report it as a *ValidationError, which says which field.
	ErrInvalid = errors.New("invalid input")

	// ErrNotFound reports that the aggregate, or an entity named inside it
	// (a line, a payment), does not exist. The API answers 404 not_found.
	ErrNotFound = errors.New("not found")

	// ErrAlreadyExists reports a client-supplied id that is already taken:
	// opening a transaction that exists, reusing a line or payment id. The
	// API answers 409 already_exists.
	ErrAlreadyExists = errors.New("already exists")

	// ErrInvalidState reports a command that the aggregate's current state
	// does not allow (paying a draft, voiding a completed sale). The API
	// answers 409 invalid_state.
	ErrInvalidState = errors.New("invalid state transition")

	// ErrInsufficientStock reports a reservation, adjustment or transfer
	// that would take a stock ledger's available quantity below zero while
	// the merchant does not allow negative stock. The API answers 422
	// insufficient_stock and names the SKUs.
	ErrInsufficientStock = errors.New("insufficient stock")
)

// Validation codes carried by ValidationError.Code. They are stable: the API
// copies them into the problem's "errors": [{"field", "code"}].
const (
	// CodeRequired is a field that must be set and is empty or zero.
	CodeRequired = "required"
	// CodeOutOfRange is a number outside its allowed range, including a
	// money amount above the 2^53−1 ceiling or a product that overflows.
	CodeOutOfRange = "out_of_range"
	// CodeTooLong is a text or list longer than its limit.
	CodeTooLong = "too_long"
	// CodeInvalid is a value of the wrong form (an unknown currency or
	// payment method, text that is not UTF-8).
	CodeInvalid = "invalid"
	// CodeConflict is a combination of fields that excludes itself (an
	// amount and lines on the same refund, a line listed twice).
	CodeConflict = "conflict"
)

// ValidationError says which input field was refused and why. It unwraps to
// ErrInvalid, and also to Err when a lower layer supplied the cause (for
// example money.ErrOutOfRange), so errors.Is works for both.
type ValidationError struct {
	// Field is the input's name as the wire spells it ("qty",
	// "lines[2].qty"), so the API can pass it to the client unchanged.
	Field string
	// Code is one of the Code constants.
	Code string
	// Reason is a short human-readable explanation, safe to show a client.
	Reason string
	// Err is the underlying cause, or nil.
	Err error
}

// Error reads "invalid qty: must be greater than zero".
func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}

// Unwrap lets errors.Is match ErrInvalid and the cause, if any.
func (e *ValidationError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.Err}
}
