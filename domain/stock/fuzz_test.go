package stock_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"pos/domain/stock"
)

// FuzzDecode checks that no type name and stored bytes make Decode panic,
// that a name outside EventTypes is ErrUnknownEvent, and that whatever
// decodes re-encodes and decodes to an equal value (a fixed point: the
// second encoding is the first) and applies, or is refused as another
// ledger's, without panicking.
func FuzzDecode(f *testing.F) {
	for _, e := range allEvents {
		data, err := json.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(e.EventType(), data)
	}
	f.Add("StockSold", []byte(`{"qty":-9223372036854775808,"unit_cost":9007199254740992,"at":"2025-03-01T10:00:00+07:00"}`))
	f.Add("StockReturned", []byte(`{"at":"2025-03-01T03:00:00.123456789-00:30","SKU":"\u0000","Qty":1}`))
	f.Add("StockReceived", []byte(`null`))
	f.Add("StockAdjusted", []byte(`{"delta":1e3}`))
	f.Add("Nope", []byte(`{}`))
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		e, err := stock.Decode(typ, data)
		known := false
		for _, name := range stock.EventTypes() {
			known = known || name == typ
		}
		if !known {
			if !errors.Is(err, stock.ErrUnknownEvent) || e != nil {
				t.Fatalf("Decode(%q) = %v, %v; want ErrUnknownEvent", typ, e, err)
			}
			return
		}
		if err != nil {
			if e != nil || errors.Is(err, stock.ErrUnknownEvent) {
				t.Fatalf("Decode(%q) = %v, %v", typ, e, err)
			}
			return
		}
		if e.EventType() != typ {
			t.Fatalf("Decode(%q) gave a %s", typ, e.EventType())
		}
		enc, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("re-encode %s %+v: %v", typ, e, err)
		}
		back, err := stock.Decode(typ, enc)
		if err != nil {
			t.Fatalf("decode the re-encoding %s: %v", enc, err)
		}
		enc2, err := json.Marshal(back)
		if err != nil {
			t.Fatalf("re-encode again: %v", err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not a fixed point:\n%s\n%s", enc, enc2)
		}
		// Times compare by instant and offset: "+00:00" may decode into
		// the Local location and re-encode as "Z", the same time.
		if !reflect.DeepEqual(utc(back), utc(e)) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", back, e)
		}
		for _, k := range []stock.Key{e.LedgerKey(), key} {
			l := stock.New(k)
			if err := l.Apply(e); err != nil && !errors.Is(err, stock.ErrInvalidHistory) {
				t.Fatalf("Apply(%s) err = %v, want nil or ErrInvalidHistory", typ, err)
			}
		}
	})
}

// utc returns e with its time in UTC, for comparing instants.
func utc(e stock.Event) stock.Event {
	switch e := e.(type) {
	case stock.StockReceived:
		e.At = e.At.UTC()
		return e
	case stock.StockAdjusted:
		e.At = e.At.UTC()
		return e
	case stock.StockReserved:
		e.At = e.At.UTC()
		return e
	case stock.ReservationReleased:
		e.At = e.At.UTC()
		return e
	case stock.StockSold:
		e.At = e.At.UTC()
		return e
	case stock.StockReturned:
		e.At = e.At.UTC()
		return e
	case stock.StockTransferredOut:
		e.At = e.At.UTC()
		return e
	case stock.StockTransferredIn:
		e.At = e.At.UTC()
		return e
	}
	return e
}
