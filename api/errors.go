package api

import (
	"errors"
	"net/http"

	"pos/api/auth"
	"pos/commands"
	"pos/domain"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/internal/pgtx"
	"pos/queries"
)

// mapError knows every error the layers below the API return on purpose and
// the problem each one answers. It returns nil for anything else, which
// writeError then logs and answers 500.
func mapError(err error) *Problem {
	var ve *domain.ValidationError
	switch {
	case errors.As(err, &ve):
		return invalid(ve.Reason, FieldError{Field: ve.Field, Code: ve.Code})
	case errors.Is(err, domain.ErrInvalid):
		return invalid("the request is invalid")
	case errors.Is(err, auth.ErrUnauthorized):
		return errUnauthorized
	case errors.Is(err, commands.ErrForbidden):
		return errForbidden
	case errors.Is(err, domain.ErrNotFound), errors.Is(err, queries.ErrNotFound):
		return errNotFound
	case errors.Is(err, queries.ErrBadCursor):
		return invalid("the cursor is not valid for this query", FieldError{Field: "cursor", Code: "invalid"})
	case errors.Is(err, queries.ErrInvalidFilter):
		return invalid("the filter cannot be asked: an unknown status, or a date range the wrong way round or too long")
	case errors.Is(err, commands.ErrVersionMismatch):
		return errVersion
	case errors.Is(err, eventstore.ErrConcurrency), pgtx.Retryable(err):
		return errConflict
	case errors.Is(err, domain.ErrInvalidState):
		return problem(http.StatusConflict, "invalid_state", "not allowed in the current state")
	case errors.Is(err, domain.ErrAlreadyExists):
		return problem(http.StatusConflict, "already_exists", "that id is already taken")
	case errors.Is(err, transaction.ErrDiscountExceedsTotal):
		return problem(http.StatusUnprocessableEntity, "discount_exceeds_total", "the discounts would take the total below zero")
	case errors.Is(err, transaction.ErrOverpayment):
		return problem(http.StatusUnprocessableEntity, "overpayment", "a non-cash payment may not exceed the amount due")
	case errors.Is(err, transaction.ErrRefundExceedsPaid):
		return problem(http.StatusUnprocessableEntity, "refund_exceeds_paid", "the refund exceeds what was paid and not yet refunded")
	case errors.Is(err, domain.ErrInsufficientStock):
		p := problem(http.StatusUnprocessableEntity, "insufficient_stock", "not enough stock available")
		var short *commands.ShortageError
		if errors.As(err, &short) {
			p.SKUs = short.SKUs()
		}
		return p
	case errors.Is(err, transaction.ErrCurrencyMismatch):
		return problem(http.StatusUnprocessableEntity, "currency_mismatch", "the amount is in another currency than the transaction's")
	}
	return nil
}
