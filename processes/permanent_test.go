package processes

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"pos/domain"
)

// An event is skipped only when every part of its failure can never
// succeed: one transient part among refused ones is retried.
func TestPermanent(t *testing.T) {
	invalid := &domain.ValidationError{Field: "reason", Code: domain.CodeTooLong, Reason: "too long"}
	withCause := &domain.ValidationError{Field: "at", Code: "invalid", Reason: "not a time", Err: errors.New("parse error")}
	transient := context.DeadlineExceeded
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"invalid", domain.ErrInvalid, true},
		{"a validation error, wrapped", fmt.Errorf("ledger b/TEA: %w", invalid), true},
		{"a validation error with its own cause", withCause, true},
		{"transient", transient, false},
		{"an id used for another movement", fmt.Errorf("ledger b/TEA: %w", fmt.Errorf("%w: transfer_id x was used for another movement", domain.ErrAlreadyExists)), true},
		{"one SKU's id taken, one transient", errors.Join(fmt.Errorf("ledger b/A: %w", domain.ErrAlreadyExists), transient), false},
		{"every SKU invalid", errors.Join(fmt.Errorf("ledger b/A: %w", invalid), fmt.Errorf("ledger b/B: %w", domain.ErrInvalid)), true},
		{"one SKU invalid, one transient", errors.Join(fmt.Errorf("ledger b/A: %w", invalid), fmt.Errorf("ledger b/B: %w", transient)), false},
		{"the same, wrapped", fmt.Errorf("release: %w", errors.Join(invalid, transient)), false},
		{"an empty join", errors.Join(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := permanent(c.err); got != c.want {
				t.Fatalf("permanent(%v) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}
