package money

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/text/currency"
)

// Currency is an ISO 4217 code in canonical upper case ("IDR", "USD").
// The zero value is not a currency; Validate tells.
type Currency string

// ErrInvalidCurrency reports a string that is not a usable ISO 4217 code.
var ErrInvalidCurrency = errors.New("money: invalid currency")

// ParseCurrency reads an ISO 4217 code, in any letter case, and returns it in
// canonical upper case. Codes that golang.org/x/text/currency does not know
// are refused, and so are XXX ("no currency") and XTS (reserved for
// testing), which cannot price a sale.
func ParseCurrency(s string) (Currency, error) {
	if len(s) != 3 {
		return "", fmt.Errorf("%w: %q is not a three-letter code", ErrInvalidCurrency, s)
	}
	u, err := currency.ParseISO(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrInvalidCurrency, s, err)
	}
	// ParseISO answers XXX as the zero Unit with no error.
	if u == (currency.Unit{}) || u == currency.XTS {
		return "", fmt.Errorf("%w: %q does not denote money", ErrInvalidCurrency, s)
	}
	return Currency(u.String()), nil
}

// InUse reports whether c is legal tender somewhere now, as the data of
// the golang.org/x/text/currency in go.mod has it: a withdrawn currency
// (DEM, FRF) is not, nor is a unit that is not money (XAU, CLF, XDR). That
// data lags: it still counts HRK, and knows no VES or MRU at all (which
// ParseCurrency refuses). Upgrading x/text changes what this accepts. Only a
// currency chosen for new sales is held to it; stored sales keep theirs
// (Validate does not ask), whatever later data says of it.
func (c Currency) InUse() bool { return tender()[c] }

// tender is the set of currencies legal tender in some region now.
var tender = sync.OnceValue(func() map[Currency]bool {
	m := map[Currency]bool{}
	for it := currency.Query(); it.Next(); {
		m[Currency(it.Unit().String())] = true
	}
	return m
})

// Validate returns nil when c is a usable code in canonical form, and an
// error wrapping ErrInvalidCurrency otherwise ("idr" is refused here, though
// ParseCurrency accepts it: stored values are canonical).
func (c Currency) Validate() error {
	p, err := ParseCurrency(string(c))
	if err != nil {
		return err
	}
	if p != c {
		return fmt.Errorf("%w: %q is not in canonical form %q", ErrInvalidCurrency, string(c), string(p))
	}
	return nil
}

// Exponent returns the number of minor-unit digits of c, as
// golang.org/x/text/currency's standard rounding gives it (IDR 0, USD 2,
// JPY 0): an Amount of 12345 is 123.45 USD but 12345 IDR.
func (c Currency) Exponent() (int, error) {
	if err := c.Validate(); err != nil {
		return 0, err
	}
	u, err := currency.ParseISO(string(c))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidCurrency, err)
	}
	scale, _ := currency.Standard.Rounding(u)
	return scale, nil
}

// String returns the code.
func (c Currency) String() string { return string(c) }
