package money_test

import (
	"errors"
	"testing"

	"pos/domain/money"
)

func TestParseCurrency(t *testing.T) {
	tests := []struct {
		in           string
		want         money.Currency
		wantExponent int
		wantErr      bool
	}{
		{in: "IDR", want: "IDR", wantExponent: 0},
		{in: "USD", want: "USD", wantExponent: 2},
		{in: "JPY", want: "JPY", wantExponent: 0},
		{in: "EUR", want: "EUR", wantExponent: 2},
		{in: "KWD", want: "KWD", wantExponent: 3},
		{in: "idr", want: "IDR", wantExponent: 0},
		{in: "", wantErr: true},
		{in: "XXX", wantErr: true},
		{in: "XTS", wantErr: true},
		{in: "ABC", wantErr: true},
		{in: "USDX", wantErr: true},
		{in: "US", wantErr: true},
		{in: "12$", wantErr: true},
		{in: "IDR ", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := money.ParseCurrency(tt.in)
			if tt.wantErr {
				if !errors.Is(err, money.ErrInvalidCurrency) {
					t.Fatalf("ParseCurrency(%q) = %q, %v; want ErrInvalidCurrency", tt.in, got, err)
				}
				if err := money.Currency(tt.in).Validate(); !errors.Is(err, money.ErrInvalidCurrency) {
					t.Errorf("Validate(%q) = %v, want ErrInvalidCurrency", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseCurrency(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			exp, err := got.Exponent()
			if err != nil || exp != tt.wantExponent {
				t.Errorf("%s.Exponent() = %d, %v; want %d", got, exp, err, tt.wantExponent)
			}
		})
	}
}

func TestCurrencyValidateWantsCanonicalForm(t *testing.T) {
	if err := money.Currency("IDR").Validate(); err != nil {
		t.Errorf("Validate(IDR) = %v", err)
	}
	if err := money.Currency("idr").Validate(); !errors.Is(err, money.ErrInvalidCurrency) {
		t.Errorf("Validate(idr) = %v, want ErrInvalidCurrency", err)
	}
	if _, err := money.Currency("idr").Exponent(); !errors.Is(err, money.ErrInvalidCurrency) {
		t.Errorf("Exponent(idr) err = %v, want ErrInvalidCurrency", err)
	}
}

// TestCurrencyInUse: withdrawn currencies and units that are not money are
// valid codes (stored sales in them still load) but not in use.
func TestCurrencyInUse(t *testing.T) {
	for _, c := range []money.Currency{"IDR", "USD", "EUR", "JPY", "KWD", "XAF", "XOF", "CHF"} {
		if !c.InUse() {
			t.Errorf("%s: not in use, want in use", c)
		}
	}
	for _, c := range []money.Currency{"DEM", "FRF", "ESP", "LTL", "ZWL", "XAU", "XPT", "CLF", "XDR", "USN"} {
		if c.InUse() {
			t.Errorf("%s: in use, want withdrawn or not money", c)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: Validate = %v, want a valid code (history in it must load)", c, err)
		}
	}
}
