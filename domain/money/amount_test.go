package money_test

import (
	"errors"
	"math"
	"testing"

	"pos/domain/money"
)

const top = money.MaxAmount

func TestAmountArithmetic(t *testing.T) {
	tests := []struct {
		name    string
		op      func() (money.Amount, error)
		want    money.Amount
		wantErr error
	}{
		{"add", func() (money.Amount, error) { return money.Amount(2).Add(3) }, 5, nil},
		{"add to max", func() (money.Amount, error) { return (top - 1).Add(1) }, top, nil},
		{"add past max", func() (money.Amount, error) { return top.Add(1) }, 0, money.ErrOutOfRange},
		{"add negative operand", func() (money.Amount, error) { return money.Amount(-1).Add(1) }, 0, money.ErrOutOfRange},
		{"add operand above max", func() (money.Amount, error) { return money.Amount(0).Add(top + 1) }, 0, money.ErrOutOfRange},
		{"sub", func() (money.Amount, error) { return money.Amount(5).Sub(3) }, 2, nil},
		{"sub to zero", func() (money.Amount, error) { return top.Sub(top) }, 0, nil},
		{"sub below zero", func() (money.Amount, error) { return money.Amount(3).Sub(5) }, 0, money.ErrOutOfRange},
		{"mul", func() (money.Amount, error) { return money.Amount(3333).Mul(3) }, 9999, nil},
		{"mul by zero", func() (money.Amount, error) { return top.Mul(0) }, 0, nil},
		{"mul to max", func() (money.Amount, error) { return money.Amount(1).Mul(int64(top)) }, top, nil},
		{"mul past max", func() (money.Amount, error) { return money.Amount(2).Mul(int64(top)) }, 0, money.ErrOutOfRange},
		{"mul wraps 64 bits", func() (money.Amount, error) { return top.Mul(math.MaxInt64) }, 0, money.ErrOutOfRange},
		{"mul negative", func() (money.Amount, error) { return money.Amount(2).Mul(-1) }, 0, money.ErrInvalidOperand},
		{"sum", func() (money.Amount, error) { return money.Sum(1, 2, 3) }, 6, nil},
		{"sum of none", func() (money.Amount, error) { return money.Sum() }, 0, nil},
		{"sum past max", func() (money.Amount, error) { return money.Sum(top, 0, 1) }, 0, money.ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.op()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestAmountValid(t *testing.T) {
	for _, tt := range []struct {
		a    money.Amount
		want bool
	}{{0, true}, {top, true}, {-1, false}, {top + 1, false}, {math.MinInt64, false}} {
		if got := tt.a.Valid(); got != tt.want {
			t.Errorf("Amount(%d).Valid() = %v, want %v", tt.a, got, tt.want)
		}
		if err := tt.a.Check(); (err == nil) != tt.want || (err != nil && !errors.Is(err, money.ErrOutOfRange)) {
			t.Errorf("Amount(%d).Check() = %v", tt.a, err)
		}
	}
	if top != 9007199254740991 {
		t.Errorf("MaxAmount = %d, want 2^53−1", top)
	}
}
