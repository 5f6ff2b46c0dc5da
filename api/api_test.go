package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/api/auth"
	"pos/commands"
	"pos/eventstore"
	"pos/internal/telemetry"
)

func TestSaleEndToEnd(t *testing.T) {
	e := newEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	manager := newUser(t, merchant, "MANAGER")

	s := e.open(&cashier, branch)
	r := s.addItem(3, 3333)
	if got := r.json(t)["totals"].(map[string]any)["grand_total"].(float64); got != 11099 {
		t.Errorf("grand total of 3 × 3333 at 11%% = %v, want 11099", got)
	}
	must(t, s.post("/discounts", map[string]any{"kind": "amount", "amount": 99, "reason": "loyalty"}), 201)
	s.stockUp()
	r = must(t, s.post("/checkout", map[string]any{}), 200)
	if r.str(t, "status") != "pending_payment" || r.header.Get("ETag") != `"4"` || r.header.Get("X-Position") != r.str(t, "position") {
		t.Fatalf("checkout answer: %s %v", r.body, r.header)
	}
	grand := int64(r.json(t)["totals"].(map[string]any)["grand_total"].(float64))
	card := must(t, s.post("/payments", map[string]any{"method": "CARD", "amount": grand - 1000}), 201)
	if card.str(t, "payment_status") != "pending" || card.str(t, "status") != "pending_payment" {
		t.Fatalf("card payment: %s", card.body)
	}
	must(t, s.post("/payments/"+card.str(t, "payment_id")+"/confirm", map[string]any{"gateway_ref": "gw-1"}), 200)
	cash := must(t, s.post("/payments", map[string]any{"method": "CASH", "amount": 5000}), 201)
	if cash.num(t, "applied") != 1000 || cash.num(t, "change") != 4000 || cash.str(t, "status") != "paid" {
		t.Fatalf("cash payment: %s", cash.body)
	}
	must(t, s.post("/complete", map[string]any{}), 200)

	s.u = &manager
	ref := must(t, s.post("/refunds", map[string]any{"reason": "broken", "lines": []map[string]any{{"line_id": s.line, "qty": 1}}}), 201)
	if ref.str(t, "status") != "partially_refunded" || ref.num(t, "amount") <= 0 || ref.str(t, "refund_id") == "" {
		t.Fatalf("refund: %s", ref.body)
	}

	events, err := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(s.id)), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if last := events[len(events)-1]; last.Type != "RefundIssued" || last.Metadata.Actor != "user-manager" || last.Metadata.MerchantID != merchant.String() {
		t.Errorf("last event %s by %q for %q", last.Type, last.Metadata.Actor, last.Metadata.MerchantID)
	}
	if e.validated.Load() == 0 {
		t.Fatal("no response was validated against the OpenAPI document")
	}
}

