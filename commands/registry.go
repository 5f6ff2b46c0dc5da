package commands

import (
	"pos/domain/settings"
	"pos/domain/stock"
	"pos/domain/transaction"
	"pos/eventstore"
)

// Registry returns every event type the commands write, each with its
// current schema version. Upcasters from older versions are added here when
// a schema changes; the store then upcasts on read, so history is never
// rewritten.
func Registry() (*eventstore.Registry, error) {
	var types []eventstore.EventType
	add := func(names []string, current int) {
		for _, name := range names {
			types = append(types, eventstore.EventType{Name: name, Current: current})
		}
	}
	add(transaction.EventTypes(), transaction.SchemaVersion)
	add(settings.EventTypes(), settings.SchemaVersion)
	add(stock.EventTypes(), stock.SchemaVersion)
	return eventstore.NewRegistry(types...)
}
