package settings_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"pos/domain/money"
	"pos/domain/settings"
)

var t0 = time.Date(2025, 3, 1, 3, 0, 0, 0, time.UTC)

func TestDefaults(t *testing.T) {
	want := settings.Values{Currency: "IDR", PricesIncludeTax: false, AllowNegativeStock: false, Timezone: "Asia/Jakarta"}
	if got := settings.Defaults(); got != want {
		t.Errorf("Defaults() = %+v, want %+v", got, want)
	}
	var s settings.Settings
	if got := s.Values(); got != want || s.Version() != 0 {
		t.Errorf("zero Settings = %+v v%d, want the defaults at version 0", got, s.Version())
	}
}

func TestChange(t *testing.T) {
	usdInclusive := settings.SettingsChanged{Currency: "USD", PricesIncludeTax: true, Timezone: "America/New_York", ChangedBy: "admin-1", At: t0}
	valid := settings.Change{Currency: "USD", PricesIncludeTax: true, Timezone: "America/New_York", By: "admin-1", At: t0}
	with := func(f func(*settings.Change)) settings.Change {
		c := valid
		f(&c)
		return c
	}
	tests := []struct {
		name      string
		given     []settings.Event
		when      settings.Change
		then      []settings.Event
		wantErr   error
		wantField string
	}{
		{name: "changes from the defaults", when: valid, then: []settings.Event{usdInclusive}},
		{
			name: "stores the time in UTC",
			when: with(func(c *settings.Change) { c.At = t0.In(time.FixedZone("WIB", 7*3600)) }),
			then: []settings.Event{usdInclusive},
		},
		{name: "the same values again record nothing", given: []settings.Event{usdInclusive}, when: valid, then: nil},
		{
			name: "the defaults on a fresh merchant record nothing",
			when: settings.Change{Currency: "IDR", Timezone: "Asia/Jakarta", By: "admin-1", At: t0},
			then: nil,
		},
		{
			name:  "one field differs",
			given: []settings.Event{usdInclusive},
			when:  with(func(c *settings.Change) { c.AllowNegativeStock = true; c.At = t0.Add(time.Hour) }),
			then: []settings.Event{settings.SettingsChanged{Currency: "USD", PricesIncludeTax: true, AllowNegativeStock: true,
				Timezone: "America/New_York", ChangedBy: "admin-1", At: t0.Add(time.Hour)}},
		},
		{
			name:  "back to the defaults is a change",
			given: []settings.Event{usdInclusive},
			when:  settings.Change{Currency: "IDR", Timezone: "Asia/Jakarta", By: "admin-2", At: t0},
			then:  []settings.Event{settings.SettingsChanged{Currency: "IDR", Timezone: "Asia/Jakarta", ChangedBy: "admin-2", At: t0}},
		},
		{name: "no currency", when: with(func(c *settings.Change) { c.Currency = "" }), wantErr: money.ErrInvalidCurrency, wantField: "currency"},
		{name: "lower-case currency", when: with(func(c *settings.Change) { c.Currency = "usd" }), wantErr: settings.ErrInvalid, wantField: "currency"},
		{name: "unknown currency", when: with(func(c *settings.Change) { c.Currency = "ABC" }), wantErr: settings.ErrInvalid, wantField: "currency"},
		{name: "no time zone", when: with(func(c *settings.Change) { c.Timezone = "" }), wantErr: settings.ErrInvalid, wantField: "timezone"},
		{name: "time zone with a space", when: with(func(c *settings.Change) { c.Timezone = "Asia/ Jakarta" }), wantErr: settings.ErrInvalid, wantField: "timezone"},
		{name: "time zone with a control character", when: with(func(c *settings.Change) { c.Timezone = "Asia/Jakarta\x00" }), wantErr: settings.ErrInvalid, wantField: "timezone"},
		{name: "time zone too long", when: with(func(c *settings.Change) { c.Timezone = strings.Repeat("A", 65) }), wantErr: settings.ErrInvalid, wantField: "timezone"},
		{name: "time zone of 64 bytes", when: with(func(c *settings.Change) { c.Timezone = strings.Repeat("A", 64) }),
			then: []settings.Event{settings.SettingsChanged{Currency: "USD", PricesIncludeTax: true, Timezone: strings.Repeat("A", 64), ChangedBy: "admin-1", At: t0}}},
		{name: "no actor", when: with(func(c *settings.Change) { c.By = "" }), wantErr: settings.ErrInvalid, wantField: "changed_by"},
		{name: "no time", when: with(func(c *settings.Change) { c.At = time.Time{} }), wantErr: settings.ErrInvalid, wantField: "at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := settings.Load(tt.given)
			if err != nil {
				t.Fatal(err)
			}
			state := func() any {
				return [...]any{s.Values(), s.Version(), s.ChangedAt(), s.ChangedBy(), s.ValuesAt(tt.when.At)}
			}
			before := state()
			got, err := s.Change(tt.when)
			if state() != before {
				t.Errorf("the command changed the state")
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantField != "" {
				var ve *settings.ValidationError
				if !errors.As(err, &ve) || ve.Field != tt.wantField {
					t.Errorf("err = %v, want a validation error on %q", err, tt.wantField)
				}
			}
			if !reflect.DeepEqual(got, tt.then) {
				t.Fatalf("events = %+v, want %+v", got, tt.then)
			}
			for _, e := range got {
				data, err := json.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				back, err := settings.Decode(e.EventType(), data)
				if err != nil || !reflect.DeepEqual(back, e) {
					t.Errorf("round trip = %+v, %v; want %+v", back, err, e)
				}
				if err := s.Apply(e); err != nil {
					t.Fatal(err)
				}
				ch := e.(settings.SettingsChanged)
				want := settings.Values{Currency: ch.Currency, PricesIncludeTax: ch.PricesIncludeTax, AllowNegativeStock: ch.AllowNegativeStock, Timezone: ch.Timezone}
				if s.Values() != want || s.ChangedBy() != ch.ChangedBy || !s.ChangedAt().Equal(ch.At) {
					t.Errorf("after apply: %+v by %s at %v", s.Values(), s.ChangedBy(), s.ChangedAt())
				}
				if s.Version() != uint64(len(tt.given)+1) {
					t.Errorf("version = %d", s.Version())
				}
			}
		})
	}
}