func TestErrorCodes(t *testing.T) {
	e := newEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	manager := newUser(t, merchant, "MANAGER")
	admin := newUser(t, merchant, "ADMIN")
	elsewhere := newUser(t, merchant, "CASHIER", uuid.New())

	draft := e.open(&cashier, branch)
	draft.addItem(1, 10000)
	paid := e.open(&cashier, branch)
	paid.addItem(1, 10000)
	paid.stockUp()
	must(t, paid.post("/checkout", map[string]any{}), 200)
	must(t, paid.post("/payments", map[string]any{"method": "CASH", "amount": 20000}), 201)
	pending := e.open(&cashier, branch)
	pending.addItem(1, 10000)
	pending.stockUp()
	must(t, pending.post("/checkout", map[string]any{}), 200)

	big := `{"sku":"` + strings.Repeat("x", 1<<20) + `"}`
	existing := draft.id
	branchAdmin := newUser(t, merchant, "ADMIN", branch)
	keyed := uuid.NewString() // opened with a key, whose answer is stored
	must(t, e.do(request{method: "POST", path: "/v1/transactions", user: &cashier, body: map[string]any{"branch_id": branch, "transaction_id": keyed},
		headers: map[string]string{"Idempotency-Key": "opened-here"}}), 201)
	cases := []struct {
		name   string
		req    request
		status int
		code   string
	}{
		{"malformed JSON", request{method: "POST", path: draft.path("/items"), user: &cashier, body: `{"sku":`}, 400, "invalid_request"},
		{"unknown field", request{method: "POST", path: draft.path("/items"), user: &cashier, body: `{"sku":"A","name":"A","qty":1,"unit_price":1,"colour":"red"}`}, 400, "invalid_request"},
		{"wrong type", request{method: "POST", path: draft.path("/items"), user: &cashier, body: `{"sku":"A","name":"A","qty":"one","unit_price":1}`}, 400, "invalid_request"},
		{"a field in another case", request{method: "POST", path: draft.path("/items"), user: &cashier, body: `{"sku":"A","name":"A","QTY":1,"unit_price":1}`}, 400, "invalid_request"},
		{"a decline without a reason", request{method: "POST", path: pending.path("/payments/" + uuid.NewString() + "/decline"), user: &cashier, body: `{}`}, 400, "invalid_request"},
		{"a field given twice", request{method: "POST", path: draft.path("/items"), user: &cashier, body: `{"sku":"A","name":"A","qty":1,"qty":1000,"unit_price":1}`}, 400, "invalid_request"},
		{"qty zero", request{method: "POST", path: draft.path("/items"), user: &cashier, body: map[string]any{"sku": "A", "name": "A", "qty": 0, "unit_price": 1}}, 400, "invalid_request"},
		{"price above 2^53-1", request{method: "POST", path: draft.path("/items"), user: &cashier, body: `{"sku":"A","name":"A","qty":1,"unit_price":9007199254740992}`}, 400, "invalid_request"},
		{"tax rate above 100%", request{method: "POST", path: draft.path("/items"), user: &cashier, body: map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 1, "tax_rate_bps": 10001}}, 400, "invalid_request"},
		{"branch not a UUID", request{method: "POST", path: "/v1/transactions", user: &cashier, body: map[string]any{"branch_id": "main"}}, 400, "invalid_request"},
		{"two JSON values", request{method: "POST", path: draft.path("/checkout"), user: &cashier, body: `{} {}`}, 400, "invalid_request"},
		{"bad If-Match", request{method: "POST", path: draft.path("/checkout"), user: &cashier, body: `{}`, headers: map[string]string{"If-Match": "latest"}}, 400, "invalid_request"},
		{"no token", request{method: "POST", path: draft.path("/checkout"), body: `{}`}, 401, "unauthorized"},
		{"garbage token", request{method: "POST", path: draft.path("/checkout"), body: `{}`, headers: map[string]string{"Authorization": "Bearer abc.def.ghi"}}, 401, "unauthorized"},
		{"cashier voids", request{method: "POST", path: draft.path("/void"), user: &cashier, body: map[string]any{"reason": "x"}}, 403, "forbidden"},
		{"cashier refunds", request{method: "POST", path: paid.path("/refunds"), user: &cashier, body: map[string]any{"reason": "x", "amount": 1}}, 403, "forbidden"},
		{"manager changes settings", request{method: "PUT", path: "/v1/settings", user: &manager, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "Asia/Jakarta"}}, 403, "forbidden"},
		{"stale If-Match on a missing transaction", request{method: "POST", path: "/v1/transactions/" + uuid.NewString() + "/checkout", user: &cashier, body: `{}`, headers: map[string]string{"If-Match": `"7"`}}, 404, "not_found"},
		{"missing transaction", request{method: "POST", path: "/v1/transactions/" + uuid.NewString() + "/checkout", user: &cashier, body: `{}`}, 404, "not_found"},
		{"malformed id", request{method: "POST", path: "/v1/transactions/nope/checkout", user: &cashier, body: `{}`}, 404, "not_found"},
		{"unknown line", request{method: "DELETE", path: draft.path("/items/" + uuid.NewString()), user: &cashier}, 404, "not_found"},
		{"pay a draft", request{method: "POST", path: draft.path("/payments"), user: &cashier, body: map[string]any{"method": "CASH", "amount": 1}}, 409, "invalid_state"},
		{"complete a draft", request{method: "POST", path: draft.path("/complete"), user: &cashier, body: `{}`}, 409, "invalid_state"},
		{"reopen an existing id", request{method: "POST", path: "/v1/transactions", user: &cashier, body: map[string]any{"branch_id": branch, "transaction_id": existing}}, 409, "already_exists"},
		{"stale If-Match", request{method: "POST", path: draft.path("/checkout"), user: &cashier, body: `{}`, headers: map[string]string{"If-Match": `"1"`}}, 412, "version_mismatch"},
		{"stale If-Match on an unknown line", request{method: "DELETE", path: draft.path("/items/" + uuid.NewString()), user: &cashier, headers: map[string]string{"If-Match": `"1"`}}, 412, "version_mismatch"},
		{"stale If-Match on another branch's sale", request{method: "POST", path: draft.path("/checkout"), user: &elsewhere, body: `{}`, headers: map[string]string{"If-Match": `"1"`}}, 403, "forbidden"},
		// Settings and a stock ledger exist before their first event, at
		// version 0: a client that expects another version is stale.
		{"stale If-Match on settings never changed", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "Asia/Jakarta"}, headers: map[string]string{"If-Match": `"7"`}}, 412, "version_mismatch"},
		{"stale If-Match on a ledger never received", request{method: "POST", path: "/v1/stock/receipts", user: &admin, body: map[string]any{"branch_id": branch, "sku": "NEW", "qty": 1, "unit_cost": 1}, headers: map[string]string{"If-Match": `"3"`}}, 412, "version_mismatch"},
		{"body over 1 MiB", request{method: "POST", path: draft.path("/items"), user: &cashier, body: big}, 413, "payload_too_large"},
		{"not JSON", request{method: "POST", path: draft.path("/items"), user: &cashier, body: `{}`, headers: map[string]string{"Content-Type": "text/plain"}}, 415, "unsupported_media_type"},
		{"a line removed with a body not JSON", request{method: "DELETE", path: draft.path("/items/" + uuid.NewString()), user: &cashier, body: `not json`, headers: map[string]string{"Content-Type": "text/plain"}}, 415, "unsupported_media_type"},
		// The branch received one TEA for each of the two sales checked
		// out above, and they hold both: none is left for the draft.
		{"checkout beyond the stock received", request{method: "POST", path: draft.path("/checkout"), user: &cashier, body: `{}`}, 422, "insufficient_stock"},
		{"discount above total", request{method: "POST", path: draft.path("/discounts"), user: &cashier, body: map[string]any{"kind": "amount", "amount": 10001, "reason": "x"}}, 422, "discount_exceeds_total"},
		{"card above due", request{method: "POST", path: pending.path("/payments"), user: &cashier, body: map[string]any{"method": "CARD", "amount": 20000}}, 422, "overpayment"},
		{"refund above paid", request{method: "POST", path: paid.path("/refunds"), user: &manager, body: map[string]any{"reason": "x", "amount": 11101}}, 422, "refund_exceeds_paid"},
		{"payment in another currency", request{method: "POST", path: pending.path("/payments"), user: &cashier, body: map[string]any{"method": "CARD", "amount": 1, "currency": "USD"}}, 422, "currency_mismatch"},
		{"unknown currency", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "ZZZ", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "Asia/Jakarta"}}, 400, "invalid_request"},
		{"withdrawn currency", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "DEM", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "Asia/Jakarta"}}, 400, "invalid_request"},
		{"a sale in gold", request{method: "POST", path: "/v1/transactions", user: &cashier, body: map[string]any{"branch_id": branch, "currency": "XAU"}}, 400, "invalid_request"},
		{"unknown time zone", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "Mars/Olympus"}}, 400, "invalid_request"},
		// Files of the zone database that name no zone: the host's own
		// time (its days would move with the host), aliases of formats.
		{"the host's time zone", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "localtime"}}, 400, "invalid_request"},
		{"a zone database file that names no zone", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "posixrules"}}, 400, "invalid_request"},
		{"the host's time zone through a path", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "./localtime"}}, 400, "invalid_request"},
		{"a zone name with an empty segment", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "Asia//Jakarta"}}, 400, "invalid_request"},
		{"a zone with leap seconds", request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "right/Asia/Jakarta"}}, 400, "invalid_request"},
		{"settings by an admin limited to a branch", request{method: "PUT", path: "/v1/settings", user: &branchAdmin, body: map[string]any{"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": false, "timezone": "Asia/Jakarta"}}, 403, "forbidden"},
		// The same key and request as a branch's own: a caller limited to
		// another branch gets its error, never the stored answer.
		{"a malformed If-Match under another branch's stored key", request{method: "POST", path: "/v1/transactions", user: &elsewhere, body: map[string]any{"branch_id": branch, "transaction_id": keyed}, headers: map[string]string{"Idempotency-Key": "opened-here", "If-Match": "bogus"}}, 400, "invalid_request"},
		{"missing unit price", request{method: "POST", path: draft.path("/items"), user: &cashier, body: map[string]any{"sku": "A", "name": "A", "qty": 1}}, 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.sub(t).do(tc.req)
			if r.status != tc.status || r.code(t) != tc.code {
				t.Fatalf("got %d %s, want %d %s: %s", r.status, r.code(t), tc.status, tc.code, r.body)
			}
			p := r.json(t)
			if p["status"].(float64) != float64(tc.status) || p["title"] == "" || !strings.HasPrefix(p["type"].(string), "urn:pos:problem:") {
				t.Errorf("problem document incomplete: %s", r.body)
			}
			if tc.code == "insufficient_stock" && fmt.Sprint(p["skus"]) != "[TEA]" {
				t.Errorf("insufficient_stock names skus %v, want [TEA]: %s", p["skus"], r.body)
			}
		})
	}
}

