package commands_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"pos/domain/transaction"
)

// A command's span holds its append; what the aggregate refuses (here a
// discount larger than the sale, 422) is recorded on it but does not mark it
// failed, while a command that could not run (its context gone) does.
func TestCommandSpans(t *testing.T) {
	s := newSale(t)
	rec := tracetest.NewSpanRecorder()
	s.deps.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")
	ctx := context.Background()
	if _, _, err := s.add(s.h, "TEA"); err != nil {
		t.Fatal(err)
	}
	discount := func(ctx context.Context) error {
		_, _, err := s.h.ApplyDiscount(ctx, s.meta, s.id, transaction.ApplyDiscount{DiscountID: uuid.New(),
			Kind: transaction.DiscountAmount, Amount: 1_000_000, Reason: "too much"})
		return err
	}
	if err := discount(ctx); !errors.Is(err, transaction.ErrDiscountExceedsTotal) {
		t.Fatalf("discount over the total: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := discount(canceled); err == nil {
		t.Fatal("a command on a canceled context succeeded")
	}

	spans := rec.Ended()
	var commandsSeen []sdktrace.ReadOnlySpan
	for _, sp := range spans {
		if sp.Name() == "command transaction" {
			commandsSeen = append(commandsSeen, sp)
		}
	}
	if len(commandsSeen) != 3 {
		t.Fatalf("%d command spans, want 3 (add, refused discount, canceled discount)", len(commandsSeen))
	}
	added, refused, failed := commandsSeen[0], commandsSeen[1], commandsSeen[2]
	var appended bool
	for _, sp := range spans {
		appended = appended || sp.Name() == "append" && sp.Parent().SpanID() == added.SpanContext().SpanID()
	}
	if !appended || added.Status().Code != codes.Unset {
		t.Errorf("the item added: append span under it %v, status %v", appended, added.Status())
	}
	if refused.Status().Code == codes.Error || len(refused.Events()) == 0 {
		t.Errorf("the refused discount: status %v, %d events; want the error recorded, the span not failed", refused.Status(), len(refused.Events()))
	}
	if failed.Status().Code != codes.Error {
		t.Errorf("the canceled command: status %v, want Error", failed.Status())
	}
}
