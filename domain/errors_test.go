package domain_test

import (
	"errors"
	"testing"

	"pos/domain"
)

func TestValidationError(t *testing.T) {
	cause := errors.New("cause")
	err := error(&domain.ValidationError{Field: "qty", Code: domain.CodeOutOfRange, Reason: "must be greater than zero", Err: cause})
	if got, want := err.Error(), "invalid qty: must be greater than zero"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, domain.ErrInvalid) || !errors.Is(err, cause) {
		t.Errorf("errors.Is: ErrInvalid %v, cause %v; want both", errors.Is(err, domain.ErrInvalid), errors.Is(err, cause))
	}
	bare := error(&domain.ValidationError{Field: "sku", Code: domain.CodeRequired, Reason: "must not be empty"})
	if !errors.Is(bare, domain.ErrInvalid) || errors.Is(bare, domain.ErrNotFound) {
		t.Errorf("a ValidationError without a cause must be ErrInvalid only")
	}
	var ve *domain.ValidationError
	if !errors.As(bare, &ve) || ve.Field != "sku" || ve.Code != domain.CodeRequired {
		t.Errorf("errors.As = %+v", ve)
	}
}
