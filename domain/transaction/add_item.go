package transaction

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/money"
)

// AddItem is the command that adds a line to a draft.
type AddItem struct {
	LineID uuid.UUID
	SKU    string
	Name   string
	// Qty is the number of units, greater than zero.
	Qty int64
	// UnitPrice is in minor units, tax-inclusive or not as the
	// transaction's PricesIncludeTax says.
	UnitPrice  money.Amount
	TaxRateBps int64
	// Currency, when set, must be the transaction's (ErrCurrencyMismatch).
	Currency money.Currency
	At       time.Time
}

// AddItem decides adding a line. The draft's totals must stay within
// money.MaxAmount with the line included, so that checkout can never fail on
// an overflow; a line that would break this is a validation error.
func (t *Transaction) AddItem(cmd AddItem) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := firstError(
		checkID("line_id", cmd.LineID),
		domain.CheckSKU(cmd.SKU),
		checkText("name", cmd.Name, MaxNameLen, true),
		checkAmount("unit_price", cmd.UnitPrice, false),
		checkBps("tax_rate_bps", cmd.TaxRateBps),
		checkAt(cmd.At),
	); err != nil {
		return nil, err
	}
	if cmd.Qty <= 0 || cmd.Qty > MaxQty {
		return nil, invalid("qty", domain.CodeOutOfRange, fmt.Sprintf("must be within 1..%d", MaxQty))
	}
	if err := t.checkCurrency(cmd.Currency); err != nil {
		return nil, err
	}
	if err := t.mustBe("add an item to", StatusDraft); err != nil {
		return nil, err
	}
	if len(t.lines) >= MaxLines {
		return nil, invalid("lines", domain.CodeTooLong, fmt.Sprintf("a transaction holds at most %d lines", MaxLines))
	}
	if err := t.mustBeNew("line", cmd.LineID); err != nil {
		return nil, err
	}
	// Checkout reserves a SKU's units in one ledger command: their sum,
	// not only each line, must be what a ledger takes.
	units := cmd.Qty
	for _, l := range t.lines {
		if l.SKU == cmd.SKU {
			units += l.Qty
		}
	}
	if units > MaxQty {
		return nil, invalid("qty", domain.CodeOutOfRange, fmt.Sprintf("the sale's units of SKU %q would exceed %d", cmd.SKU, MaxQty))
	}
	e := ItemAdded{
		LineID: cmd.LineID, SKU: cmd.SKU, Name: cmd.Name, Qty: cmd.Qty,
		UnitPrice: cmd.UnitPrice, TaxRateBps: cmd.TaxRateBps, At: utc(cmd.At),
	}
	if _, err := cmd.UnitPrice.Mul(cmd.Qty); err != nil {
		return nil, &ValidationError{Field: "qty", Code: domain.CodeOutOfRange, Reason: fmt.Sprintf("qty × unit_price exceeds %d", int64(money.MaxAmount)), Err: err}
	}
	lines := append(t.Lines(), Line{LineID: e.LineID, Qty: e.Qty, UnitPrice: e.UnitPrice, TaxRateBps: e.TaxRateBps})
	if _, _, err := computeTotals(t.currency, t.pricesIncludeTax, lines, t.discounts); err != nil {
		return nil, &ValidationError{Field: "qty", Code: domain.CodeOutOfRange, Reason: fmt.Sprintf("the transaction's total would exceed %d", int64(money.MaxAmount)), Err: err}
	}
	return []Event{e}, nil
}
