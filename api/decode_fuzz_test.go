package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// FuzzDecodeRequests feeds arbitrary bodies to the strict decoder of every
// request shape: it must never panic, and must either fill the value or
// answer a 400 invalid_request problem.
func FuzzDecodeRequests(f *testing.F) {
	f.Add([]byte(`{"sku":"TEA","name":"Tea","qty":2,"unit_price":15000,"tax_rate_bps":1100}`))
	f.Add([]byte(`{"branch_id":"0193a5c0-0000-7000-8000-000000000001","currency":"IDR"}`))
	f.Add([]byte(`{"kind":"percent","bps":1250,"reason":"x"}`))
	f.Add([]byte(`{"method":"CASH","amount":50000}`))
	f.Add([]byte(`{"reason":"x","lines":[{"line_id":"a","qty":1}]}`))
	f.Add([]byte(`{"qty":"1"}`))
	f.Add([]byte(`{} {}`))
	f.Add([]byte(`{"unit_price":9007199254740993}`))
	f.Add([]byte(`{"QTY":1,"qty":2,"lines":[{"Line_ID":"a"}]}`))
	f.Add([]byte(`{"commands":[{"idempotency_key":"k","body":{"a":[1,{"b":2,"b":3}]}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{
			&openTransactionRequest{}, &addItemRequest{}, &discountRequest{}, &paymentRequest{},
			&confirmRequest{}, &reasonRequest{}, &refundRequest{}, &settingsRequest{}, &emptyRequest{}, &syncRequest{},
		}
		for _, dst := range targets {
			err := decodeJSON(body, dst)
			if err == nil {
				continue
			}
			var p *Problem
			if !errors.As(err, &p) || p.Status != 400 || p.Code != "invalid_request" {
				t.Fatalf("decode %T: %v is not a 400 invalid_request problem", dst, err)
			}
		}
	})
}

// FuzzIfMatch: any If-Match value is a version or a 400.
func FuzzIfMatch(f *testing.F) {
	f.Add(`"3"`)
	f.Add(`W/"12"`)
	f.Add(`*`)
	f.Fuzz(func(t *testing.T, h string) {
		r := httptestRequest(h)
		v, err := ifMatch(r)
		if err != nil {
			var p *Problem
			if !errors.As(err, &p) || p.Status != 400 {
				t.Fatalf("If-Match %q: %v", h, err)
			}
			return
		}
		if v == nil && h != "" && trimmed(h) != "" {
			t.Fatalf("If-Match %q parsed to nothing", h)
		}
	})
}

func httptestRequest(ifMatch string) *http.Request {
	r, _ := http.NewRequest("POST", "/", nil)
	r.Header.Set("If-Match", ifMatch)
	return r
}

func trimmed(s string) string { return strings.TrimSpace(s) }
