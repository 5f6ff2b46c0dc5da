package stock

import (
	"fmt"

	"pos/domain"
	"pos/domain/money"
)

// Input checks shared by the commands; each returns a *ValidationError naming
// the field as the wire spells it.

func invalid(field, code, reason string) error {
	return &ValidationError{Field: field, Code: code, Reason: reason}
}

// firstOf returns the first non-nil error.
func firstOf(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (k Key) validate() error {
	switch {
	case k.MerchantID == [16]byte{}:
		return invalid("merchant_id", domain.CodeRequired, "must be a non-nil UUID")
	case k.BranchID == [16]byte{}:
		return invalid("branch_id", domain.CodeRequired, "must be a non-nil UUID")
	case k.LedgerID != LedgerID(k.MerchantID, k.BranchID, k.SKU):
		return invalid("ledger_id", domain.CodeInvalid, "does not match the merchant, branch and SKU")
	}
	return CheckSKU(k.SKU)
}

// CheckSKU is domain.CheckSKU: what a SKU must be, on a sale line too.
var CheckSKU = domain.CheckSKU

// checkText is domain.CheckText, the text rule every aggregate shares.
var checkText = domain.CheckText

func checkActor(by string) error { return checkText("by", by, MaxActorLen, true) }

func checkQty(field string, qty int64) error {
	if qty <= 0 || qty > MaxQty {
		return invalid(field, domain.CodeOutOfRange, fmt.Sprintf("must be within 1..%d", MaxQty))
	}
	return nil
}

func checkAmount(field string, a money.Amount) error {
	if err := a.Check(); err != nil {
		return &ValidationError{Field: field, Code: domain.CodeOutOfRange, Reason: fmt.Sprintf("must be within 0..%d", int64(money.MaxAmount)), Err: err}
	}
	return nil
}
