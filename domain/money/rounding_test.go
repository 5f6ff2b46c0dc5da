package money_test

import (
	"errors"
	"math"
	"testing"

	"pos/domain/money"
)

func TestMulDiv(t *testing.T) {
	tests := []struct {
		name          string
		a             money.Amount
		num, den      int64
		rule          money.Rounding
		want          money.Amount
		wantErr       error
		wantErrSubstr string
	}{
		{name: "exact", a: 10, num: 3, den: 5, rule: money.HalfEven, want: 6},
		{name: "half-even tie down to even", a: 5, num: 1, den: 2, rule: money.HalfEven, want: 2},               // 2.5
		{name: "half-even tie up to even", a: 7, num: 1, den: 2, rule: money.HalfEven, want: 4},                 // 3.5
		{name: "half-even tie at zero", a: 1, num: 1, den: 2, rule: money.HalfEven, want: 0},                    // 0.5
		{name: "half-even above half", a: 5, num: 1, den: 3, rule: money.HalfEven, want: 2},                     // 1.67
		{name: "half-even below half", a: 4, num: 1, den: 3, rule: money.HalfEven, want: 1},                     // 1.33
		{name: "down", a: 5, num: 2, den: 3, rule: money.Down, want: 3},                                         // 3.33
		{name: "down never rounds up", a: 99, num: 1, den: 100, rule: money.Down, want: 0},                      // 0.99
		{name: "USD 11% of 1.25 ties to even", a: 1250, num: 1100, den: 10000, rule: money.HalfEven, want: 138}, // 137.5
		{name: "USD 11% of 1.35 ties to even", a: 1350, num: 1100, den: 10000, rule: money.HalfEven, want: 148}, // 148.5
		{name: "128-bit product", a: money.MaxAmount, num: math.MaxInt64, den: math.MaxInt64, rule: money.HalfEven, want: money.MaxAmount},
		{name: "result past max", a: money.MaxAmount, num: 2, den: 1, rule: money.HalfEven, wantErr: money.ErrOutOfRange},
		{name: "quotient past 64 bits", a: money.MaxAmount, num: math.MaxInt64, den: 1, rule: money.Down, wantErr: money.ErrOutOfRange},
		{name: "rounding up past max", a: money.MaxAmount, num: 2*int64(money.MaxAmount) + 1, den: 2 * int64(money.MaxAmount), rule: money.HalfEven, wantErr: money.ErrOutOfRange},
		{name: "zero divisor", a: 1, num: 1, den: 0, rule: money.HalfEven, wantErr: money.ErrInvalidOperand},
		{name: "negative divisor", a: 1, num: 1, den: -1, rule: money.HalfEven, wantErr: money.ErrInvalidOperand},
		{name: "negative numerator", a: 1, num: -1, den: 1, rule: money.HalfEven, wantErr: money.ErrInvalidOperand},
		{name: "negative amount", a: -1, num: 1, den: 1, rule: money.HalfEven, wantErr: money.ErrOutOfRange},
		{name: "no rule", a: 1, num: 1, den: 1, rule: 0, wantErr: money.ErrInvalidOperand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := money.MulDiv(tt.a, tt.num, tt.den, tt.rule)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("MulDiv(%d, %d, %d, %v) err = %v, want %v", tt.a, tt.num, tt.den, tt.rule, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("MulDiv(%d, %d, %d, %v) = %d, want %d", tt.a, tt.num, tt.den, tt.rule, got, tt.want)
			}
		})
	}
}

func TestBpsOf(t *testing.T) {
	tests := []struct {
		a    money.Amount
		bps  int64
		want money.Amount
	}{
		{9999, 1100, 1100},    // 1099.89
		{10000, 1250, 1250},   // 12.5 % exactly
		{50, 1000, 5},         // exact
		{25, 1000, 2},         // 2.5 → 2
		{35, 1000, 4},         // 3.5 → 4
		{1, 5000, 0},          // 0.5 → 0
		{3, 5000, 2},          // 1.5 → 2
		{12345, 10000, 12345}, // 100 %
		{12345, 0, 0},
	}
	for _, tt := range tests {
		got, err := money.BpsOf(tt.a, tt.bps)
		if err != nil || got != tt.want {
			t.Errorf("BpsOf(%d, %d) = %d, %v; want %d", tt.a, tt.bps, got, err, tt.want)
		}
	}
}

func TestRoundingString(t *testing.T) {
	if got := money.HalfEven.String(); got != "half-even" {
		t.Errorf("HalfEven.String() = %q", got)
	}
	if got := money.Down.String(); got != "down" {
		t.Errorf("Down.String() = %q", got)
	}
	if got := money.Rounding(0).String(); got != "Rounding(0)" {
		t.Errorf("Rounding(0).String() = %q", got)
	}
}
