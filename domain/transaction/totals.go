package transaction

import (
	"fmt"
	"slices"

	"pos/domain/money"
)

// computeTotals applies rules R1–R6 of the package documentation to a
// draft's lines and discounts: it returns the totals and a copy of lines
// with Gross, Discount, Net, Tax and Total filled in. It fails only when a
// figure exceeds money.MaxAmount, which AddItem refuses beforehand.
func computeTotals(cur money.Currency, inclusive bool, lines []Line, discounts []Discount) (Totals, []Line, error) {
	out := slices.Clone(lines)
	grosses := make([]money.Amount, len(out))
	var subtotal money.Amount
	for i := range out {
		g, err := out[i].UnitPrice.Mul(out[i].Qty) // R1
		if err != nil {
			return Totals{}, nil, fmt.Errorf("line %s gross: %w", out[i].LineID, err)
		}
		grosses[i] = g
		if subtotal, err = subtotal.Add(g); err != nil {
			return Totals{}, nil, fmt.Errorf("subtotal: %w", err)
		}
	}
	discount, err := discountTotal(subtotal, discounts) // R2
	if err != nil {
		return Totals{}, nil, err
	}
	shares, err := money.Allocate(discount, grosses) // R3
	if err != nil {
		return Totals{}, nil, fmt.Errorf("allocate discount: %w", err)
	}
	totals := Totals{Currency: cur, Subtotal: subtotal, Discount: discount}
	for i := range out {
		l := &out[i]
		l.Gross, l.Discount = grosses[i], shares[i]
		// A share never exceeds its line's gross: it is at most one unit
		// above the exact share, which is at most the gross, and equal to
		// it only when the exact share is an integer.
		if l.Net, err = l.Gross.Sub(l.Discount); err != nil {
			return Totals{}, nil, fmt.Errorf("line %s net: %w", l.LineID, err)
		}
		if l.Tax, l.Total, err = lineTax(l.Net, l.TaxRateBps, inclusive); err != nil { // R4, R5
			return Totals{}, nil, fmt.Errorf("line %s tax: %w", l.LineID, err)
		}
		if totals.Tax, err = totals.Tax.Add(l.Tax); err != nil {
			return Totals{}, nil, fmt.Errorf("tax: %w", err)
		}
		if totals.GrandTotal, err = totals.GrandTotal.Add(l.Total); err != nil { // R6
			return Totals{}, nil, fmt.Errorf("grand total: %w", err)
		}
	}
	return totals, out, nil
}

// lineTax returns a line's tax and total from its net (R4, R5).
func lineTax(net money.Amount, rateBps int64, inclusive bool) (tax, total money.Amount, err error) {
	if rateBps < 0 || rateBps > MaxRateBps {
		return 0, 0, fmt.Errorf("tax rate %d bps out of range", rateBps)
	}
	if !inclusive {
		if tax, err = money.MulDivHalfEven(net, rateBps, money.BpsDenominator); err != nil {
			return 0, 0, err
		}
		total, err = net.Add(tax)
		return tax, total, err
	}
	pre, err := money.MulDivHalfEven(net, money.BpsDenominator, money.BpsDenominator+rateBps)
	if err != nil {
		return 0, 0, err
	}
	// pre ≤ net: the exact quotient is at most net, an integer, and
	// rounding to the nearest integer cannot pass an integer bound.
	tax, err = net.Sub(pre)
	return tax, net, err
}

// discountRequest is the uncapped discount a set of discounts asks for:
// round_half_even(subtotal × Σbps / 10000) + Σamounts (R2). ok is false when
// it is larger than the subtotal (or Σbps exceeds 100 %, or the sum
// overflows), which ApplyDiscount refuses.
func discountRequest(subtotal money.Amount, discounts []Discount) (requested money.Amount, ok bool) {
	var bps int64
	var amounts money.Amount
	for _, d := range discounts {
		switch d.Kind {
		case DiscountPercent:
			bps += d.Bps // at most MaxDiscounts × 10000: no overflow
		case DiscountAmount:
			var err error
			if amounts, err = amounts.Add(d.Amount); err != nil {
				return 0, false
			}
		}
	}
	if bps > MaxRateBps {
		return 0, false
	}
	pct, err := money.BpsOf(subtotal, bps)
	if err != nil {
		return 0, false
	}
	requested, err = pct.Add(amounts)
	if err != nil || requested > subtotal {
		return 0, false
	}
	return requested, true
}

// discountTotal is R2's discount: the requested discount capped at the
// subtotal. The cap matters only after RemoveItem lowered the subtotal
// below discounts that fitted when applied; percent discounts follow the
// subtotal, amounts do not.
func discountTotal(subtotal money.Amount, discounts []Discount) (money.Amount, error) {
	for _, d := range discounts {
		if d.Kind != DiscountPercent && d.Kind != DiscountAmount {
			return 0, fmt.Errorf("discount %s: unknown kind %q", d.DiscountID, d.Kind)
		}
		if d.Bps < 0 || d.Amount < 0 {
			return 0, fmt.Errorf("discount %s: negative", d.DiscountID)
		}
	}
	if requested, ok := discountRequest(subtotal, discounts); ok {
		return requested, nil
	}
	return subtotal, nil
}
