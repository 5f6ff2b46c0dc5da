package eventstore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"pos/eventstore"
)

const merchant = "0193a5c0-7c2e-7000-8000-000000000001"

var stream = eventstore.StreamName("transaction", merchant, "0193a5c0-7c2e-7000-8000-0000000000aa")

func TestPositionOrderAndText(t *testing.T) {
	cases := []struct {
		a, b eventstore.Position
		less bool
	}{
		{eventstore.Position{1, 5}, eventstore.Position{2, 1}, true},
		{eventstore.Position{2, 1}, eventstore.Position{1, 5}, false},
		{eventstore.Position{3, 1}, eventstore.Position{3, 2}, true},
		{eventstore.Position{3, 2}, eventstore.Position{3, 2}, false},
		{eventstore.Start, eventstore.Position{0, 1}, true},
	}
	for _, tc := range cases {
		if got := tc.a.Less(tc.b); got != tc.less {
			t.Errorf("%s < %s = %v, want %v", tc.a, tc.b, got, tc.less)
		}
		back, err := eventstore.ParsePosition(tc.a.String())
		if err != nil || back != tc.a {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v", tc.a.String(), back, err, tc.a)
		}
	}
	for _, bad := range []string{"1", "a.b", "1.", ".1", "-1.2", "1.2.3", "18446744073709551616.0", "9223372036854775808.0", "1.9223372036854775808"} {
		if _, err := eventstore.ParsePosition(bad); !errors.Is(err, eventstore.ErrInvalidPosition) {
			t.Errorf("ParsePosition(%q) err = %v, want ErrInvalidPosition", bad, err)
		}
	}
	if p, err := eventstore.ParsePosition(""); err != nil || !p.IsZero() {
		t.Errorf(`ParsePosition("") = %v, %v; want Start`, p, err)
	}
}

func TestExpectedVersion(t *testing.T) {
	if (eventstore.ExpectedVersion{}).Valid() {
		t.Error("the zero ExpectedVersion is valid; callers must choose")
	}
	if eventstore.Exact(0) != eventstore.NoStream {
		t.Error("Exact(0) is not NoStream")
	}
	if v, ok := eventstore.Exact(7).Version(); !ok || v != 7 {
		t.Errorf("Exact(7).Version() = %d, %v", v, ok)
	}
	if _, ok := eventstore.Any.Version(); ok {
		t.Error("Any has an exact version")
	}
}

func TestStreamName(t *testing.T) {
	cat, m, id, ok := eventstore.ParseStreamName(stream)
	if !ok || cat != "transaction" || m != merchant || id != "0193a5c0-7c2e-7000-8000-0000000000aa" {
		t.Fatalf("ParseStreamName(%q) = %q %q %q %v", stream, cat, m, id, ok)
	}
	for _, bad := range []string{"", "transaction", "transaction-" + merchant, "transaction-" + merchant + ".", "-" + merchant + ".x", "transaction-not-a-uuid-at-all-but-36-chars-long.x"} {
		if _, _, _, ok := eventstore.ParseStreamName(bad); ok {
			t.Errorf("ParseStreamName(%q) accepted", bad)
		}
	}
}

func event() eventstore.EventData {
	return eventstore.EventData{
		ID: uuid.MustParse("0193a5c0-7c2e-7000-8000-0000000000ee"), Type: "ItemAdded", SchemaVersion: 1,
		Data: json.RawMessage(`{"sku":"TEA","qty":2}`), Metadata: eventstore.Metadata{MerchantID: merchant, Actor: "u1"},
	}
}

func TestHashCoversEveryField(t *testing.T) {
	e := event()
	base := eventstore.Hash(e.ID, stream, 3, e.Type, 1, e.Data, e.Metadata, []byte("prev"))
	if !bytes.Equal(base, eventstore.Hash(e.ID, stream, 3, e.Type, 1, e.Data, e.Metadata, []byte("prev"))) {
		t.Fatal("hash is not deterministic")
	}
	md := e.Metadata
	variants := map[string][]byte{
		"id":             eventstore.Hash(uuid.New(), stream, 3, e.Type, 1, e.Data, md, []byte("prev")),
		"stream":         eventstore.Hash(e.ID, stream+"x", 3, e.Type, 1, e.Data, md, []byte("prev")),
		"version":        eventstore.Hash(e.ID, stream, 4, e.Type, 1, e.Data, md, []byte("prev")),
		"type":           eventstore.Hash(e.ID, stream, 3, "ItemRemoved", 1, e.Data, md, []byte("prev")),
		"schema version": eventstore.Hash(e.ID, stream, 3, e.Type, 2, e.Data, md, []byte("prev")),
		"data":           eventstore.Hash(e.ID, stream, 3, e.Type, 1, []byte(`{"sku":"TEA","qty":3}`), md, []byte("prev")),
		"prev hash":      eventstore.Hash(e.ID, stream, 3, e.Type, 1, e.Data, md, []byte("prev2")),
		"actor":          eventstore.Hash(e.ID, stream, 3, e.Type, 1, e.Data, eventstore.Metadata{MerchantID: merchant, Actor: "u2"}, []byte("prev")),
		// Moving bytes between adjacent fields must change the hash too.
		"field boundary": eventstore.Hash(e.ID, stream, 3, e.Type, 1, e.Data, eventstore.Metadata{MerchantID: merchant, Actor: "", Role: "u1"}, []byte("prev")),
		"trace":          eventstore.Hash(e.ID, stream, 3, e.Type, 1, e.Data, eventstore.Metadata{MerchantID: merchant, Actor: "u1", TraceParent: "x"}, []byte("prev")),
	}
	for name, h := range variants {
		if bytes.Equal(h, base) {
			t.Errorf("changing %s leaves the hash unchanged", name)
		}
	}
}

