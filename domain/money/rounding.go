package money

import (
	"fmt"
	"math/bits"
)

// Rounding names how an exact quotient becomes an integer number of minor
// units. The zero value is not a rule, so every call site has to say which
// one it means.
type Rounding uint8

// The rounding rules. See the package documentation for their definitions.
const (
	// HalfEven rounds to the nearest integer, ties to the even one.
	HalfEven Rounding = iota + 1
	// Down truncates toward zero (floor, as every operand is non-negative).
	Down
)

// String names the rule, for messages and test names.
func (r Rounding) String() string {
	switch r {
	case HalfEven:
		return "half-even"
	case Down:
		return "down"
	}
	return fmt.Sprintf("Rounding(%d)", uint8(r))
}

// BpsDenominator is the number of basis points in a whole: 10000 bps = 100 %.
const BpsDenominator = 10_000

// MulDiv returns rule(a × num / den), where a × num / den is the exact
// rational quotient: the product is taken in 128 bits, so it never overflows
// before the division, and only the final result has to fit.
//
// It requires a valid a, num ≥ 0 and den > 0 (ErrInvalidOperand otherwise)
// and returns ErrOutOfRange when the rounded result exceeds MaxAmount.
func MulDiv(a Amount, num, den int64, rule Rounding) (Amount, error) {
	if err := a.Check(); err != nil {
		return 0, err
	}
	if num < 0 || den <= 0 {
		return 0, fmt.Errorf("%w: %d × %d / %d needs num ≥ 0 and den > 0", ErrInvalidOperand, int64(a), num, den)
	}
	if rule != HalfEven && rule != Down {
		return 0, fmt.Errorf("%w: unknown rounding %v", ErrInvalidOperand, rule)
	}
	q, rem, ok := mulDiv(uint64(a), uint64(num), uint64(den))
	if !ok || q > uint64(MaxAmount) {
		return 0, fmt.Errorf("%w: %d × %d / %d exceeds %d", ErrOutOfRange, int64(a), num, den, int64(MaxAmount))
	}
	if rule == HalfEven {
		// rem < den < 2^63, so 2·rem cannot overflow 64 bits.
		if twice := rem << 1; twice > uint64(den) || (twice == uint64(den) && q&1 == 1) {
			q++
		}
		if q > uint64(MaxAmount) {
			return 0, fmt.Errorf("%w: %d × %d / %d exceeds %d", ErrOutOfRange, int64(a), num, den, int64(MaxAmount))
		}
	}
	return Amount(q), nil
}

// MulDivHalfEven returns round_half_even(a × num / den); see MulDiv. It is
// the rule for tax and percentage discounts.
func MulDivHalfEven(a Amount, num, den int64) (Amount, error) {
	return MulDiv(a, num, den, HalfEven)
}

// BpsOf returns round_half_even(a × bps / 10000): bps basis points of a.
// bps may exceed 10000 (a share above 100 %) as long as the result fits.
func BpsOf(a Amount, bps int64) (Amount, error) {
	return MulDiv(a, bps, BpsDenominator, HalfEven)
}

// mulDiv returns the quotient and remainder of x·y/d computed in 128 bits;
// ok is false when the quotient does not fit 64 bits. d must be non-zero.
func mulDiv(x, y, d uint64) (q, rem uint64, ok bool) {
	hi, lo := bits.Mul64(x, y)
	if hi >= d {
		return 0, 0, false
	}
	q, rem = bits.Div64(hi, lo, d)
	return q, rem, true
}
