package eventstore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/uuid"

	"pos/eventstore"
)

// FuzzPrepare feeds arbitrary stream names, types and payloads to the
// validation every append goes through: it must never panic, must refuse
// with ErrInvalidAppend, and what it accepts must be compact valid JSON.
func FuzzPrepare(f *testing.F) {
	f.Add(stream, "ItemAdded", 1, []byte(`{"a":1}`))
	f.Add("", "", 0, []byte(``))
	f.Add(stream, "x", 1, []byte("\"a\\u0000\""))
	f.Add("transaction-"+merchant+".", "A B", 2, []byte(`{"a": [1, 2 ,3]}`))
	f.Fuzz(func(t *testing.T, stream, eventType string, schema int, data []byte) {
		e := eventstore.EventData{ID: uuid.New(), Type: eventType, SchemaVersion: schema, Data: data,
			Metadata: eventstore.Metadata{MerchantID: merchant}}
		_, m, _, _ := eventstore.ParseStreamName(stream)
		e.Metadata.MerchantID = m
		p, err := eventstore.Prepare(stream, eventstore.Any, []eventstore.EventData{e})
		if err != nil {
			if !errors.Is(err, eventstore.ErrInvalidAppend) {
				t.Fatalf("error %v is not ErrInvalidAppend", err)
			}
			return
		}
		got := p.Events[0].Data
		if !json.Valid(got) {
			t.Fatalf("accepted invalid JSON %q", got)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, got); err != nil || !bytes.Equal(buf.Bytes(), got) {
			t.Fatalf("accepted data is not compact: %q", got)
		}
	})
}

// FuzzParsePosition: any string either fails with ErrInvalidPosition or
// round-trips through String.
func FuzzParsePosition(f *testing.F) {
	f.Add("12.34")
	f.Add("")
	f.Add("1.2.3")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := eventstore.ParsePosition(s)
		if err != nil {
			if !errors.Is(err, eventstore.ErrInvalidPosition) {
				t.Fatalf("error %v is not ErrInvalidPosition", err)
			}
			return
		}
		back, err := eventstore.ParsePosition(p.String())
		if err != nil || back != p {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, p, p.String(), back, err)
		}
	})
}
