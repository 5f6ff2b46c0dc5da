package domain

import (
	"fmt"
	"strings"
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
