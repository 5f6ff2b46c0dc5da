// Package settings is the merchant's settings aggregate (SPEC §4.1): the
// currency new sales are priced in, whether prices include tax, whether
// stock may go negative, and the time zone that decides business days and
// accounting periods. Settings are event-sourced like everything else, so an
// auditor can see when a merchant switched to tax-inclusive prices and who
// did it.
//
// A merchant with no history has the defaults (Defaults): there is no
// "created" event, and a change to exactly the current values records
// nothing. Like every package under domain/, it reads no clock and imports
// no infrastructure; loading time-zone data is I/O, so the caller checks
// that a time zone exists and this package only checks its form.
package settings

import (
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"pos/domain"
	"pos/domain/money"
)

// Values are a merchant's settings at one point in time.
type Values struct {
	// Currency is the ISO 4217 currency of new sales; a sale keeps the
	// currency it was opened in.
	Currency money.Currency
	// PricesIncludeTax says whether unit prices include tax; copied into
	// each sale when it is opened.
	PricesIncludeTax bool
	// AllowNegativeStock lets a sale reserve stock the branch does not have.
	AllowNegativeStock bool
	// Timezone is an IANA time zone name ("Asia/Jakarta").
	Timezone string
}

// Defaults returns the settings of a merchant that never changed them: IDR,
// tax-exclusive prices, no negative stock, Asia/Jakarta.
func Defaults() Values {
	return Values{Currency: "IDR", PricesIncludeTax: false, AllowNegativeStock: false, Timezone: "Asia/Jakarta"}
}

// MaxTimezoneLen is the longest accepted time zone name, in bytes; the
// longest IANA name is about 30.
const MaxTimezoneLen = 64

// MaxActorLen is the longest accepted actor id (the token's sub).
const MaxActorLen = domain.MaxActorLen

// Errors. ErrInvalid and ValidationError are the shared domain ones, so the
// API maps them once for every aggregate.
var (
	// ErrInvalid is malformed input (400 invalid_request), reported as a
	// *ValidationError.
	ErrInvalid = domain.ErrInvalid
	// ErrInvalidHistory reports an event that cannot apply: stored history
	// is corrupt or from a newer build.
	ErrInvalidHistory = errors.New("settings: event does not apply")
	// ErrUnknownEvent reports a type name Decode does not know.
	ErrUnknownEvent = errors.New("settings: unknown event type")
)

// ValidationError says which input was refused and why; it unwraps to
// ErrInvalid. See domain.ValidationError.
type ValidationError = domain.ValidationError

// Settings is the aggregate. The zero value is a merchant with no history,
// which has the Defaults. Fields are unexported; state changes only through
// Apply. It is not safe for concurrent use.
type Settings struct {
	values    Values
	version   uint64
	changedAt time.Time
	changedBy string
	// history is every change, in stream order, for ValuesAt. A copy of
	// a Settings shares it: a clone (for snapshots, say) must copy it.
	history []dated
}

type dated struct {
	at     time.Time
	values Values
}

