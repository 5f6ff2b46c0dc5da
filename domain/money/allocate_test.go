package money_test

import (
	"errors"
	"slices"
	"testing"

	"pos/domain/money"
)

func TestAllocate(t *testing.T) {
	tests := []struct {
		name    string
		total   money.Amount
		weights []money.Amount
		want    []money.Amount
		wantErr error
	}{
		{name: "even split", total: 300, weights: []money.Amount{1, 1, 1}, want: []money.Amount{100, 100, 100}},
		// 100 over 3 equal lines: 33.33 each; the one unit left goes to the
		// first of the tied remainders.
		{name: "tie goes to the earlier line", total: 100, weights: []money.Amount{1, 1, 1}, want: []money.Amount{34, 33, 33}},
		// 1000 over 3333/3333/3334 (subtotal 10000): exact shares 333.3,
		// 333.3, 333.4; floors 333+333+333 = 999; the largest remainder is
		// the third line's.
		{name: "largest remainder wins", total: 1000, weights: []money.Amount{3333, 3333, 3334}, want: []money.Amount{333, 333, 334}},
		// 10 over 1/2/7 (weights 10): exact.
		{name: "exact shares", total: 10, weights: []money.Amount{1, 2, 7}, want: []money.Amount{1, 2, 7}},
		// 7 over 5000/3000/2000: shares 3.5, 2.1, 1.4 → floors 3, 2, 1; the
		// leftover unit goes to remainder .5 (the first line).
		{name: "remainders ordered", total: 7, weights: []money.Amount{5000, 3000, 2000}, want: []money.Amount{4, 2, 1}},
		{name: "zero weight gets nothing", total: 5, weights: []money.Amount{0, 3, 0, 2}, want: []money.Amount{0, 3, 0, 2}},
		{name: "zero total", total: 0, weights: []money.Amount{0, 0}, want: []money.Amount{0, 0}},
		{name: "no weights, zero total", total: 0, weights: nil, want: []money.Amount{}},
		{name: "huge", total: money.MaxAmount, weights: []money.Amount{money.MaxAmount - 1, 1}, want: []money.Amount{money.MaxAmount - 1, 1}},
		{name: "all weights zero", total: 1, weights: []money.Amount{0, 0}, wantErr: money.ErrInvalidOperand},
		{name: "weights overflow", total: 1, weights: []money.Amount{money.MaxAmount, 1}, wantErr: money.ErrOutOfRange},
		{name: "negative weight", total: 1, weights: []money.Amount{2, -1}, wantErr: money.ErrOutOfRange},
		{name: "negative total", total: -1, weights: []money.Amount{1}, wantErr: money.ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := money.Allocate(tt.total, tt.weights)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && !slices.Equal(got, tt.want) {
				t.Errorf("Allocate(%d, %v) = %v, want %v", tt.total, tt.weights, got, tt.want)
			}
		})
	}
}
