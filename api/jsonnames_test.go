package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// TestDecodeNamesExactly: encoding/json alone matches member names without
// case and keeps the last of two; the decoder refuses both, naming the
// field as the wire spells it, and still accepts every exact body.
func TestDecodeNamesExactly(t *testing.T) {
	cases := []struct {
		name  string
		dst   any
		body  string
		field string // "" when the body is accepted
		code  string
	}{
		{"exact names", &addItemRequest{}, `{"sku":"A","name":"A","qty":2,"unit_price":1,"tax_rate_bps":1100}`, "", ""},
		{"a name in upper case", &addItemRequest{}, `{"sku":"A","name":"A","QTY":2,"unit_price":1}`, "QTY", "unknown_field"},
		{"a name in title case", &paymentRequest{}, `{"Method":"CASH","amount":1}`, "Method", "unknown_field"},
		{"a name given twice", &addItemRequest{}, `{"sku":"A","name":"A","qty":1,"qty":1000,"unit_price":1}`, "qty", "invalid"},
		{"a name given twice in two cases", &addItemRequest{}, `{"sku":"A","name":"A","qty":1,"Qty":1000,"unit_price":1}`, "Qty", "unknown_field"},
		{"a nested name in another case", &refundRequest{}, `{"reason":"x","lines":[{"line_id":"a","qty":1},{"line_id":"b","QTY":1}]}`, "lines[1].QTY", "unknown_field"},
		{"a nested name given twice", &refundRequest{}, `{"reason":"x","lines":[{"line_id":"a","qty":1,"qty":2}]}`, "lines[0].qty", "invalid"},
		{"exact nested names", &refundRequest{}, `{"reason":"x","lines":[{"line_id":"a","qty":1}]}`, "", ""},
		{"a null body", &emptyRequest{}, `null`, "", ""},
		// A sync item's body is decoded by its command's handler, which
		// checks it then: one bad body fails its command, not the batch.
		{"a sync body in another case", &syncRequest{}, `{"commands":[{"idempotency_key":"k","method":"POST","path":"/v1/transactions","body":{"Branch_ID":"x"}}]}`, "", ""},
		{"a sync body with a name twice", &syncRequest{}, `{"commands":[{"idempotency_key":"k","method":"POST","path":"/p","body":{"a":1,"a":2}}]}`, "", ""},
		{"a name in another case, of the wrong type", &addItemRequest{}, `{"sku":"A","name":"A","QTY":"x","unit_price":1}`, "QTY", "unknown_field"},
		{"a sync command in another case", &syncRequest{}, `{"commands":[{"Idempotency_Key":"k","method":"POST","path":"/p"}]}`, "commands[0].Idempotency_Key", "unknown_field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := decodeJSON([]byte(c.body), c.dst)
			if c.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var p *Problem
			if !errors.As(err, &p) || p.Status != 400 || p.Code != "invalid_request" {
				t.Fatalf("got %v, want a 400 invalid_request problem", err)
			}
			if len(p.Errors) != 1 || p.Errors[0].Field != c.field || p.Errors[0].Code != c.code {
				t.Fatalf("errors %+v, want field %q code %q", p.Errors, c.field, c.code)
			}
		})
	}
}

// TestFieldsOfFollowsEncodingJSON: the names exactNames accepts are the
// ones encoding/json writes, for every request shape.
func TestFieldsOfFollowsEncodingJSON(t *testing.T) {
	for _, dst := range []any{&openTransactionRequest{}, &addItemRequest{}, &discountRequest{}, &paymentRequest{},
		&confirmRequest{}, &reasonRequest{}, &refundRequest{}, &settingsRequest{}, &emptyRequest{}, &syncRequest{}} {
		fields := fieldsOf(shapeOf(reflectTypeOf(dst)))
		written, err := json.Marshal(fillAll(dst))
		if err != nil {
			t.Fatal(err)
		}
		var names map[string]json.RawMessage
		if err := json.Unmarshal(written, &names); err != nil {
			t.Fatal(err)
		}
		if len(names) != len(fields) {
			t.Fatalf("%T: encoding/json writes %d names, fieldsOf knows %d (%v)", dst, len(names), len(fields), fields)
		}
		for n := range names {
			if _, ok := fields[n]; !ok {
				t.Fatalf("%T: encoding/json writes %q, unknown to fieldsOf", dst, n)
			}
		}
	}
}

func reflectTypeOf(v any) reflect.Type { return reflect.TypeOf(v) }

// fillAll sets every field of the struct dst points to to a value that
// omitempty keeps, and returns dst.
func fillAll(dst any) any {
	v := reflect.ValueOf(dst).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		if !f.CanSet() {
			continue
		}
		switch {
		case f.Type() == reflect.TypeFor[json.RawMessage]():
			f.SetBytes([]byte("{}"))
		case f.Kind() == reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case f.Kind() == reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		case f.Kind() == reflect.String:
			f.SetString("x")
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.CanInt():
			f.SetInt(1)
		case f.CanUint():
			f.SetUint(1)
		}
	}
	return dst
}
