package transaction

import (
	"fmt"
	"time"
)

// Checkout is the command that freezes a draft's totals and starts
// payment.
type Checkout struct {
	At time.Time
}

// Checkout decides the checkout of a draft with at least one line
// (ErrInvalidState for an empty one). CheckedOut carries the totals and
// every line's figures as they stand. A sale whose grand total is zero (all
// discounted) has nothing to pay: the same append also records
// TransactionPaid with paid_total 0, so it goes straight to paid and can be
// completed.
func (t *Transaction) Checkout(cmd Checkout) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := checkAt(cmd.At); err != nil {
		return nil, err
	}
	if err := t.mustBe("check out", StatusDraft); err != nil {
		return nil, err
	}
	if len(t.lines) == 0 {
		return nil, fmt.Errorf("%w: cannot check out a transaction without lines", ErrInvalidState)
	}
	at := utc(cmd.At)
	lines := make([]LineTotals, len(t.lines))
	for i, l := range t.lines {
		lines[i] = LineTotals{LineID: l.LineID, Qty: l.Qty, Gross: l.Gross, Discount: l.Discount, Net: l.Net, Tax: l.Tax, Total: l.Total}
	}
	tot := t.totals
	events := []Event{CheckedOut{
		Subtotal: tot.Subtotal, Discount: tot.Discount, Tax: tot.Tax, GrandTotal: tot.GrandTotal,
		Currency: t.currency, Lines: lines, At: at,
	}}
	if tot.GrandTotal == 0 {
		events = append(events, TransactionPaid{PaidTotal: 0, At: at})
	}
	return events, nil
}
