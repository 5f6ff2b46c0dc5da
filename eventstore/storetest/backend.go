// Package storetest is the contract suite every eventstore.Store backend
// passes: the definition of "the same semantics". A backend's own test calls
// Run with a Backend that says how to open a store and which optional
// capabilities it has; a test needing a capability the backend lacks is
// skipped with the reason, never silently passed.
//
// Every test works in streams of a merchant id made fresh for it, and reads
// the global feed through that merchant's filter, so the suite runs on a
// shared server (EventStoreDB) as well as on a database of its own.
package storetest

import (
	"context"
	"encoding/json"
	"testing"

	"pos/eventstore"
)

// Backend describes a store under test.
type Backend struct {
	// Name appears in failure messages.
	Name string
	// Open returns a ready store. It is called once per test; it may return
	// the same store each time (tests isolate themselves by merchant).
	Open func(t *testing.T) eventstore.Store
	// HoldAppend, when set, starts appending events to stream and returns
	// with the append written but not committed; commit makes it visible.
	// Backends whose global order is assigned at commit (EventStoreDB) have
	// no such window and leave it nil.
	HoldAppend func(ctx context.Context, t *testing.T, stream string, events ...eventstore.EventData) (commit func() error)
	// Tamper, when set, overwrites a stored event's data behind the store's
	// back, as a superuser with the protections disabled would. Backends
	// whose storage cannot be altered leave it nil.
	Tamper func(ctx context.Context, t *testing.T, stream string, version uint64, data json.RawMessage)
	// IDsPerStream says event ids are unique within a stream only, so reusing
	// an id in another stream is not detected (EventStoreDB has no lookup by
	// event id). The check for that case is then skipped.
	IDsPerStream bool
}
