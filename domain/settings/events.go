package settings

import (
	"encoding/json"
	"fmt"
	"time"

	"pos/domain/money"
)

// SchemaVersion is the schema version of every event type defined here.
const SchemaVersion = 1

// Event is one fact in a merchant's settings history. The set is closed.
type Event interface {
	// EventType is the name under which the event is stored.
	EventType() string
	isSettingsEvent()
}

// SettingsChanged records the full new settings (not a difference), so a
// projection or a reader of one event knows them all.
type SettingsChanged struct {
	Currency           money.Currency `json:"currency"`
	PricesIncludeTax   bool           `json:"prices_include_tax"`
	AllowNegativeStock bool           `json:"allow_negative_stock"`
	Timezone           string         `json:"timezone"`
	ChangedBy          string         `json:"changed_by"`
	At                 time.Time      `json:"at"`
}

// EventType returns "SettingsChanged".
func (SettingsChanged) EventType() string { return "SettingsChanged" }

func (SettingsChanged) isSettingsEvent() {}

// EventTypes returns the stored type name of every settings event.
func EventTypes() []string { return []string{"SettingsChanged"} }

// TypeName returns the stored type name of e; it is e.EventType().
func TypeName(e Event) string { return e.EventType() }

// Decode turns a stored event (type name and JSON data at SchemaVersion)
// into the concrete event value. Unknown JSON fields are ignored.
func Decode(eventType string, data []byte) (Event, error) {
	switch eventType {
	case "SettingsChanged":
		var e SettingsChanged
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("decode %s: %w", eventType, err)
		}
		return e, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownEvent, eventType)
}