func TestAnotherMerchantsTransactionIsNotFound(t *testing.T) {
	e := newEnv(t)
	a := newUser(t, uuid.New(), "MANAGER")
	b := newUser(t, uuid.New(), "MANAGER")
	s := e.open(&a, uuid.New())
	s.addItem(1, 500)

	bodies := map[string]any{"/checkout": map[string]any{}, "/void": map[string]any{"reason": "x"}, "/complete": map[string]any{},
		"/items": map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 1}}
	for suffix, body := range bodies {
		theirs := e.do(request{method: "POST", path: s.path(suffix), user: &b, body: body})
		missing := e.do(request{method: "POST", path: "/v1/transactions/" + uuid.NewString() + suffix, user: &b, body: body})
		if theirs.status != 404 || !bytes.Equal(theirs.body, missing.body) {
			t.Errorf("%s on another merchant's sale: %d %s; on a missing one: %d %s", suffix, theirs.status, theirs.body, missing.status, missing.body)
		}
		for _, h := range []string{"Content-Type", "Content-Length"} {
			if theirs.header.Get(h) != missing.header.Get(h) {
				t.Errorf("%s: header %s differs: %q vs %q", suffix, h, theirs.header.Get(h), missing.header.Get(h))
			}
		}
	}
	// The owner still sees an untouched draft.
	s.stockUp()
	must(t, s.post("/checkout", map[string]any{}), 200)
}

func TestAuditorMayIssueNoCommand(t *testing.T) {
	e := newEnv(t)
	merchant := uuid.New()
	owner := newUser(t, merchant, "ADMIN")
	auditor := newUser(t, merchant, "AUDITOR")
	s := e.open(&owner, uuid.New())
	s.addItem(1, 100)
	id, pay := s.id, uuid.NewString()
	routes := []struct{ method, path string }{
		{"POST", "/v1/transactions"},
		{"POST", "/v1/transactions/" + id + "/items"},
		{"DELETE", "/v1/transactions/" + id + "/items/" + s.line},
		{"POST", "/v1/transactions/" + id + "/discounts"},
		{"POST", "/v1/transactions/" + id + "/checkout"},
		{"POST", "/v1/transactions/" + id + "/payments"},
		{"POST", "/v1/transactions/" + id + "/payments/" + pay + "/confirm"},
		{"POST", "/v1/transactions/" + id + "/payments/" + pay + "/decline"},
		{"POST", "/v1/transactions/" + id + "/complete"},
		{"POST", "/v1/transactions/" + id + "/void"},
		{"POST", "/v1/transactions/" + id + "/refunds"},
		{"PUT", "/v1/settings"},
		{"POST", "/v1/pos/sync"},
	}
	for _, rt := range routes {
		r := e.do(request{method: rt.method, path: rt.path, user: &auditor, body: map[string]any{}})
		if r.status != 403 || r.code(t) != "forbidden" {
			t.Errorf("AUDITOR %s %s: %d %s", rt.method, rt.path, r.status, r.body)
		}
	}
	events, _ := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(id)), 1, 0)
	if len(events) != 2 {
		t.Fatalf("the auditor's requests wrote events: %d in the stream, want 2", len(events))
	}
	// Reading is allowed.
	must(t, e.do(request{method: "GET", path: "/v1/settings", user: &auditor}), 200)
}

func TestCashierLimitedToBranches(t *testing.T) {
	e := newEnv(t)
	merchant, home, other := uuid.New(), uuid.New(), uuid.New()
	limited := newUser(t, merchant, "CASHIER", home)
	free := newUser(t, merchant, "CASHIER")

	must(t, e.do(request{method: "POST", path: "/v1/transactions", user: &limited, body: map[string]any{"branch_id": home}}), 201)
	r := e.do(request{method: "POST", path: "/v1/transactions", user: &limited, body: map[string]any{"branch_id": other}})
	if r.status != 403 || r.code(t) != "forbidden" {
		t.Fatalf("open at another branch: %d %s", r.status, r.body)
	}
	elsewhere := e.open(&free, other)
	r = e.do(request{method: "POST", path: elsewhere.path("/items"), user: &limited, body: map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 1}})
	if r.status != 403 || r.code(t) != "forbidden" {
		t.Fatalf("add an item at another branch: %d %s", r.status, r.body)
	}
}

func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	merchant := uuid.New()
	u := newUser(t, merchant, "CASHIER")
	s := e.open(&u, uuid.New())
	item := map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 700, "line_id": uuid.NewString()}

	// 20 concurrent requests with one key: one effect, identical answers.
	const n = 20
	var wg sync.WaitGroup
	answers := make([]resp, n)
	start := make(chan struct{})
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = e.do(request{method: "POST", path: s.path("/items"), user: &u, body: item, headers: map[string]string{"Idempotency-Key": "add-a"}})
		}()
	}
	close(start)
	wg.Wait()
	for i, a := range answers {
		if a.status != 201 || !bytes.Equal(a.body, answers[0].body) || a.header.Get("ETag") != answers[0].header.Get("ETag") || a.header.Get("X-Position") != answers[0].header.Get("X-Position") {
			t.Fatalf("answer %d: %d %s %v; first: %d %s", i, a.status, a.body, a.header, answers[0].status, answers[0].body)
		}
	}
	events, err := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(s.id)), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 {
		t.Fatalf("%d events after 20 requests with one key, want 2 (opened, one item)", len(events))
	}

	// A later replay is byte for byte, and says it is one.
	again := e.do(request{method: "POST", path: s.path("/items"), user: &u, body: item, headers: map[string]string{"Idempotency-Key": "add-a"}})
	if !bytes.Equal(again.body, answers[0].body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %s %v", again.body, again.header)
	}
	// The same key with another request.
	other := map[string]any{"sku": "B", "name": "B", "qty": 1, "unit_price": 700}
	r := e.do(request{method: "POST", path: s.path("/items"), user: &u, body: other, headers: map[string]string{"Idempotency-Key": "add-a"}})
	if r.status != 422 || r.code(t) != "idempotency_key_reused" {
		t.Fatalf("key reused with another body: %d %s", r.status, r.body)
	}
	r = e.do(request{method: "POST", path: s.path("/checkout"), user: &u, body: item, headers: map[string]string{"Idempotency-Key": "add-a"}})
	if r.status != 422 || r.code(t) != "idempotency_key_reused" {
		t.Fatalf("key reused on another path: %d %s", r.status, r.body)
	}
	// Keys are per merchant: another merchant's same key is a new request.
	v := newUser(t, uuid.New(), "CASHIER")
	r = e.do(request{method: "POST", path: "/v1/transactions", user: &v, body: map[string]any{"branch_id": uuid.New()}, headers: map[string]string{"Idempotency-Key": "add-a"}})
	must(t, r, 201)
	// A refused command is a final answer too, replayed as such.
	first := e.do(request{method: "POST", path: s.path("/complete"), user: &u, body: map[string]any{}, headers: map[string]string{"Idempotency-Key": "complete-1"}})
	second := e.do(request{method: "POST", path: s.path("/complete"), user: &u, body: map[string]any{}, headers: map[string]string{"Idempotency-Key": "complete-1"}})
	if first.status != 409 || !bytes.Equal(first.body, second.body) || second.status != 409 {
		t.Fatalf("refusal replay: %d %s then %d %s", first.status, first.body, second.status, second.body)
	}
}

