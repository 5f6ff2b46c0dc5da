package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// exactNames refuses what encoding/json's decoder would let through in a
// body meant for a value of type t (decodeJSON checks it first, so that a
// misspelt name is reported as such, not as a type error of the field it
// would have filled):
//
//   - a member spelled otherwise than its field (the decoder matches names
//     case-insensitively, so {"QTY":5} would fill qty, where API.md wants
//     an unknown field refused);
//   - a member given twice in one object (the decoder keeps the last, so
//     {"qty":1,"qty":9} would be read as 9 here and as 1 by a proxy,
//     validator or log that keeps the first).
//
// A value whose type decodes itself (json.Unmarshaler, such as a sync
// item's json.RawMessage body, checked when its own command decodes it) is
// skipped whole, so that one command's bad body fails that command, not
// the batch; inside any other value that is not a struct, only duplicates
// are refused.
func exactNames(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	return walkNames(dec, t, "")
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func walkNames(dec *json.Decoder, t reflect.Type, path string) error {
	if decodesItself(t) {
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return invalid("the body is not valid JSON")
		}
		return nil
	}
	tok, err := dec.Token()
	if err != nil {
		return invalid("the body is not valid JSON")
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	t = shapeOf(t)
	switch d {
	case '{':
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = fieldsOf(t)
		} else if t != nil && t.Kind() == reflect.Map {
			elem = t.Elem()
		}
		var seen map[string]struct{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return invalid("the body is not valid JSON")
			}
			name, _ := tok.(string)
			field := joinPath(path, name)
			if _, dup := seen[name]; dup {
				return invalid("field "+strconv.Quote(field)+" is given twice", FieldError{Field: field, Code: "invalid"})
			}
			if seen == nil {
				seen = map[string]struct{}{}
			}
			seen[name] = struct{}{}
			ft := elem
			if fields != nil {
				if ft, ok = fields[name]; !ok {
					return invalid("unknown field "+strconv.Quote(field), FieldError{Field: field, Code: "unknown_field"})
				}
			}
			if err := walkNames(dec, ft, field); err != nil {
				return err
			}
		}
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkNames(dec, elem, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return invalid("the body is not valid JSON")
	}
	return nil
}

// shapeOf is t without pointers, or nil when names do not apply: an
// unknown type, or one that decodes itself.
func shapeOf(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || decodesItself(t) {
		return nil
	}
	return t
}

// decodesItself reports a type (or pointer to one) that parses its own
// JSON, to which field names do not apply.
func decodesItself(t reflect.Type) bool {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t != nil && (reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType))
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// fieldNames caches fieldsOf by struct type.
var fieldNames sync.Map // reflect.Type → map[string]reflect.Type

// fieldsOf returns the JSON names of t's fields, as encoding/json spells
// them, with each field's type; an embedded struct's fields are promoted
// unless t has a field of the same name.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldNames.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	var promoted []reflect.Type
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			if et := shapeOf(f.Type); et != nil && et.Kind() == reflect.Struct {
				promoted = append(promoted, et)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	for _, et := range promoted {
		for name, ft := range fieldsOf(et) {
			if _, ok := m[name]; !ok {
				m[name] = ft
			}
		}
	}
	fieldNames.Store(t, m)
	return m
}