func TestEvents(t *testing.T) {
	e := settings.SettingsChanged{Currency: "USD", PricesIncludeTax: true, AllowNegativeStock: true, Timezone: "UTC", ChangedBy: "admin-1", At: t0}
	got, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"currency":"USD","prices_include_tax":true,"allow_negative_stock":true,"timezone":"UTC","changed_by":"admin-1","at":"2025-03-01T03:00:00Z"}`
	if string(got) != want {
		t.Errorf("JSON:\n got %s\nwant %s", got, want)
	}
	if types := settings.EventTypes(); len(types) != 1 || types[0] != settings.TypeName(e) {
		t.Errorf("EventTypes() = %v", types)
	}
	if _, err := settings.Decode("Nope", nil); !errors.Is(err, settings.ErrUnknownEvent) {
		t.Errorf("Decode(unknown) err = %v", err)
	}
	if _, err := settings.Decode("SettingsChanged", []byte("{")); err == nil {
		t.Errorf("Decode(bad JSON) succeeded")
	}
	var s settings.Settings
	if err := s.Apply(nil); !errors.Is(err, settings.ErrInvalidHistory) || s.Version() != 0 {
		t.Errorf("Apply(nil) = %v at version %d", err, s.Version())
	}
	if _, err := settings.Load([]settings.Event{nil}); !errors.Is(err, settings.ErrInvalidHistory) {
		t.Errorf("Load(bad) err = %v", err)
	}
}

// TestValuesAt: the settings in force at a time are those of the last
// change made by then, the defaults before any.
func TestValuesAt(t *testing.T) {
	usd := settings.SettingsChanged{Currency: "USD", PricesIncludeTax: true, Timezone: "America/New_York", At: t0}
	jpy := settings.SettingsChanged{Currency: "JPY", AllowNegativeStock: true, Timezone: "Asia/Tokyo", At: t0.Add(time.Hour)}
	valuesOf := func(e settings.SettingsChanged) settings.Values {
		return settings.Values{Currency: e.Currency, PricesIncludeTax: e.PricesIncludeTax, AllowNegativeStock: e.AllowNegativeStock, Timezone: e.Timezone}
	}
	s, err := settings.Load([]settings.Event{usd, jpy})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		at   time.Time
		want settings.Values
	}{
		{"before any change", t0.Add(-time.Second), settings.Defaults()},
		{"at the first change", t0, valuesOf(usd)},
		{"between the changes", t0.Add(59 * time.Minute), valuesOf(usd)},
		{"at the second change", t0.Add(time.Hour), valuesOf(jpy)},
		{"after both", t0.Add(48 * time.Hour), valuesOf(jpy)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.ValuesAt(tt.at); got != tt.want {
				t.Errorf("ValuesAt(%s) = %+v, want %+v", tt.at, got, tt.want)
			}
		})
	}
	if got := (&settings.Settings{}).ValuesAt(t0); got != settings.Defaults() {
		t.Errorf("no history: ValuesAt = %+v, want the defaults", got)
	}
}

// TestChangeToACurrencyNotInUse: a merchant cannot move to a withdrawn
// currency or a unit that is not money, but one whose currency is no longer
// in use can still change its other settings.
func TestChangeToACurrencyNotInUse(t *testing.T) {
	for _, c := range []money.Currency{"DEM", "XAU", "CLF"} {
		s := &settings.Settings{}
		_, err := s.Change(settings.Change{Currency: c, Timezone: "Asia/Jakarta", By: "admin-1", At: t0})
		var v *settings.ValidationError
		if !errors.As(err, &v) || v.Field != "currency" {
			t.Errorf("change to %s: %v, want a currency ValidationError", c, err)
		}
	}
	legacy, err := settings.Load([]settings.Event{settings.SettingsChanged{Currency: "DEM", Timezone: "Europe/Berlin", At: t0}})
	if err != nil {
		t.Fatal(err)
	}
	events, err := legacy.Change(settings.Change{Currency: "DEM", Timezone: "Europe/Paris", By: "admin-1", At: t0.Add(time.Hour)})
	if err != nil || len(events) != 1 {
		t.Errorf("a DEM merchant changing its zone: %v, %v; want one event", events, err)
	}
}
