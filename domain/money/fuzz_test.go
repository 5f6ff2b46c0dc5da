package money_test

import (
	"errors"
	"math/big"
	"testing"

	"pos/domain/money"
)

// roundHalfEven is the reference: the exact rational a·num/den rounded half
// to even, with math/big so nothing can overflow.
func roundHalfEven(a, num, den int64) *big.Int {
	n := new(big.Int).Mul(big.NewInt(a), big.NewInt(num))
	q, r := new(big.Int).QuoRem(n, big.NewInt(den), new(big.Int))
	twice := new(big.Int).Lsh(r, 1)
	switch twice.Cmp(big.NewInt(den)) {
	case 1:
		q.Add(q, big.NewInt(1))
	case 0:
		if q.Bit(0) == 1 {
			q.Add(q, big.NewInt(1))
		}
	}
	return q
}

// FuzzMulDiv checks MulDiv against math/big for every input: the same
// result when it fits, ErrOutOfRange exactly when it does not, and
// ErrInvalidOperand for operands outside the contract. It must never panic.
func FuzzMulDiv(f *testing.F) {
	f.Add(int64(5), int64(1), int64(2))
	f.Add(int64(1250), int64(1100), int64(10000))
	f.Add(int64(money.MaxAmount), int64(1<<62), int64(3))
	f.Add(int64(money.MaxAmount), int64(2), int64(1))
	f.Add(int64(-1), int64(1), int64(1))
	f.Add(int64(7), int64(1), int64(0))
	f.Fuzz(func(t *testing.T, a, num, den int64) {
		for _, rule := range []money.Rounding{money.HalfEven, money.Down} {
			got, err := money.MulDiv(money.Amount(a), num, den, rule)
			switch {
			case a < 0 || a > int64(money.MaxAmount):
				if !errors.Is(err, money.ErrOutOfRange) {
					t.Fatalf("MulDiv(%d, %d, %d) = %d, %v; want ErrOutOfRange for the operand", a, num, den, got, err)
				}
				continue
			case num < 0 || den <= 0:
				if !errors.Is(err, money.ErrInvalidOperand) {
					t.Fatalf("MulDiv(%d, %d, %d) = %d, %v; want ErrInvalidOperand", a, num, den, got, err)
				}
				continue
			}
			var want *big.Int
			if rule == money.HalfEven {
				want = roundHalfEven(a, num, den)
			} else {
				want = new(big.Int).Quo(new(big.Int).Mul(big.NewInt(a), big.NewInt(num)), big.NewInt(den))
			}
			if want.Cmp(big.NewInt(int64(money.MaxAmount))) > 0 {
				if !errors.Is(err, money.ErrOutOfRange) {
					t.Fatalf("MulDiv(%d, %d, %d, %v) = %d, %v; want ErrOutOfRange (exact %s)", a, num, den, rule, got, err, want)
				}
				continue
			}
			if err != nil || int64(got) != want.Int64() {
				t.Fatalf("MulDiv(%d, %d, %d, %v) = %d, %v; want %s", a, num, den, rule, got, err, want)
			}
		}
	})
}

// FuzzAllocate checks that Allocate's parts sum to the total exactly, each
// within one unit above the floor of its exact share, and that a part never
// goes negative.
func FuzzAllocate(f *testing.F) {
	f.Add(int64(100), int64(1), int64(1), int64(1))
	f.Add(int64(1000), int64(3333), int64(3333), int64(3334))
	f.Add(int64(7), int64(0), int64(0), int64(5))
	f.Add(int64(money.MaxAmount), int64(money.MaxAmount)/3, int64(money.MaxAmount)/3, int64(1))
	f.Fuzz(func(t *testing.T, total, w1, w2, w3 int64) {
		weights := []money.Amount{money.Amount(w1), money.Amount(w2), money.Amount(w3)}
		parts, err := money.Allocate(money.Amount(total), weights)
		if err != nil {
			if !errors.Is(err, money.ErrOutOfRange) && !errors.Is(err, money.ErrInvalidOperand) {
				t.Fatalf("Allocate(%d, %v): unexpected error %v", total, weights, err)
			}
			return
		}
		w := big.NewInt(w1 + w2 + w3) // valid weights sum within 2^53
		sum := new(big.Int)
		for i, p := range parts {
			if p < 0 {
				t.Fatalf("part %d = %d is negative", i, p)
			}
			if w.Sign() == 0 {
				if p != 0 {
					t.Fatalf("Allocate(%d, %v) part %d = %d over zero weights", total, weights, i, p)
				}
				continue
			}
			floor := new(big.Int).Quo(new(big.Int).Mul(big.NewInt(total), big.NewInt(int64(weights[i]))), w)
			if d := new(big.Int).Sub(big.NewInt(int64(p)), floor); d.Sign() < 0 || d.Cmp(big.NewInt(1)) > 0 {
				t.Fatalf("Allocate(%d, %v) part %d = %d, floor of exact share %s", total, weights, i, p, floor)
			}
			sum.Add(sum, big.NewInt(int64(p)))
		}
		if sum.Int64() != total {
			t.Fatalf("Allocate(%d, %v) = %v sums to %s", total, weights, parts, sum)
		}
	})
}

// FuzzArithmetic checks Add, Sub and Mul against math/big: a result in range
// is exact, anything else is an error, and nothing wraps around.
func FuzzArithmetic(f *testing.F) {
	f.Add(int64(1), int64(2))
	f.Add(int64(money.MaxAmount), int64(1))
	f.Add(int64(3), int64(5))
	f.Add(int64(-5), int64(3))
	f.Fuzz(func(t *testing.T, a, b int64) {
		inRange := func(x *big.Int) bool {
			return x.Sign() >= 0 && x.Cmp(big.NewInt(int64(money.MaxAmount))) <= 0
		}
		valid := money.Amount(a).Valid() && money.Amount(b).Valid()
		check := func(op string, got money.Amount, err error, exact *big.Int, operandsOK bool) {
			t.Helper()
			if !operandsOK || !inRange(exact) {
				if err == nil {
					t.Fatalf("%d %s %d = %d, want an error", a, op, b, got)
				}
				return
			}
			if err != nil || int64(got) != exact.Int64() {
				t.Fatalf("%d %s %d = %d, %v; want %s", a, op, b, got, err, exact)
			}
		}
		got, err := money.Amount(a).Add(money.Amount(b))
		check("+", got, err, new(big.Int).Add(big.NewInt(a), big.NewInt(b)), valid)
		got, err = money.Amount(a).Sub(money.Amount(b))
		check("−", got, err, new(big.Int).Sub(big.NewInt(a), big.NewInt(b)), valid)
		got, err = money.Amount(a).Mul(b)
		check("×", got, err, new(big.Int).Mul(big.NewInt(a), big.NewInt(b)), money.Amount(a).Valid() && b >= 0)
	})
}
