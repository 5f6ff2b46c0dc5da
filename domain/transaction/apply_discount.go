package transaction

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/money"
)

// ApplyDiscount is the command that applies a transaction discount to a
// draft: Kind "percent" with Bps (0..10000), or Kind "amount" with Amount
// (> 0); the other field must be zero.
type ApplyDiscount struct {
	DiscountID uuid.UUID
	Kind       DiscountKind
	Bps        int64
	Amount     money.Amount
	Reason     string
	// Currency, when set, must be the transaction's (ErrCurrencyMismatch).
	Currency money.Currency
	At       time.Time
}

// ApplyDiscount decides a discount. It is refused with
// ErrDiscountExceedsTotal when all discounts together (R2, uncapped) would
// exceed the current subtotal, that is, take the total below zero.
func (t *Transaction) ApplyDiscount(cmd ApplyDiscount) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := firstError(
		checkID("discount_id", cmd.DiscountID),
		checkText("reason", cmd.Reason, MaxReasonLen, true),
		checkAt(cmd.At),
	); err != nil {
		return nil, err
	}
	switch cmd.Kind {
	case DiscountPercent:
		if err := checkBps("bps", cmd.Bps); err != nil {
			return nil, err
		}
		if cmd.Amount != 0 {
			return nil, invalid("amount", domain.CodeConflict, "a percent discount has no amount")
		}
	case DiscountAmount:
		if err := checkAmount("amount", cmd.Amount, true); err != nil {
			return nil, err
		}
		if cmd.Bps != 0 {
			return nil, invalid("bps", domain.CodeConflict, "an amount discount has no bps")
		}
	default:
		return nil, invalid("kind", domain.CodeInvalid, `must be "percent" or "amount"`)
	}
	if err := t.checkCurrency(cmd.Currency); err != nil {
		return nil, err
	}
	if err := t.mustBe("discount", StatusDraft); err != nil {
		return nil, err
	}
	if len(t.discounts) >= MaxDiscounts {
		return nil, invalid("discounts", domain.CodeTooLong, fmt.Sprintf("a transaction takes at most %d discounts", MaxDiscounts))
	}
	if err := t.mustBeNew("discount", cmd.DiscountID); err != nil {
		return nil, err
	}
	d := Discount{DiscountID: cmd.DiscountID, Kind: cmd.Kind, Bps: cmd.Bps, Amount: cmd.Amount, Reason: cmd.Reason}
	if _, ok := discountRequest(t.totals.Subtotal, append(t.Discounts(), d)); !ok {
		return nil, fmt.Errorf("%w: discounts would exceed the subtotal %d", ErrDiscountExceedsTotal, t.totals.Subtotal)
	}
	return []Event{DiscountApplied{
		DiscountID: d.DiscountID, Kind: d.Kind, Bps: d.Bps, Amount: d.Amount, Reason: d.Reason, At: utc(cmd.At),
	}}, nil
}