func TestConcurrentItemAdds(t *testing.T) {
	e := newEnv(t)
	merchant := uuid.New()
	u := newUser(t, merchant, "CASHIER")

	t.Run("without If-Match all apply once", func(t *testing.T) {
		e := e.sub(t)
		s := e.open(&u, uuid.New())
		statuses := addConcurrently(e, &u, s, 50, "", "")
		if statuses[201] != 50 {
			t.Fatalf("statuses %v, want 50 × 201", statuses)
		}
		events, _ := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(s.id)), 1, 0)
		if len(events) != 51 {
			t.Fatalf("%d events, want 51", len(events))
		}
	})
	t.Run("with a key each all apply once, in the feed in version order", func(t *testing.T) {
		// Keyed commands run each in a transaction of its own, on the sale
		// kept in memory: a lost race costs a new transaction, a few times
		// at most, then 409 concurrency_conflict, which a client retries
		// with the same key. Whatever the interleaving, no append may land
		// onto a head committed after its transaction took an id.
		e := e.sub(t)
		s := e.open(&u, uuid.New())
		statuses := addConcurrently(e, &u, s, 50, "", "add-")
		if statuses[201]+statuses[409] != 50 {
			t.Fatalf("statuses %v, want 201 or 409 only", statuses)
		}
		for i := 0; i < 50; i++ { // the clients' retries: each applied now, or replayed
			r := e.do(request{method: "POST", path: s.path("/items"), user: &u,
				body:    map[string]any{"sku": fmt.Sprintf("SKU-%d", i), "name": "x", "qty": 1, "unit_price": 100},
				headers: map[string]string{"If-Match": "", "Idempotency-Key": fmt.Sprint("add-", i)}})
			must(t, r, 201)
		}
		events, _ := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(s.id)), 1, 0)
		if len(events) != 51 {
			t.Fatalf("%d events, want 51", len(events))
		}
		for i := 1; i < len(events); i++ {
			prev, cur := events[i-1], events[i]
			if !prev.Position.Less(cur.Position) || !bytes.Equal(cur.PrevHash, prev.Hash) {
				t.Fatalf("version %d at %s after version %d at %s (chained: %v)", cur.Version, cur.Position, prev.Version, prev.Position, bytes.Equal(cur.PrevHash, prev.Hash))
			}
		}
	})
	t.Run("with one If-Match exactly one wins", func(t *testing.T) {
		e := e.sub(t)
		s := e.open(&u, uuid.New())
		statuses := addConcurrently(e, &u, s, 50, `"1"`, "")
		if statuses[201] != 1 || statuses[412] != 49 {
			t.Fatalf("statuses %v, want 1 × 201 and 49 × 412", statuses)
		}
	})
}

// addConcurrently adds n items to s at once, with If-Match ifMatch (when
// not empty) and, when keyPrefix is not empty, each with its own
// Idempotency-Key.
func addConcurrently(e *env, u *user, s *sale, n int, ifMatch, keyPrefix string) map[int]int {
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			headers := map[string]string{"If-Match": ifMatch}
			if keyPrefix != "" {
				headers["Idempotency-Key"] = fmt.Sprint(keyPrefix, i)
			}
			r := e.do(request{method: "POST", path: s.path("/items"), user: u,
				body: map[string]any{"sku": fmt.Sprintf("SKU-%d", i), "name": "x", "qty": 1, "unit_price": 100}, headers: headers})
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return statuses
}

func TestSettings(t *testing.T) {
	e := newEnv(t)
	merchant := uuid.New()
	admin := newUser(t, merchant, "ADMIN")
	r := must(t, e.do(request{method: "GET", path: "/v1/settings", user: &admin}), 200)
	if r.str(t, "currency") != "IDR" || r.str(t, "timezone") != "Asia/Jakarta" || r.json(t)["prices_include_tax"] != false {
		t.Fatalf("defaults: %s", r.body)
	}
	put := map[string]any{"currency": "usd", "prices_include_tax": true, "allow_negative_stock": false, "timezone": "America/New_York"}
	r = e.do(request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{"currency": "USD", "timezone": "UTC"}})
	if r.status != 400 || r.code(t) != "invalid_request" {
		t.Fatalf("PUT without every field: %d %s", r.status, r.body)
	}
	r = must(t, e.do(request{method: "PUT", path: "/v1/settings", user: &admin, body: put}), 200)
	if r.num(t, "version") != 1 || r.str(t, "currency") != "USD" {
		t.Fatalf("change: %s", r.body)
	}
	same := must(t, e.do(request{method: "PUT", path: "/v1/settings", user: &admin, body: put}), 200)
	if same.num(t, "version") != 1 {
		t.Fatalf("an identical change made a new version: %s", same.body)
	}
	// New sales take the merchant's currency and tax mode.
	s := e.open(&admin, uuid.New())
	r = s.addItem(1, 1110)
	tot := r.json(t)["totals"].(map[string]any)
	if tot["currency"] != "USD" || tot["grand_total"].(float64) != 1110 || tot["tax"].(float64) != 110 {
		t.Fatalf("tax-inclusive sale in USD: %v", tot)
	}
}

func TestOpenAPIDocumentServed(t *testing.T) {
	e := newEnv(t)
	r := must(t, e.do(request{method: "GET", path: "/openapi.json"}), 200)
	if !strings.Contains(string(r.body), `"openapi"`) || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("openapi.json: %s", r.header.Get("Content-Type"))
	}
	must(t, e.do(request{method: "GET", path: "/healthz"}), 200)
	must(t, e.do(request{method: "GET", path: "/readyz"}), 200)
}

