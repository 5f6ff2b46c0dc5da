package transaction

import (
	"errors"

	"pos/domain"
)

// Errors shared with every aggregate, re-exported so that callers of this
// package need not import pos/domain; each is the same value as its
// domain counterpart.
var (
	// ErrInvalid is malformed input (400 invalid_request); commands report
	// it as a *ValidationError.
	ErrInvalid = domain.ErrInvalid
	// ErrNotFound is a transaction with no history, or an unknown line or
	// payment id (404 not_found).
	ErrNotFound = domain.ErrNotFound
	// ErrAlreadyExists is opening a transaction that exists, or reusing a
	// line, discount, payment or refund id (409 already_exists).
	ErrAlreadyExists = domain.ErrAlreadyExists
	// ErrInvalidState is a command the current status does not allow
	// (409 invalid_state).
	ErrInvalidState = domain.ErrInvalidState
)

// Business-rule errors of the transaction; the API answers each with 422
// and the code in its comment.
var (
	// ErrDiscountExceedsTotal: discounts together would exceed the
	// subtotal, taking the total below zero (discount_exceeds_total).
	ErrDiscountExceedsTotal = errors.New("transaction: discount exceeds total")
	// ErrOverpayment: a non-cash payment above the amount due
	// (overpayment). Cash is never refused for this: the excess is change.
	ErrOverpayment = errors.New("transaction: payment exceeds the amount due")
	// ErrRefundExceedsPaid: a refund above paid minus refunded, or a line
	// quantity above what was sold and not yet refunded
	// (refund_exceeds_paid).
	ErrRefundExceedsPaid = errors.New("transaction: refund exceeds paid minus refunded")
	// ErrCurrencyMismatch: a command stated a currency other than the
	// transaction's (currency_mismatch). Amounts carry no currency of their
	// own; commands that carry amounts accept an optional Currency so a
	// client that states one is checked.
	ErrCurrencyMismatch = errors.New("transaction: amount in another currency than the transaction's")
)

// Errors about history rather than commands: they mean stored events are
// corrupt or come from a newer build, never that a user did something wrong,
// and the API treats them as internal errors.
var (
	// ErrInvalidHistory: an event that cannot apply to the state before it
	// (an item added before the transaction was opened, an unknown line).
	ErrInvalidHistory = errors.New("transaction: event does not apply to the current state")
	// ErrUnknownEvent: Decode was given a type name this package does not
	// define.
	ErrUnknownEvent = errors.New("transaction: unknown event type")
)

// ValidationError says which input field was refused and why; it unwraps to
// ErrInvalid. See domain.ValidationError.
type ValidationError = domain.ValidationError
