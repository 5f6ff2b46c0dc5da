package money

import (
	"cmp"
	"fmt"
	"slices"
)

// Allocate splits total into len(weights) parts proportional to weights with
// the largest-remainder method, so the parts sum to total exactly:
//
//  1. each part i gets floor(total × weights[i] / W), W = Σ weights;
//  2. the units still missing (fewer than len(weights)) go one each to the
//     parts with the largest remainders (total × weights[i] mod W), a tie
//     going to the earlier index so the result is deterministic.
//
// A part is therefore within one unit of its exact share, and a zero weight
// gets zero. Weights must be valid amounts whose sum is a valid amount
// (ErrOutOfRange otherwise); a non-zero total over weights that are all zero
// (or none) is ErrInvalidOperand, as there is nothing to spread it over.
func Allocate(total Amount, weights []Amount) ([]Amount, error) {
	if err := total.Check(); err != nil {
		return nil, err
	}
	w, err := Sum(weights...)
	if err != nil {
		return nil, fmt.Errorf("allocate: weights: %w", err)
	}
	parts := make([]Amount, len(weights))
	if total == 0 {
		return parts, nil
	}
	if w == 0 {
		return nil, fmt.Errorf("%w: cannot allocate %d over zero weights", ErrInvalidOperand, int64(total))
	}
	rems := make([]uint64, len(weights))
	var given Amount
	for i, wi := range weights {
		// total × wi < 2^106 and W > 0; the quotient total × wi / W is at
		// most total × wi / wi = total when wi ≤ W, so it always fits.
		q, rem, ok := mulDiv(uint64(total), uint64(wi), uint64(w))
		if !ok {
			return nil, fmt.Errorf("%w: allocating %d", ErrOutOfRange, int64(total))
		}
		parts[i], rems[i] = Amount(q), rem
		given += Amount(q)
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rems[b], rems[a]) })
	for _, i := range order[:total-given] {
		parts[i]++
	}
	return parts, nil
}