func TestPosSync(t *testing.T) {
	e := newEnv(t)
	merchant := uuid.New()
	u := newUser(t, merchant, "CASHIER")
	id, line, branch := uuid.NewString(), uuid.NewString(), uuid.New()
	tx := "/v1/transactions/" + id
	e.receiveStock(merchant, branch, "A", 2) // what k4 checks out
	batch := map[string]any{"commands": []map[string]any{
		{"idempotency_key": "k1", "method": "POST", "path": "/v1/transactions", "body": map[string]any{"branch_id": branch, "transaction_id": id}},
		{"idempotency_key": "k2", "method": "POST", "path": tx + "/items", "body": map[string]any{"sku": "A", "name": "A", "qty": 2, "unit_price": 500, "line_id": line}},
		{"idempotency_key": "k3", "method": "POST", "path": tx + "/items", "body": map[string]any{"sku": "B", "name": "B", "qty": 0, "unit_price": 1}},
		{"idempotency_key": "k4", "method": "POST", "path": tx + "/checkout"},
		{"idempotency_key": "k5", "method": "POST", "path": tx + "/payments", "body": map[string]any{"method": "CASH", "amount": 1000}},
		{"idempotency_key": "k6", "method": "POST", "path": tx + "/void", "body": map[string]any{"reason": "cashier may not"}},
	}}
	first := must(t, e.do(request{method: "POST", path: "/v1/pos/sync", user: &u, body: batch}), 200)
	var got struct {
		Results []struct {
			IdempotencyKey string         `json:"idempotency_key"`
			Status         int            `json:"status"`
			Body           map[string]any `json:"body"`
		} `json:"results"`
	}
	if err := json.Unmarshal(first.body, &got); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		key    string
		status int
		code   string
	}{{"k1", 201, ""}, {"k2", 201, ""}, {"k3", 400, "invalid_request"}, {"k4", 200, ""}, {"k5", 201, ""}, {"k6", 403, "forbidden"}}
	if len(got.Results) != len(want) {
		t.Fatalf("%d results: %s", len(got.Results), first.body)
	}
	for i, w := range want {
		r := got.Results[i]
		if r.IdempotencyKey != w.key || r.Status != w.status || (w.code != "" && r.Body["code"] != w.code) {
			t.Errorf("result %d = %s %d %v, want %s %d %s", i, r.IdempotencyKey, r.Status, r.Body, w.key, w.status, w.code)
		}
	}
	if got.Results[4].Body["status"] != "paid" {
		t.Errorf("payment result: %v", got.Results[4].Body)
	}
	// Re-sending the batch after a lost answer applies nothing twice.
	again := must(t, e.do(request{method: "POST", path: "/v1/pos/sync", user: &u, body: batch}), 200)
	if !bytes.Equal(again.body, first.body) {
		t.Errorf("re-sent batch answered differently:\n%s\n%s", first.body, again.body)
	}
	events, _ := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(id)), 1, 0)
	if len(events) != 5 { // opened, item, checked out, payment added, paid
		t.Errorf("%d events after two syncs, want 5", len(events))
	}
	r := e.do(request{method: "POST", path: "/v1/pos/sync", user: &u, body: map[string]any{"commands": []any{}}})
	if r.status != 400 || r.code(t) != "invalid_request" {
		t.Errorf("empty batch: %d %s", r.status, r.body)
	}
	// Bad items fail alone; the good one still runs.
	mixed := map[string]any{"commands": []map[string]any{
		{"idempotency_key": "", "method": "POST", "path": tx + "/complete"},
		{"idempotency_key": "x1", "method": "GET", "path": tx},
		{"idempotency_key": "x2", "method": "POST", "path": "/v1/pos/sync"},
		{"idempotency_key": "x3", "method": "POST", "path": tx + "/complete"},
	}}
	r = must(t, e.do(request{method: "POST", path: "/v1/pos/sync", user: &u, body: mixed}), 200)
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{400, 400, 400, 200} {
		if got.Results[i].Status != want {
			t.Errorf("mixed batch result %d: %d %v, want %d", i, got.Results[i].Status, got.Results[i].Body, want)
		}
	}
}

