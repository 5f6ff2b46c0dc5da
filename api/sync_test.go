package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/eventstore"
)

type syncResults struct {
	Results []struct {
		IdempotencyKey string          `json:"idempotency_key"`
		Status         int             `json:"status"`
		Body           json.RawMessage `json:"body"`
	} `json:"results"`
}

func (e *env) sync(t *testing.T, u *user, batch any) syncResults {
	t.Helper()
	r := must(t, e.do(request{method: "POST", path: "/v1/pos/sync", user: u, body: batch}), 200)
	var got syncResults
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

// failFirstOpen fails the first append of a TransactionOpened, as a
// dropped connection would.
type failFirstOpen struct {
	eventstore.Store
	failed *atomic.Bool
}

func (f failFirstOpen) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if len(events) > 0 && events[0].Type == "TransactionOpened" && f.failed.CompareAndSwap(false, true) {
		return eventstore.AppendResult{}, errors.New("connection reset")
	}
	return f.Store.Append(ctx, stream, expected, events...)
}

// TestSyncHoldsBackASaleAfterAFailure: a sale whose open failed for a
// passing reason gets no answer to its later commands that would be stored
// for their keys (404 before the open): they are held back with a 409 the
// till retries, and the batch re-sent rings the sale up whole.
func TestSyncHoldsBackASaleAfterAFailure(t *testing.T) {
	failed := new(atomic.Bool)
	e := newEnvWith(t, options{wrap: func(s eventstore.Store) eventstore.Store { return failFirstOpen{Store: s, failed: failed} }})
	merchant, branch := uuid.New(), uuid.New()
	u := newUser(t, merchant, "CASHIER")
	e.receiveStock(merchant, branch, "A", 5)
	id, other := uuid.NewString(), uuid.NewString()
	tx := "/v1/transactions/" + id
	batch := map[string]any{"commands": []map[string]any{
		{"idempotency_key": id + "-open", "method": "POST", "path": "/v1/transactions", "body": map[string]any{"branch_id": branch, "transaction_id": id}},
		{"idempotency_key": other + "-open", "method": "POST", "path": "/v1/transactions", "body": map[string]any{"branch_id": branch, "transaction_id": other}},
		// The same sale, its id written another way the routes take.
		{"idempotency_key": id + "-item", "method": "POST", "path": "/v1/transactions/urn:uuid:" + strings.ToUpper(id) + "/items", "body": map[string]any{"sku": "A", "name": "A", "qty": 1, "unit_price": 500}},
		{"idempotency_key": id + "-checkout", "method": "POST", "path": tx + "/checkout"},
		{"idempotency_key": id + "-cash", "method": "POST", "path": tx + "/payments", "body": map[string]any{"method": "CASH", "amount": 500}},
	}}
	first := e.sync(t, &u, batch)
	for i, want := range []int{500, 201, 409, 409, 409} {
		if got := first.Results[i]; got.Status != want {
			t.Errorf("first batch, result %d (%s): %d %s, want %d", i, got.IdempotencyKey, got.Status, got.Body, want)
		}
	}
	again := e.sync(t, &u, batch)
	for i, want := range []int{201, 201, 201, 200, 201} {
		if got := again.Results[i]; got.Status != want {
			t.Errorf("re-sent batch, result %d (%s): %d %s, want %d", i, got.IdempotencyKey, got.Status, got.Body, want)
		}
	}
	var paid struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(again.Results[4].Body, &paid); err != nil || paid.Status != "paid" {
		t.Errorf("the sale after the re-sent batch: %s, want paid", again.Results[4].Body)
	}
}

