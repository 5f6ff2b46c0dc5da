// Package money is integer money for the point of sale: an Amount of minor
// units of an ISO 4217 Currency, checked arithmetic, and the named rounding
// rules every other package uses, so that no amount is ever computed twice in
// two slightly different ways.
//
// # Range
//
// Every Amount is an integer in 0..MaxAmount (2^53−1 = 9007199254740991), the
// largest integer every JSON client reads exactly. Operations check their
// inputs and result and return ErrOutOfRange instead of wrapping around or
// going negative; nothing here panics on any input. There is no float
// anywhere: products are taken in 128 bits (math/bits) before dividing.
//
// # Rounding rules
//
//   - HalfEven ("banker's rounding"): the exact quotient is rounded to the
//     nearest integer, and an exact tie (a remainder of exactly half) goes to
//     the even neighbour: 2.5 → 2, 3.5 → 4, 0.5 → 0. Ties are therefore not
//     biased upward over many lines, which matters for tax.
//   - Down: the exact quotient truncated (for non-negative values, floor).
//
// MulDiv(a, num, den, rule) is rule(a × num / den) for the exact rational
// a × num / den; MulDivHalfEven and BpsOf are its named uses. Allocate splits
// an amount pro rata with the largest-remainder method, so the parts always
// sum exactly to the whole.
package money

import (
	"errors"
	"fmt"
	"math/bits"
)

// Amount is a sum of money in minor units of a currency (rupiah for IDR,
// cents for USD). It carries no currency: the aggregate that holds it knows
// which one. Valid amounts are 0..MaxAmount.
type Amount int64

// MaxAmount is the largest valid Amount, 2^53−1: above it a JSON number is no
// longer read exactly by every client (JavaScript, many decoders use IEEE doubles).
const MaxAmount Amount = 1<<53 - 1

// Sentinel errors.
var (
	// ErrOutOfRange reports an amount, operand or result outside
	// 0..MaxAmount: an overflow, or a subtraction that would go negative.
	ErrOutOfRange = errors.New("money: amount out of range")
	// ErrInvalidOperand reports an operand that makes the operation
	// meaningless: a negative multiplier, a zero or negative divisor, or
	// allocating a non-zero amount over weights that are all zero.
	ErrInvalidOperand = errors.New("money: invalid operand")
)

// Valid reports whether a is within 0..MaxAmount.
func (a Amount) Valid() bool { return a >= 0 && a <= MaxAmount }

// Check returns nil for a valid amount and an error wrapping ErrOutOfRange
// otherwise; it is the one check for amounts that arrive from outside.
func (a Amount) Check() error {
	if !a.Valid() {
		return fmt.Errorf("%w: %d is not within 0..%d", ErrOutOfRange, int64(a), int64(MaxAmount))
	}
	return nil
}

// Add returns a + b, or ErrOutOfRange when an operand is invalid or the sum
// exceeds MaxAmount.
func (a Amount) Add(b Amount) (Amount, error) {
	if err := checkBoth(a, b); err != nil {
		return 0, err
	}
	// Both are at most 2^53−1, so the int64 sum cannot wrap.
	s := a + b
	if s > MaxAmount {
		return 0, fmt.Errorf("%w: %d + %d exceeds %d", ErrOutOfRange, int64(a), int64(b), int64(MaxAmount))
	}
	return s, nil
}

// Sub returns a − b, or ErrOutOfRange when an operand is invalid or b > a:
// amounts never go negative, so a shortfall is an error for the caller to
// name (an overpayment, a refund above what was paid), not a negative sum.
func (a Amount) Sub(b Amount) (Amount, error) {
	if err := checkBoth(a, b); err != nil {
		return 0, err
	}
	if b > a {
		return 0, fmt.Errorf("%w: %d − %d is negative", ErrOutOfRange, int64(a), int64(b))
	}
	return a - b, nil
}

// Mul returns a × n (a quantity times a unit price), or ErrOutOfRange when
// the product exceeds MaxAmount, and ErrInvalidOperand for a negative n.
func (a Amount) Mul(n int64) (Amount, error) {
	if err := a.Check(); err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%w: negative multiplier %d", ErrInvalidOperand, n)
	}
	hi, lo := bits.Mul64(uint64(a), uint64(n))
	if hi != 0 || lo > uint64(MaxAmount) {
		return 0, fmt.Errorf("%w: %d × %d exceeds %d", ErrOutOfRange, int64(a), n, int64(MaxAmount))
	}
	return Amount(lo), nil
}

// Sum returns the sum of xs (0 for none), or ErrOutOfRange when any is
// invalid or the total exceeds MaxAmount.
func Sum(xs ...Amount) (Amount, error) {
	var s Amount
	for _, x := range xs {
		var err error
		if s, err = s.Add(x); err != nil {
			return 0, err
		}
	}
	return s, nil
}

func checkBoth(a, b Amount) error {
	if err := a.Check(); err != nil {
		return err
	}
	return b.Check()
}