// A sale rung up offline keeps the time it happened (occurred_at): its
// events carry it, the store records when they arrived. A time in the
// future or beyond the offline bound fails that command alone.
func TestPosSyncKeepsWhenItHappened(t *testing.T) {
	e := newEnv(t)
	merchant := uuid.New()
	u := newUser(t, merchant, "CASHIER")
	id, branch := uuid.NewString(), uuid.New()
	tx := "/v1/transactions/" + id
	e.receiveStock(merchant, branch, "A", 1)
	then := time.Now().UTC().Add(-26 * time.Hour).Truncate(time.Second)
	batch := map[string]any{"commands": []map[string]any{
		{"idempotency_key": "o1", "method": "POST", "path": "/v1/transactions", "body": map[string]any{"branch_id": branch, "transaction_id": id}, "occurred_at": then},
		{"idempotency_key": "o2", "method": "POST", "path": tx + "/items", "body": map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 500}, "occurred_at": then.Add(time.Minute)},
		{"idempotency_key": "o3", "method": "POST", "path": tx + "/checkout", "occurred_at": then.Add(2 * time.Minute)},
		{"idempotency_key": "o4", "method": "POST", "path": tx + "/payments", "body": map[string]any{"method": "CASH", "amount": 500}, "occurred_at": then.Add(3 * time.Minute)},
		{"idempotency_key": "o5", "method": "POST", "path": tx + "/complete", "occurred_at": time.Now().Add(time.Hour)},
		{"idempotency_key": "o6", "method": "POST", "path": tx + "/complete", "occurred_at": time.Now().Add(-31 * 24 * time.Hour)},
		{"idempotency_key": "o7", "method": "POST", "path": tx + "/complete"},
		{"idempotency_key": "o8", "method": "POST", "path": "/v1/stock/receipts", "body": map[string]any{"branch_id": branch, "sku": "A", "qty": 1, "unit_cost": 1}, "occurred_at": then},
	}}
	r := must(t, e.do(request{method: "POST", path: "/v1/pos/sync", user: &u, body: batch}), 200)
	var got struct {
		Results []struct {
			Status int            `json:"status"`
			Body   map[string]any `json:"body"`
		} `json:"results"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{201, 201, 200, 201, 400, 400, 200, 201} {
		if got.Results[i].Status != want {
			t.Errorf("result %d: %d %v, want %d", i, got.Results[i].Status, got.Results[i].Body, want)
		}
	}
	events, err := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(id)), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		var at struct {
			OpenedAt time.Time `json:"opened_at"`
			At       time.Time `json:"at"`
		}
		if err := json.Unmarshal(ev.Data, &at); err != nil {
			t.Fatal(err)
		}
		when := at.At
		if ev.Type == "TransactionOpened" {
			when = at.OpenedAt
		}
		offline := ev.Type != "TransactionCompleted"
		if offline && (when.Before(then) || when.After(then.Add(3*time.Minute))) || !offline && when.Before(time.Now().Add(-time.Hour)) {
			t.Errorf("%s at %s (offline from %s)", ev.Type, when, then)
		}
		if time.Since(ev.RecordedAt) > time.Hour {
			t.Errorf("%s recorded at %s: the store records when it arrived", ev.Type, ev.RecordedAt)
		}
	}
	// A stock receipt is not a sale's: it counts when it arrives, whatever
	// its occurred_at says.
	ledger, err := e.store.ReadStream(context.Background(), commands.StockStream(merchant, branch, "A"), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var receipt struct {
		At time.Time `json:"at"`
	}
	if err := json.Unmarshal(ledger[len(ledger)-1].Data, &receipt); err != nil || ledger[len(ledger)-1].Type != "StockReceived" || time.Since(receipt.At) > time.Hour {
		t.Errorf("the synced receipt: %s at %s (%v), want StockReceived now", ledger[len(ledger)-1].Type, receipt.At, err)
	}
}

// TestPosSyncPricesWithTheSettingsOfTheTime: a sale rung up offline under
// IDR with tax-exclusive prices, synced after the merchant moved to USD with
// tax-inclusive prices, keeps what the till charged: IDR, tax on top, the
// exact cash tender without change. Its stock is checked out under the
// setting of the time too.
func TestPosSyncPricesWithTheSettingsOfTheTime(t *testing.T) {
	e := newEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	admin := newUser(t, merchant, "ADMIN")
	cashier := newUser(t, merchant, "CASHIER")
	rungUp := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	// Negative stock is allowed from now on; the till sold none it did not have.
	must(t, e.do(request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{
		"currency": "USD", "prices_include_tax": true, "allow_negative_stock": true, "timezone": "Asia/Jakarta"}}), 200)
	sale := func(id string, at time.Time) []map[string]any {
		tx := "/v1/transactions/" + id
		return []map[string]any{
			{"idempotency_key": id + "1", "method": "POST", "path": "/v1/transactions", "occurred_at": at, "body": map[string]any{"branch_id": branch, "transaction_id": id}},
			{"idempotency_key": id + "2", "method": "POST", "path": tx + "/items", "occurred_at": at.Add(time.Minute), "body": map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 25000, "tax_rate_bps": 1100}},
			{"idempotency_key": id + "3", "method": "POST", "path": tx + "/checkout", "occurred_at": at.Add(2 * time.Minute)},
		}
	}
	offline, online := uuid.NewString(), uuid.NewString()
	batch := append(sale(offline, rungUp), map[string]any{"idempotency_key": "pay", "method": "POST", "path": "/v1/transactions/" + offline + "/payments",
		"occurred_at": rungUp.Add(3 * time.Minute), "body": map[string]any{"method": "CASH", "amount": 27750}})
	batch = append(batch, sale(online, time.Now().UTC())...) // rung up after the change
	r := must(t, e.do(request{method: "POST", path: "/v1/pos/sync", user: &cashier, body: map[string]any{"commands": batch}}), 200)
	var got struct {
		Results []struct {
			Status int             `json:"status"`
			Body   json.RawMessage `json:"body"`
		} `json:"results"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		Status string `json:"status"`
		Change int64  `json:"change"`
		Totals struct {
			Currency   string `json:"currency"`
			Tax        int64  `json:"tax"`
			GrandTotal int64  `json:"grand_total"`
		} `json:"totals"`
	}
	read := func(i int) answer {
		var a answer
		if err := json.Unmarshal(got.Results[i].Body, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	// Rung up before the change: no stock was received, and negative stock
	// was not allowed then.
	if got.Results[2].Status != 422 {
		t.Fatalf("offline checkout: %d %s, want 422 insufficient_stock (negative stock was not allowed then)", got.Results[2].Status, got.Results[2].Body)
	}
	if a := read(1); a.Totals.Currency != "IDR" || a.Totals.Tax != 2750 || a.Totals.GrandTotal != 27750 {
		t.Errorf("offline sale: %+v, want IDR, tax 2750 on top, 27750", a.Totals)
	}
	// After the change: USD, tax included, negative stock allowed.
	if got.Results[6].Status != 200 {
		t.Fatalf("checkout after the change: %d %s, want 200 (negative stock allowed)", got.Results[6].Status, got.Results[6].Body)
	}
	if a := read(6); a.Totals.Currency != "USD" || a.Totals.GrandTotal != 25000 || a.Totals.Tax != 2477 {
		t.Errorf("sale after the change: %+v, want USD, 25000 with 2477 tax included", a.Totals)
	}
	// The offline sale, stocked now, is paid with what the till took.
	e.receiveStock(merchant, branch, "A", 1)
	tx := "/v1/transactions/" + offline
	must(t, e.do(request{method: "POST", path: tx + "/checkout", user: &cashier, body: map[string]any{}}), 200)
	paid := must(t, e.do(request{method: "POST", path: tx + "/payments", user: &cashier, body: map[string]any{"method": "CASH", "amount": 27750}}), 201)
	if paid.str(t, "status") != "paid" || paid.num(t, "change") != 0 {
		t.Errorf("the till's exact tender: %s, want paid without change", paid.body)
	}
}

// Events carry the caller's trace, as children of the request's own span:
// a recorded one (otelhttp) when spans are exported, a span context of its
// own (requestTrace) when nothing is.
func TestTelemetry(t *testing.T) {
	for _, exporting := range []bool{true, false} {
		t.Run(fmt.Sprintf("exporting=%v", exporting), func(t *testing.T) { testTelemetry(t, exporting) })
	}
}

func testTelemetry(t *testing.T, exporting bool) {
	tel, err := telemetry.New(telemetry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tel.Exporting = exporting // the spans go nowhere either way: what matters is the request's path
	e := newEnvWith(t, options{tel: tel})
	merchant := uuid.New()
	u := newUser(t, merchant, "CASHIER")
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const caller = "00-" + traceID + "-00f067aa0ba902b7-01"
	r := must(t, e.do(request{method: "POST", path: "/v1/transactions", user: &u, body: map[string]any{"branch_id": uuid.New()},
		headers: map[string]string{"traceparent": caller}}), 201)
	events, err := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(r.str(t, "id"))), 1, 0)
	if err != nil || len(events) != 1 {
		t.Fatalf("events: %v %v", events, err)
	}
	if got := events[0].Metadata.TraceID(); got != traceID {
		t.Errorf("event trace id %q, want the caller's %q", got, traceID)
	}
	if events[0].Metadata.TraceParent == caller {
		t.Errorf("event carries the caller's span, not the request's own")
	}
	// Without a caller's trace, a request starts one of its own.
	r = must(t, e.do(request{method: "POST", path: "/v1/transactions", user: &u, body: map[string]any{"branch_id": uuid.New()}}), 201)
	events, err = e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(r.str(t, "id"))), 1, 0)
	if err != nil || len(events) != 1 || len(events[0].Metadata.TraceID()) != 32 || events[0].Metadata.TraceID() == traceID {
		t.Errorf("event of a request without traceparent: %+v %v, want a trace of its own", events, err)
	}
	must(t, e.do(request{method: "GET", path: "/v1/settings", user: &u}), 200)
	m := must(t, e.do(request{method: "GET", path: "/metrics"}), 200)
	for _, want := range []string{`pos_command_duration_seconds_bucket{route="POST /v1/transactions",status="201"`,
		`pos_query_duration_seconds_bucket{route="GET /v1/settings",status="200"`, "go_goroutines"} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestConcurrencyConflictAfterRetries(t *testing.T) {
	e := newEnvWith(t, options{retries: 1})
	u := newUser(t, uuid.New(), "CASHIER")
	s := e.open(&u, uuid.New())
	statuses := addConcurrently(e, &u, s, 30, "", "")
	if statuses[409] == 0 || statuses[201]+statuses[409] != 30 {
		t.Fatalf("statuses %v: want some 409 concurrency_conflict with one retry, and nothing else", statuses)
	}
	r := e.do(request{method: "POST", path: s.path("/items"), user: &u, body: map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 1}})
	must(t, r, 201)
	// Reproduce one conflict answer to check its problem code.
	for i := 0; i < 20; i++ {
		var wg sync.WaitGroup
		answers := make([]resp, 8)
		for j := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[j] = e.do(request{method: "POST", path: s.path("/items"), user: &u, body: map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 1}})
			}()
		}
		wg.Wait()
		for _, a := range answers {
			if a.status == 409 {
				if a.code(t) != "concurrency_conflict" {
					t.Fatalf("409 with code %s", a.code(t))
				}
				return
			}
		}
	}
	t.Fatal("no concurrency_conflict answer seen")
}