// TestSyncOccurredAtIsCheckedPerCommand: a malformed occurred_at fails its
// own command, named, like one out of range; null is none. A body of null
// is a command without a body, so its key matches the same command sent
// alone without one.
func TestSyncOccurredAtIsCheckedPerCommand(t *testing.T) {
	e := newEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	u := newUser(t, merchant, "CASHIER")
	s := e.open(&u, branch)
	s.addItem(1, 100)
	s.stockUp()
	direct := must(t, e.do(request{method: "POST", path: s.path("/checkout"), user: &u, headers: map[string]string{"Idempotency-Key": "co-1"}}), 200)
	batch := `{"commands":[
	 {"idempotency_key":"a1","method":"POST","path":"/v1/transactions","body":{"branch_id":"` + branch.String() + `"}},
	 {"idempotency_key":"a2","method":"POST","path":"/v1/transactions","body":{"branch_id":"` + branch.String() + `"},"occurred_at":"2024-05-01 10:00"},
	 {"idempotency_key":"a3","method":"POST","path":"/v1/transactions","body":{"branch_id":"` + branch.String() + `"},"occurred_at":null},
	 {"idempotency_key":"co-1","method":"POST","path":"` + s.path("/checkout") + `","body":null},
	 {"idempotency_key":"a5","method":"POST","path":"/v1/transactions","body":{"branch_id":"` + branch.String() + `","branch_id":"` + branch.String() + `"}},
	 {"idempotency_key":"a6","method":"POST","path":"/v1/stock/receipts","body":{"branch_id":"` + branch.String() + `","sku":"B","qty":1,"unit_cost":1},"occurred_at":"not a time"}]}`
	got := e.sync(t, &u, batch)
	// a5: a body with a member twice fails its own command; a6: a command
	// that ignores occurred_at ignores a malformed one too.
	for i, want := range []int{201, 400, 201, 200, 400, 201} {
		if got.Results[i].Status != want {
			t.Errorf("result %d: %d %s, want %d", i, got.Results[i].Status, got.Results[i].Body, want)
		}
	}
	var p struct {
		Errors []struct {
			Field string `json:"field"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(got.Results[1].Body, &p); err != nil || len(p.Errors) != 1 || p.Errors[0].Field != "commands[1].occurred_at" {
		t.Errorf("the malformed time: %s, want it named commands[1].occurred_at", got.Results[1].Body)
	}
	if string(got.Results[3].Body) != string(direct.body) {
		t.Errorf("the checkout synced with a null body: %s, want the stored answer %s", got.Results[3].Body, direct.body)
	}
}

// TestStaleIfMatchLeavesTheKeyFree: a 412 did nothing and is not kept for
// its key, so the client that reloads and sends the command again under
// the same key, with the version it now holds, has it run.
func TestStaleIfMatchLeavesTheKeyFree(t *testing.T) {
	e := newEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	u := newUser(t, merchant, "CASHIER")
	s := e.open(&u, branch)
	added := s.addItem(1, 100)
	key := map[string]string{"Idempotency-Key": "add-tea", "If-Match": `"1"`}
	body := map[string]any{"sku": "TEA", "name": "Tea", "qty": 1, "unit_price": 100}
	must(t, e.do(request{method: "POST", path: s.path("/items"), user: &u, body: body, headers: key}), 412)
	key["If-Match"] = added.header.Get("ETag")
	again := must(t, e.do(request{method: "POST", path: s.path("/items"), user: &u, body: body, headers: key}), 201)
	if again.header.Get("Idempotent-Replayed") != "" || again.num(t, "version") != 3 {
		t.Fatalf("the command sent again with the current version: %s, want it run (version 3)", again.body)
	}
	replay := must(t, e.do(request{method: "POST", path: s.path("/items"), user: &u, body: body, headers: key}), 201)
	if replay.header.Get("Idempotent-Replayed") != "true" || string(replay.body) != string(again.body) {
		t.Fatalf("the same request once more: %s, want the stored answer replayed", replay.body)
	}
}

// TestSyncCannotDateBackIntoLooserStockRules: a till may date its checkout
// back, but not into a time when negative stock was allowed if it is no
// longer: an ADMIN's tightened rule holds.
func TestSyncCannotDateBackIntoLooserStockRules(t *testing.T) {
	e := newEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	admin := newUser(t, merchant, "ADMIN")
	cashier := newUser(t, merchant, "CASHIER")
	put := func(negative bool) {
		must(t, e.do(request{method: "PUT", path: "/v1/settings", user: &admin, body: map[string]any{
			"currency": "IDR", "prices_include_tax": false, "allow_negative_stock": negative, "timezone": "Asia/Jakarta"}}), 200)
	}
	put(true)
	loose := time.Now().UTC()
	time.Sleep(50 * time.Millisecond)
	put(false)
	id := uuid.NewString()
	tx := "/v1/transactions/" + id
	got := e.sync(t, &cashier, map[string]any{"commands": []map[string]any{
		{"idempotency_key": "n1", "method": "POST", "path": "/v1/transactions", "occurred_at": loose, "body": map[string]any{"branch_id": branch, "transaction_id": id}},
		{"idempotency_key": "n2", "method": "POST", "path": tx + "/items", "occurred_at": loose, "body": map[string]any{"sku": "NONE", "name": "None", "qty": 1, "unit_price": 100}},
		{"idempotency_key": "n3", "method": "POST", "path": tx + "/checkout", "occurred_at": loose},
	}})
	if got.Results[2].Status != 422 {
		t.Fatalf("a checkout dated back to when negative stock was allowed: %d %s, want 422 insufficient_stock", got.Results[2].Status, got.Results[2].Body)
	}
}