func TestPrepareCompactsAndValidates(t *testing.T) {
	e := event()
	e.Data = json.RawMessage("{ \"sku\" : \"TEA\",\n \"qty\": 2 }")
	p, err := eventstore.Prepare(stream, eventstore.Any, []eventstore.EventData{e})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(p.Events[0].Data); got != `{"sku":"TEA","qty":2}` {
		t.Errorf("data = %s, want compacted", got)
	}
	if p.MerchantID != merchant {
		t.Errorf("merchant = %q", p.MerchantID)
	}
	e.Metadata.Actor = strings.Repeat("a", 513)
	if _, err := eventstore.Prepare(stream, eventstore.Any, []eventstore.EventData{e}); !errors.Is(err, eventstore.ErrInvalidAppend) {
		t.Errorf("oversized metadata: err = %v", err)
	}
}

func v1to2(data json.RawMessage) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	m["v2"] = true
	return json.Marshal(m)
}

func v2to3(data json.RawMessage) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	m["v3"] = true
	return json.Marshal(m)
}

func TestRegistry(t *testing.T) {
	cases := []struct {
		name    string
		types   []eventstore.EventType
		wantErr string
	}{
		{"current only", []eventstore.EventType{{Name: "A", Current: 1}}, ""},
		{"full chain", []eventstore.EventType{{Name: "A", Current: 3, Upcasters: map[int]eventstore.Upcaster{1: v1to2, 2: v2to3}}}, ""},
		{"gap in the chain", []eventstore.EventType{{Name: "A", Current: 3, Upcasters: map[int]eventstore.Upcaster{1: v1to2}}}, "no upcaster from schema version 2 to 3"},
		{"upcaster from the current version", []eventstore.EventType{{Name: "A", Current: 1, Upcasters: map[int]eventstore.Upcaster{1: v1to2}}}, "outside"},
		{"duplicate", []eventstore.EventType{{Name: "A", Current: 1}, {Name: "A", Current: 1}}, "registered twice"},
		{"zero version", []eventstore.EventType{{Name: "A"}}, "want at least 1"},
		{"no name", []eventstore.EventType{{Current: 1}}, "no name"},
	}
	for _, tc := range cases {
		_, err := eventstore.NewRegistry(tc.types...)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		}
	}

	reg, err := eventstore.NewRegistry(eventstore.EventType{Name: "A", Current: 3, Upcasters: map[int]eventstore.Upcaster{1: v1to2, 2: v2to3}})
	if err != nil {
		t.Fatal(err)
	}
	up, err := reg.Upcast(eventstore.RecordedEvent{Type: "A", SchemaVersion: 1, Data: json.RawMessage(`{"x":1}`)})
	if err != nil || up.SchemaVersion != 3 || string(up.Data) != `{"v2":true,"v3":true,"x":1}` {
		t.Errorf("upcast v1 = v%d %s, %v", up.SchemaVersion, up.Data, err)
	}
	if _, err := reg.Upcast(eventstore.RecordedEvent{Type: "A", SchemaVersion: 4, Data: json.RawMessage(`{}`)}); !errors.Is(err, eventstore.ErrSchema) {
		t.Errorf("newer schema: err = %v, want ErrSchema", err)
	}
	same, err := reg.Upcast(eventstore.RecordedEvent{Type: "B", SchemaVersion: 7, Data: json.RawMessage(`{}`)})
	if err != nil || same.SchemaVersion != 7 {
		t.Errorf("unregistered type changed: %v %v", same, err)
	}
	if _, err := reg.Upcast(eventstore.RecordedEvent{Type: "A", SchemaVersion: 1, Data: json.RawMessage(`[]`)}); err == nil {
		t.Error("a failing upcaster did not fail the read")
	}
}
