package domain

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CheckText refuses text that is not UTF-8 or longer than maxLen
// characters, and, when required, text that is empty or only blanks. It
// reports a *ValidationError naming field.
func CheckText(field, s string, maxLen int, required bool) error {
	switch {
	case !utf8.ValidString(s):
		return &ValidationError{Field: field, Code: CodeInvalid, Reason: "must be UTF-8 text"}
	case required && strings.TrimSpace(s) == "":
		return &ValidationError{Field: field, Code: CodeRequired, Reason: "must not be empty"}
	case utf8.RuneCountInString(s) > maxLen:
		return &ValidationError{Field: field, Code: CodeTooLong, Reason: fmt.Sprintf("must be at most %d characters", maxLen)}
	}
	return nil
}

// Limits that sales and stock share: a sale's line becomes a stock ledger's
// reservation at checkout, so a line must fit what a ledger takes.
const (
	// MaxSKULen is the longest SKU, in characters.
	MaxSKULen = 64
	// MaxQty is the most units one sale line or one stock movement holds.
	MaxQty = 1_000_000_000
)

// CheckSKU refuses an empty SKU, one longer than MaxSKULen characters, and
// one with spaces at either end or control characters (a SKU is an
// identifier: " A1" and "A1" must not be two ledgers).
func CheckSKU(sku string) error {
	if err := CheckText("sku", sku, MaxSKULen, true); err != nil {
		return err
	}
	if strings.TrimSpace(sku) != sku {
		return &ValidationError{Field: "sku", Code: CodeInvalid, Reason: "must not start or end with spaces"}
	}
	for _, r := range sku {
		if unicode.IsControl(r) {
			return &ValidationError{Field: "sku", Code: CodeInvalid, Reason: "must not contain control characters"}
		}
	}
	return nil
}
