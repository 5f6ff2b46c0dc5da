package transaction

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/money"
)

// Refund is the command that gives money back on a paid sale, either a bare
// Amount (> 0) or by Lines (units returned); exactly one of the two.
type Refund struct {
	RefundID uuid.UUID
	Reason   string
	Amount   money.Amount
	Lines    []RefundLine
	// Currency, when set, must be the transaction's (ErrCurrencyMismatch).
	Currency money.Currency
	At       time.Time
}

// RefundLine asks to refund Qty units of a line.
type RefundLine struct {
	LineID uuid.UUID
	Qty    int64
}

// Refund decides a refund on a paid, completed or partially refunded sale.
//
// A refund never exceeds paid minus refunded (ErrRefundExceedsPaid). By
// lines, each line's Qty may not exceed its units sold minus those already
// refunded (ErrRefundExceedsPaid too), an unknown line is ErrNotFound, and
// the amount comes from the frozen figures by rule R7 of the package
// documentation. A line refund may come to zero (a free item returned); a
// refund by amount may not.
//
// The transaction is then refunded when nothing refundable is left: the
// refunds reach the paid total, or, for a sale that took no money, every
// unit has been returned. Otherwise it is partially_refunded.
func (t *Transaction) Refund(cmd Refund) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := cmd.validate(); err != nil {
		return nil, err
	}
	if err := t.checkCurrency(cmd.Currency); err != nil {
		return nil, err
	}
	if err := t.mustBe("refund", StatusPaid, StatusCompleted, StatusPartiallyRefunded); err != nil {
		return nil, err
	}
	if len(t.refunds) >= MaxRefunds {
		return nil, invalid("refunds", domain.CodeTooLong, fmt.Sprintf("a transaction takes at most %d refunds", MaxRefunds))
	}
	if err := t.mustBeNew("refund", cmd.RefundID); err != nil {
		return nil, err
	}

	amount := cmd.Amount
	var lines []RefundedLine
	returnedAll := true // every unit returned after this refund
	if len(cmd.Lines) > 0 {
		asked := make(map[uuid.UUID]int64, len(cmd.Lines))
		for _, r := range cmd.Lines {
			asked[r.LineID] = r.Qty
		}
		amount = 0
		for _, r := range cmd.Lines {
			i := t.lineIndex(r.LineID)
			if i < 0 {
				return nil, fmt.Errorf("line %s: %w", r.LineID, ErrNotFound)
			}
			a, err := lineRefund(t.lines[i], r.Qty)
			if err != nil {
				return nil, err
			}
			if amount, err = amount.Add(a); err != nil {
				return nil, fmt.Errorf("refund amount: %w", err)
			}
			lines = append(lines, RefundedLine{LineID: r.LineID, Qty: r.Qty, Amount: a})
		}
		for _, l := range t.lines {
			if l.RefundedQty+asked[l.LineID] < l.Qty {
				returnedAll = false
			}
		}
	} else {
		returnedAll = false
	}

	left := t.paidTotal - t.refunded
	if amount > left {
		return nil, fmt.Errorf("%w: %d asked, %d paid, %d already refunded", ErrRefundExceedsPaid, amount, t.paidTotal, t.refunded)
	}
	status := StatusPartiallyRefunded
	if (t.paidTotal > 0 && amount == left) || (t.paidTotal == 0 && returnedAll) {
		status = StatusRefunded
	}
	return []Event{RefundIssued{
		RefundID: cmd.RefundID, Amount: amount, Reason: cmd.Reason, Lines: lines, Status: status, At: utc(cmd.At),
	}}, nil
}

// lineRefund is rule R7: refunding k units of a line of q units with frozen
// total T, of which r units were refunded before for R, gives
// round_half_even(T × (r+k) / q) − R. Rounding the cumulative share rather
// than each refund's keeps every refund within rounding of its pro-rata
// share, and the refunds of a line sum to T exactly when its last unit
// goes back.
func lineRefund(l Line, k int64) (money.Amount, error) {
	if k > l.Qty-l.RefundedQty {
		return 0, fmt.Errorf("%w: line %s: %d units asked, %d sold, %d already refunded", ErrRefundExceedsPaid, l.LineID, k, l.Qty, l.RefundedQty)
	}
	cum, err := money.MulDivHalfEven(l.Total, l.RefundedQty+k, l.Qty)
	if err != nil {
		return 0, fmt.Errorf("line %s refund: %w", l.LineID, err)
	}
	a, err := cum.Sub(l.RefundedAmount)
	if err != nil {
		return 0, fmt.Errorf("line %s refund: %w", l.LineID, err)
	}
	return a, nil
}

func (cmd Refund) validate() error {
	if err := firstError(
		checkID("refund_id", cmd.RefundID),
		checkText("reason", cmd.Reason, MaxReasonLen, true),
		checkAt(cmd.At),
	); err != nil {
		return err
	}
	switch {
	case cmd.Amount != 0 && len(cmd.Lines) > 0:
		return invalid("amount", domain.CodeConflict, "give either an amount or lines, not both")
	case len(cmd.Lines) > MaxLines:
		return invalid("lines", domain.CodeTooLong, fmt.Sprintf("at most %d lines", MaxLines))
	case len(cmd.Lines) == 0:
		return checkAmount("amount", cmd.Amount, true)
	}
	seen := make(map[uuid.UUID]struct{}, len(cmd.Lines))
	for i, r := range cmd.Lines {
		field := func(name string) string { return fmt.Sprintf("lines[%d].%s", i, name) }
		if err := checkID(field("line_id"), r.LineID); err != nil {
			return err
		}
		if _, dup := seen[r.LineID]; dup {
			return invalid(field("line_id"), domain.CodeConflict, "a line appears twice")
		}
		seen[r.LineID] = struct{}{}
		if r.Qty <= 0 || r.Qty > int64(money.MaxAmount) {
			return invalid(field("qty"), domain.CodeOutOfRange, fmt.Sprintf("must be within 1..%d", int64(money.MaxAmount)))
		}
	}
	return nil
}