// A failed precondition changes nothing: a checkout with a stale If-Match
// reserves no stock (Checkout reserves while deciding) and leaves the sale
// at its version.
func TestStaleIfMatchCheckoutChangesNothing(t *testing.T) {
	e := newEnv(t)
	merchant := uuid.New()
	u := newUser(t, merchant, "CASHIER")
	s := e.open(&u, uuid.New())
	s.addItem(1, 1000)
	s.stockUp()
	r := e.do(request{method: "POST", path: s.path("/checkout"), user: &u, body: `{}`, headers: map[string]string{"If-Match": `"1"`}})
	if r.status != 412 || r.code(t) != "version_mismatch" {
		t.Fatalf("stale If-Match checkout: %d %s", r.status, r.body)
	}
	ctx := context.Background()
	sale, err := e.store.ReadStream(ctx, commands.TransactionStream(merchant, uuid.MustParse(s.id)), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := e.store.ReadStream(ctx, commands.StockStream(merchant, s.branch, "TEA"), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(sale) != 2 || len(ledger) != 1 {
		t.Fatalf("after a 412: the sale has %d events (want 2: opened, item), its ledger %d (want 1: the receipt)", len(sale), len(ledger))
	}
}

// Keys are per merchant: a stored answer must not reach a caller who may
// not send the command (a role checked by the route, in both key modes; a
// branch checked by the command, on PostgreSQL).
func TestKeyIsNotReplayedToACallerRefused(t *testing.T) {
	for _, noTx := range []bool{false, true} {
		t.Run(fmt.Sprint("claim mode ", noTx), func(t *testing.T) {
			e := newEnvWith(t, options{noTx: noTx})
			merchant, branch := uuid.New(), uuid.New()
			manager := newUser(t, merchant, "MANAGER")
			cashier := newUser(t, merchant, "CASHIER")
			s := e.open(&cashier, branch)
			void := request{method: "POST", path: s.path("/void"), user: &manager, body: map[string]any{"reason": "x"}, headers: map[string]string{"Idempotency-Key": "void-1"}}
			must(t, e.do(void), 200)
			void.user = &cashier
			if r := e.do(void); r.status != 403 || r.code(t) != "forbidden" {
				t.Fatalf("a cashier sending a manager's void key: %d %s, want 403 forbidden", r.status, r.body)
			}
			if noTx {
				return // see api/idempotency.go: a branch is checked only by the command
			}
			other := e.open(&cashier, branch)
			add := request{method: "POST", path: other.path("/items"), user: &cashier, body: map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 700}, headers: map[string]string{"Idempotency-Key": "add-1"}}
			must(t, e.do(add), 201)
			elsewhere := newUser(t, merchant, "CASHIER", uuid.New())
			add.user = &elsewhere
			if r := e.do(add); r.status != 403 || r.code(t) != "forbidden" {
				t.Fatalf("a cashier of another branch sending the same key: %d %s, want 403 forbidden", r.status, r.body)
			}
		})
	}
}

func TestIdempotencyKeyWithoutTransactionalStore(t *testing.T) {
	e := newEnvWith(t, options{noTx: true})
	merchant := uuid.New()
	u := newUser(t, merchant, "CASHIER")
	s := e.open(&u, uuid.New())
	item := map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 700, "line_id": uuid.NewString()}
	var wg sync.WaitGroup
	answers := make([]resp, 10)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = e.do(request{method: "POST", path: s.path("/items"), user: &u, body: item, headers: map[string]string{"Idempotency-Key": "claim-a"}})
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != 201 || !bytes.Equal(a.body, answers[0].body) {
			t.Fatalf("answer %d: %d %s; first %d %s", i, a.status, a.body, answers[0].status, answers[0].body)
		}
	}
	events, _ := e.store.ReadStream(context.Background(), commands.TransactionStream(merchant, uuid.MustParse(s.id)), 1, 0)
	if len(events) != 2 {
		t.Fatalf("%d events, want 2", len(events))
	}
}

