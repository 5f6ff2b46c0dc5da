package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrSchema reports an event whose schema version this build cannot read: an
// unregistered old version, or one newer than the build knows.
var ErrSchema = errors.New("eventstore: unreadable schema version")

// Upcaster turns the data of one schema version into the next version's.
type Upcaster func(data json.RawMessage) (json.RawMessage, error)

// EventType declares an event type's current schema version and the upcasters
// from each older version: Upcasters[v] turns version v into v+1, for every v
// from 1 to Current-1.
type EventType struct {
	Name      string
	Current   int
	Upcasters map[int]Upcaster
}

// Registry knows every event type's current schema version and how to upcast
// older versions. It is immutable after NewRegistry and safe for concurrent
// use.
type Registry struct {
	types map[string]EventType
}

// NewRegistry checks every declared type and returns a Registry. A type with a
// gap in its upcaster chain (a version below Current without an upcaster), an
// upcaster at or above Current, or a duplicate name is an error: start-up
// fails rather than a reader meeting the gap in production.
func NewRegistry(types ...EventType) (*Registry, error) {
	r := &Registry{types: make(map[string]EventType, len(types))}
	for _, t := range types {
		if t.Name == "" {
			return nil, errors.New("event registry: a type has no name")
		}
		if _, dup := r.types[t.Name]; dup {
			return nil, fmt.Errorf("event registry: %s registered twice", t.Name)
		}
		if t.Current < 1 {
			return nil, fmt.Errorf("event registry: %s: current schema version %d, want at least 1", t.Name, t.Current)
		}
		for v := 1; v < t.Current; v++ {
			if t.Upcasters[v] == nil {
				return nil, fmt.Errorf("event registry: %s: no upcaster from schema version %d to %d", t.Name, v, v+1)
			}
		}
		for v := range t.Upcasters {
			if v < 1 || v >= t.Current {
				return nil, fmt.Errorf("event registry: %s: upcaster from version %d, outside 1..%d", t.Name, v, t.Current-1)
			}
		}
		r.types[t.Name] = t
	}
	return r, nil
}

// Current returns the current schema version of an event type, and false for
// an unregistered type.
func (r *Registry) Current(eventType string) (int, bool) {
	t, ok := r.types[eventType]
	return t.Current, ok
}

// Upcast returns e with Data in its type's current schema version. Events of
// unregistered types pass through unchanged. Hash and PrevHash stay those of
// the stored form: verification always reads the store without upcasting.
func (r *Registry) Upcast(e RecordedEvent) (RecordedEvent, error) {
	t, ok := r.types[e.Type]
	if !ok || e.SchemaVersion == t.Current {
		return e, nil
	}
	if e.SchemaVersion > t.Current || e.SchemaVersion < 1 {
		return e, fmt.Errorf("%w: %s version %d (this build reads up to %d), event %s", ErrSchema, e.Type, e.SchemaVersion, t.Current, e.ID)
	}
	data := e.Data
	for v := e.SchemaVersion; v < t.Current; v++ {
		next, err := t.Upcasters[v](data)
		if err != nil {
			return e, fmt.Errorf("upcast %s event %s from version %d: %w", e.Type, e.ID, v, err)
		}
		data = next
	}
	e.Data, e.SchemaVersion = data, t.Current
	return e, nil
}

// Upcasting wraps a Store so that every read returns events upcast to their
// current schema version. Appends and Settle pass through.
type Upcasting struct {
	Store
	Registry *Registry
}

// ReadStream implements Store, upcasting each event.
func (u Upcasting) ReadStream(ctx context.Context, stream string, from uint64, limit int) ([]RecordedEvent, error) {
	events, err := u.Store.ReadStream(ctx, stream, from, limit)
	return u.upcastAll(events, err)
}

// ReadStreamBackward implements Store, upcasting each event.
func (u Upcasting) ReadStreamBackward(ctx context.Context, stream string, from uint64, limit int) ([]RecordedEvent, error) {
	events, err := u.Store.ReadStreamBackward(ctx, stream, from, limit)
	return u.upcastAll(events, err)
}

// ReadAll implements Store, upcasting each event.
func (u Upcasting) ReadAll(ctx context.Context, after Position, filter Filter, limit int) ([]RecordedEvent, error) {
	events, err := u.Store.ReadAll(ctx, after, filter, limit)
	return u.upcastAll(events, err)
}

func (u Upcasting) upcastAll(events []RecordedEvent, err error) ([]RecordedEvent, error) {
	if err != nil {
		return nil, err
	}
	for i := range events {
		if events[i], err = u.Registry.Upcast(events[i]); err != nil {
			return nil, err
		}
	}
	return events, nil
}