// Load rebuilds the settings from their history, oldest first.
func Load(history []Event) (*Settings, error) {
	s := &Settings{}
	for _, e := range history {
		if err := s.Apply(e); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Values returns the current settings: the Defaults until the first change.
func (s *Settings) Values() Values {
	if s.version == 0 {
		return Defaults()
	}
	return s.values
}

// ValuesAt returns the settings in force at t: those of the last change
// (in stream order) made at or before t, or the Defaults before the first.
// A sale rung up offline, at a time its till reports, is priced with these,
// not with a change made while the till was offline.
func (s *Settings) ValuesAt(t time.Time) Values {
	for i := len(s.history) - 1; i >= 0; i-- {
		if !s.history[i].at.After(t) {
			return s.history[i].values
		}
	}
	return Defaults()
}

// Version returns the number of events applied (0 with no history).
func (s *Settings) Version() uint64 { return s.version }

// ChangedAt returns the time of the last change; zero with no history.
func (s *Settings) ChangedAt() time.Time { return s.changedAt }

// ChangedBy returns who made the last change; "" with no history.
func (s *Settings) ChangedBy() string { return s.changedBy }

// Change is the command that replaces all the settings at once (PUT
// semantics: every field is the new value).
type Change struct {
	Currency           money.Currency
	PricesIncludeTax   bool
	AllowNegativeStock bool
	// Timezone must already be known to exist (the caller loads it); here
	// it is only checked to be non-empty, at most MaxTimezoneLen bytes and
	// without spaces or control characters.
	Timezone string
	// By is the user who makes the change (the token's sub).
	By string
	At time.Time
}

// Change decides a change of settings. It returns SettingsChanged with the
// full new values, or no event at all when they equal the current ones, so
// that a repeated PUT leaves no trace and no new version.
func (s *Settings) Change(cmd Change) ([]Event, error) {
	if err := cmd.Currency.Validate(); err != nil {
		return nil, &ValidationError{Field: "currency", Code: domain.CodeInvalid, Reason: "must be an ISO 4217 code in upper case", Err: err}
	}
	// Only a new currency: a merchant whose currency the data later
	// calls withdrawn can still change its other settings.
	if cmd.Currency != s.Values().Currency && !cmd.Currency.InUse() {
		return nil, &ValidationError{Field: "currency", Code: domain.CodeInvalid, Reason: "must be a currency in use as legal tender (not a withdrawn one, nor a metal or unit of account)"}
	}
	if err := checkTimezone(cmd.Timezone); err != nil {
		return nil, err
	}
	switch {
	case cmd.By == "" || !utf8.ValidString(cmd.By):
		return nil, &ValidationError{Field: "changed_by", Code: domain.CodeRequired, Reason: "must name who changes the settings"}
	case utf8.RuneCountInString(cmd.By) > MaxActorLen:
		return nil, &ValidationError{Field: "changed_by", Code: domain.CodeTooLong, Reason: fmt.Sprintf("must be at most %d characters", MaxActorLen)}
	case cmd.At.IsZero():
		return nil, &ValidationError{Field: "at", Code: domain.CodeRequired, Reason: "the command's time must be set"}
	}
	next := Values{Currency: cmd.Currency, PricesIncludeTax: cmd.PricesIncludeTax, AllowNegativeStock: cmd.AllowNegativeStock, Timezone: cmd.Timezone}
	if next == s.Values() {
		return nil, nil
	}
	return []Event{SettingsChanged{
		Currency: next.Currency, PricesIncludeTax: next.PricesIncludeTax, AllowNegativeStock: next.AllowNegativeStock,
		Timezone: next.Timezone, ChangedBy: cmd.By, At: cmd.At.UTC(),
	}}, nil
}

func checkTimezone(tz string) error {
	switch {
	case tz == "":
		return &ValidationError{Field: "timezone", Code: domain.CodeRequired, Reason: "must be an IANA time zone name"}
	case len(tz) > MaxTimezoneLen:
		return &ValidationError{Field: "timezone", Code: domain.CodeTooLong, Reason: fmt.Sprintf("must be at most %d bytes", MaxTimezoneLen)}
	case !utf8.ValidString(tz):
		return &ValidationError{Field: "timezone", Code: domain.CodeInvalid, Reason: "must be UTF-8 text"}
	}
	for _, r := range tz {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return &ValidationError{Field: "timezone", Code: domain.CodeInvalid, Reason: "must not contain spaces or control characters"}
		}
	}
	return nil
}

// Apply changes the state by one event and increments the version.
func (s *Settings) Apply(e Event) error {
	switch e := e.(type) {
	case SettingsChanged:
		s.values = Values{Currency: e.Currency, PricesIncludeTax: e.PricesIncludeTax, AllowNegativeStock: e.AllowNegativeStock, Timezone: e.Timezone}
		s.changedAt, s.changedBy = e.At, e.ChangedBy
		s.history = append(s.history, dated{at: e.At, values: s.values})
	default:
		return fmt.Errorf("%w: %T at version %d", ErrInvalidHistory, e, s.version+1)
	}
	s.version++
	return nil
}