func TestExpiredKeysArePurged(t *testing.T) {
	e := newEnv(t)
	u := newUser(t, uuid.New(), "CASHIER")
	for _, key := range []string{"old", "new"} {
		must(t, e.do(request{method: "POST", path: "/v1/transactions", user: &u, body: map[string]any{"branch_id": uuid.New()}, headers: map[string]string{"Idempotency-Key": key}}), 201)
	}
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	if _, err := owner.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '26 hours' WHERE key = 'old'`); err != nil {
		t.Fatal(err)
	}
	n, err := e.srv.PurgeExpiredKeys(ctx)
	if err != nil || n != 1 {
		t.Fatalf("purged %d, %v; want 1", n, err)
	}
	var left []string
	rows, _ := e.pool.Query(ctx, `SELECT key FROM idempotency_keys`)
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		left = append(left, k)
	}
	if fmt.Sprint(left) != "[new]" {
		t.Fatalf("keys left: %v", left)
	}
}

func TestTokensAreCheckedOnEveryRoute(t *testing.T) {
	e := newEnv(t)
	merchant := uuid.New()
	now := time.Now()
	hs := func(claims map[string]any) string { return token(t, claims) }
	none := func(claims map[string]any) string {
		h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
		c, _ := json.Marshal(claims)
		return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
	}
	base := func() map[string]any {
		return map[string]any{"sub": "u", "merchant_id": merchant.String(), "role": "ADMIN", "exp": now.Add(time.Hour).Unix()}
	}
	with := func(k string, v any) map[string]any {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	wrongKey := func(claims map[string]any) string {
		tok := hs(claims)
		signing := tok[:strings.LastIndex(tok, ".")]
		mac := hmac.New(sha256.New, []byte("not-the-server-secret-0123456789abcdef"))
		mac.Write([]byte(signing))
		return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}
	cases := map[string]string{
		"alg none":          none(base()),
		"wrong key":         wrongKey(base()),
		"expired":           hs(with("exp", now.Add(-time.Hour).Unix())),
		"not yet valid":     hs(with("nbf", now.Add(time.Hour).Unix())),
		"no exp":            hs(with("exp", nil)),
		"no sub":            hs(with("sub", nil)),
		"no merchant":       hs(with("merchant_id", nil)),
		"merchant not uuid": hs(with("merchant_id", "acme")),
		"no role":           hs(with("role", nil)),
		"unknown role":      hs(with("role", "OWNER")),
	}
	if r := e.do(request{method: "GET", path: "/v1/settings", headers: map[string]string{"Authorization": "Bearer " + hs(base())}}); r.status != 200 {
		t.Fatalf("a good token: %d %s", r.status, r.body) // so that each refusal is the case's
	}
	wantUnauthorized(t, e, cases)
}

// wantUnauthorized sends each token of cases (by name) with a command and a
// query, and wants 401 unauthorized for both.
func wantUnauthorized(t *testing.T, e *env, cases map[string]string) {
	t.Helper()
	for name, tok := range cases {
		for _, path := range []string{"/v1/transactions", "/v1/settings"} {
			method := "POST"
			if path == "/v1/settings" {
				method = "GET"
			}
			r := e.do(request{method: method, path: path, body: map[string]any{"branch_id": uuid.New()}, headers: map[string]string{"Authorization": "Bearer " + tok}})
			if r.status != 401 || r.code(t) != "unauthorized" {
				t.Errorf("%s on %s: %d %s", name, path, r.status, r.body)
			}
		}
	}
}

// With POS_JWKS_URL the API takes RS256 tokens signed by a key of the JWKS
// and refuses HS256, including one signed with the JWKS's public key as the
// secret (the algorithm confusion) and one signed with the HS256 secret;
// the tokens and the JWKS are built by hand here, not by the server's
// libraries.
func TestTokensAreCheckedOnEveryRouteWithJWKS(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	// A symmetric key in the set too: were HS256 not refused outright, a
	// token signed with it would verify.
	oct := []byte("a-shared-secret-someone-put-in-the-jwks")
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes())},
		{"kty": "oct", "kid": "oct1", "use": "sig", "alg": "HS256", "k": b64(oct)},
	}})
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(jwksSrv.Close)
	v, err := auth.NewJWKS(t.Context(), jwksSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	e := newEnvWith(t, options{verifier: v})

	claims := map[string]any{"sub": "u", "merchant_id": uuid.NewString(), "role": "ADMIN", "exp": time.Now().Add(time.Hour).Unix()}
	kid := "k1"
	signing := func(alg string) string {
		h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT", "kid": kid})
		c, _ := json.Marshal(claims)
		return b64(h) + "." + b64(c)
	}
	rs256 := func() string {
		s := signing("RS256")
		sum := sha256.Sum256([]byte(s))
		sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return s + "." + b64(sig)
	}
	hs256 := func(secret []byte) string {
		s := signing("HS256")
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(s))
		return s + "." + b64(mac.Sum(nil))
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})

	if r := e.do(request{method: "GET", path: "/v1/settings", headers: map[string]string{"Authorization": "Bearer " + rs256()}}); r.status != 200 {
		t.Fatalf("an RS256 token of the JWKS: %d %s", r.status, r.body)
	}
	cases := map[string]string{
		"HS256 with the public key (PEM) as secret": hs256(pemKey),
		"HS256 with the public key (DER) as secret": hs256(der),
		"HS256 with the HS256 secret":               hs256(secret),
	}
	kid = "oct1"
	cases["HS256 with the set's symmetric key"] = hs256(oct)
	wantUnauthorized(t, e, cases)
}

// panicking is a store whose appends write, then panic: a handler bug after
// its events were written.
type panicking struct{ eventstore.Store }

func (p panicking) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if _, err := p.Store.Append(ctx, stream, expected, events...); err != nil {
		return eventstore.AppendResult{}, err
	}
	panic("handler bug after append")
}

func TestPanicInAKeyedCommandLeavesNothingOpen(t *testing.T) {
	e := newEnvWith(t, options{wrap: func(s eventstore.Store) eventstore.Store { return panicking{s} }})
	u := newUser(t, uuid.New(), "CASHIER")
	r := e.do(request{method: "POST", path: "/v1/transactions", user: &u, body: map[string]any{"branch_id": uuid.New()}, headers: map[string]string{"Idempotency-Key": "boom"}})
	if r.status != 500 || r.code(t) != "internal" || strings.Contains(string(r.body), "handler bug") {
		t.Fatalf("panic answered %d %s", r.status, r.body)
	}
	// The keyed transaction was rolled back: the feed is not held back and
	// the key is free.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.store.Settle(ctx); err != nil {
		t.Fatalf("a transaction was left open: %v", err)
	}
	var keys int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&keys); err != nil || keys != 0 {
		t.Fatalf("%d keys stored (%v), want the key free", keys, err)
	}
	if n := e.pool.Stat().AcquiredConns(); n != 0 {
		t.Fatalf("%d pool connections still held", n)
	}
}

func TestKeyedOpensOnASmallPool(t *testing.T) {
	e := newEnvWith(t, options{poolSize: 4})
	u := newUser(t, uuid.New(), "CASHIER") // a fresh merchant: its first sale leases a code block
	var wg sync.WaitGroup
	statuses := make([]int, 12)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do(request{method: "POST", path: "/v1/transactions", user: &u, body: map[string]any{"branch_id": uuid.New()},
				headers: map[string]string{"Idempotency-Key": fmt.Sprintf("open-%d", i)}})
			statuses[i] = r.status
		}()
	}
	wg.Wait()
	for i, st := range statuses {
		if st != 201 {
			t.Errorf("open %d: %d", i, st)
		}
	}
}

func TestOversizedTraceHeadersDoNotFailCommands(t *testing.T) {
	e := newEnv(t)
	u := newUser(t, uuid.New(), "CASHIER")
	state := strings.TrimSuffix(strings.Repeat("vendor=abcdefghijklmnopqrstuvwxyz0123456789abcdefghij,", 20), ",")
	r := e.do(request{method: "POST", path: "/v1/transactions", user: &u, body: map[string]any{"branch_id": uuid.New()},
		headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": state}})
	must(t, r, 201)
	r = e.do(request{method: "POST", path: "/v1/transactions", user: &u, body: map[string]any{"branch_id": uuid.New()},
		headers: map[string]string{"traceparent": strings.Repeat("x", 600)}})
	must(t, r, 201)
}

// Commands that take no body may come without one, with or without an
// Idempotency-Key (a fetch of DELETE or POST sends no Content-Type then):
// the key's middleware hands the command no body, not "{}" without a type.
func TestKeyedCommandsWithoutABody(t *testing.T) {
	e := newEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	s := e.open(&cashier, branch)
	s.addItem(1, 1000)
	s.addItem(1, 500)
	s.stockUp()
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"DELETE", s.path("/items/" + s.line), 200},
		{"POST", s.path("/checkout"), 200},
	} {
		r := e.do(request{method: c.method, path: c.path, user: &cashier, headers: map[string]string{"Idempotency-Key": c.method + c.path}})
		if r.status != c.status {
			t.Errorf("%s %s with a key and no body: %d %s, want %d", c.method, c.path, r.status, r.body, c.status)
		}
	}
}
