package relay_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/eventstore"
	"pos/relay"
)

func sampleEvent() eventstore.RecordedEvent {
	m := "0193a5c0-0000-7000-8000-000000000001"
	return eventstore.RecordedEvent{
		ID:            uuid.MustParse("0193a5c0-0000-7000-8000-0000000000e1"),
		Stream:        eventstore.StreamName("transaction", m, "0193a5c0-0000-7000-8000-0000000000a1"),
		Version:       2,
		Position:      eventstore.Position{Major: 812, Minor: 3},
		Type:          "ItemAdded",
		SchemaVersion: 1,
		Data:          json.RawMessage(`{"sku":"TEA"}`),
		Metadata: eventstore.Metadata{MerchantID: m, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			TraceState: "pos=1"},
		RecordedAt: time.Date(2026, 11, 25, 14, 0, 0, 123456000, time.UTC),
		Hash:       bytes.Repeat([]byte{0xab}, 32),
		PrevHash:   bytes.Repeat([]byte{0xcd}, 32),
	}
}

func TestEncodeDecode(t *testing.T) {
	ev := sampleEvent()
	prev := eventstore.Position{Major: 800, Minor: 1}
	for _, p := range []*eventstore.Position{&prev, nil} {
		msg, err := relay.Encode(ev, p, 5)
		if err != nil {
			t.Fatal(err)
		}
		if msg.UUID != ev.ID.String() || msg.Metadata.Get("Nats-Msg-Id") != ev.ID.String() ||
			msg.Metadata.Get("traceparent") != ev.Metadata.TraceParent || msg.Metadata.Get("tracestate") != "pos=1" ||
			msg.Metadata.Get("merchant_id") != ev.Metadata.MerchantID || msg.Metadata.Get("partition") != "5" {
			t.Errorf("message %s, metadata %v", msg.UUID, msg.Metadata)
		}
		d, err := relay.Decode(msg.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if (p == nil) != (d.PrevPosition == nil) || p != nil && *d.PrevPosition != *p {
			t.Errorf("prev_position %v, want %v", d.PrevPosition, p)
		}
		got := d.Event
		if got.ID != ev.ID || got.Stream != ev.Stream || got.Version != ev.Version || got.Position != ev.Position ||
			got.Type != ev.Type || got.SchemaVersion != ev.SchemaVersion || string(got.Data) != string(ev.Data) ||
			got.Metadata != ev.Metadata || !got.RecordedAt.Equal(ev.RecordedAt) ||
			!bytes.Equal(got.Hash, ev.Hash) || !bytes.Equal(got.PrevHash, ev.PrevHash) {
			t.Errorf("decoded %+v, want %+v", got, ev)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	msg, err := relay.Encode(sampleEvent(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(m map[string]any){
		"bad id":            func(m map[string]any) { m["event_id"] = "x" },
		"no stream":         func(m map[string]any) { delete(m, "stream") },
		"version 0":         func(m map[string]any) { m["version"] = 0 },
		"start position":    func(m map[string]any) { m["position"] = "" },
		"prev after":        func(m map[string]any) { m["prev_position"] = "813.0" },
		"prev malformed":    func(m map[string]any) { m["prev_position"] = "1" },
		"bad hash":          func(m map[string]any) { m["hash"] = "zz" },
		"no data":           func(m map[string]any) { delete(m, "data") },
		"no merchant":       func(m map[string]any) { m["metadata"] = map[string]any{} },
		"no schema version": func(m map[string]any) { m["schema_version"] = 0 },
	} {
		var m map[string]any
		if err := json.Unmarshal(msg.Payload, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		b, _ := json.Marshal(m)
		if _, err := relay.Decode(b); !errors.Is(err, relay.ErrInvalidMessage) {
			t.Errorf("%s: err %v, want ErrInvalidMessage", name, err)
		}
	}
	if _, err := relay.Decode([]byte("{")); !errors.Is(err, relay.ErrInvalidMessage) {
		t.Errorf("truncated: err %v", err)
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts survives
// Encode and Decode again unchanged.
func FuzzDecode(f *testing.F) {
	ev := sampleEvent()
	prev := eventstore.Position{Major: 1, Minor: 0}
	for _, p := range []*eventstore.Position{&prev, nil} {
		msg, err := relay.Encode(ev, p, 0)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(msg.Payload))
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"event_id":"0193a5c0-0000-7000-8000-0000000000e1","stream":"s","version":1,"position":"1.1","prev_position":"0.0","type":"T","schema_version":1,"data":null,"metadata":{"merchant_id":"m"},"hash":"","prev_hash":""}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		d, err := relay.Decode(payload)
		if err != nil {
			if !errors.Is(err, relay.ErrInvalidMessage) {
				t.Fatalf("error %v is not ErrInvalidMessage", err)
			}
			return
		}
		msg, err := relay.Encode(d.Event, d.PrevPosition, 0)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", payload, err)
		}
		d2, err := relay.Decode(msg.Payload)
		if err != nil {
			t.Fatalf("re-encoded %q rejected: %v", msg.Payload, err)
		}
		msg2, err := relay.Encode(d2.Event, d2.PrevPosition, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg.Payload, msg2.Payload) {
			t.Fatalf("not stable:\n%s\n%s", msg.Payload, msg2.Payload)
		}
		if d2.Event.ID != d.Event.ID || d2.Event.Position != d.Event.Position || d2.Event.Stream != d.Event.Stream ||
			d2.Event.Version != d.Event.Version || (d.PrevPosition == nil) != (d2.PrevPosition == nil) ||
			d.PrevPosition != nil && *d.PrevPosition != *d2.PrevPosition ||
			!bytes.Equal(d.Event.Hash, d2.Event.Hash) || !bytes.Equal(d.Event.PrevHash, d2.Event.PrevHash) {
			t.Fatalf("round trip changed %+v into %+v", d, d2)
		}
	})
}
