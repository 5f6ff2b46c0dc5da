package api_test

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/domain/money"
	"pos/domain/stock"
	"pos/eventstore"
)

// stockFeed moves stock ledgers straight through the aggregate and appends
// their events to the API's event store, as the stock commands would; the
// read env's runner projects them.
type stockFeed struct {
	e       *env
	ledgers map[stock.Key]*stock.Ledger
	at      time.Time
}

func newStockFeed(e *env) *stockFeed {
	return &stockFeed{e: e, ledgers: map[stock.Key]*stock.Ledger{}, at: time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC)}
}

// ledger returns the aggregate of sku in branch of merchant.
func (f *stockFeed) ledger(merchant, branch uuid.UUID, sku string) *stock.Ledger {
	key := stock.NewKey(merchant, branch, sku)
	l, ok := f.ledgers[key]
	if !ok {
		l = stock.New(key)
		f.ledgers[key] = l
	}
	return l
}

// do decides on the ledger, appends the events a minute after the previous
// ones and returns the position of the last one.
func (f *stockFeed) do(merchant, branch uuid.UUID, sku string, decide func(l *stock.Ledger, at time.Time) ([]stock.Event, error)) string {
	t := f.e.t
	t.Helper()
	l := f.ledger(merchant, branch, sku)
	f.at = f.at.Add(time.Minute)
	events, err := decide(l, f.at)
	if err != nil || len(events) == 0 {
		t.Fatalf("ledger %s: %d events, %v", sku, len(events), err)
	}
	data := make([]eventstore.EventData, len(events))
	for i, ev := range events {
		if err := l.Apply(ev); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		data[i] = eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: ev.EventType(), SchemaVersion: stock.SchemaVersion, Data: b,
			Metadata: eventstore.Metadata{MerchantID: merchant.String(), Actor: "stock-feed", Role: "MANAGER"}}
	}
	stream := eventstore.StreamName("stock", merchant.String(), l.Key().LedgerID.String())
	res, err := f.e.store.Append(context.Background(), stream, eventstore.Any, data...)
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res.Position.String()
}

func (f *stockFeed) receive(merchant, branch uuid.UUID, sku string, qty int64, cost money.Amount) string {
	f.e.t.Helper()
	return f.do(merchant, branch, sku, func(l *stock.Ledger, at time.Time) ([]stock.Event, error) {
		return l.Receive(stock.Receive{ReceiptID: uuid.New(), Qty: qty, UnitCost: cost, By: "clerk", At: at})
	})
}

func (f *stockFeed) adjust(merchant, branch uuid.UUID, sku string, delta int64) string {
	f.e.t.Helper()
	return f.do(merchant, branch, sku, func(l *stock.Ledger, at time.Time) ([]stock.Event, error) {
		return l.Adjust(stock.Adjust{AdjustmentID: uuid.New(), Delta: delta, Reason: "count", By: "manager", At: at})
	})
}

func (f *stockFeed) reserve(merchant, branch uuid.UUID, sku string, tx uuid.UUID, qty int64) string {
	f.e.t.Helper()
	return f.do(merchant, branch, sku, func(l *stock.Ledger, at time.Time) ([]stock.Event, error) {
		return l.Reserve(stock.Reserve{TransactionID: tx, Qty: qty, At: at})
	})
}

func (f *stockFeed) sell(merchant, branch uuid.UUID, sku string, tx uuid.UUID, qty int64) string {
	f.e.t.Helper()
	return f.do(merchant, branch, sku, func(l *stock.Ledger, at time.Time) ([]stock.Event, error) {
		return l.Sell(stock.Sell{TransactionID: tx, Qty: qty, At: at})
	})
}

// levelJSON is a level as GET /v1/stock shows it.
func levelJSON(l *stock.Ledger) map[string]any {
	k := l.Key()
	return map[string]any{"id": k.LedgerID.String(), "branch_id": k.BranchID.String(), "sku": k.SKU, "on_hand": float64(l.OnHand()),
		"reserved": float64(l.Reserved()), "available": float64(l.Available()), "avg_cost": float64(l.AvgCost()), "version": float64(l.Version())}
}

func sameJSON(got any, want map[string]any) bool {
	m, ok := got.(map[string]any)
	if !ok || len(m) != len(want) {
		return false
	}
	for k, v := range want {
		if m[k] != v {
			return false
		}
	}
	return true
}

func itemsOf(t *testing.T, r resp) []any {
	t.Helper()
	items, ok := r.json(t)["items"].([]any)
	if !ok {
		t.Fatalf("no items: %s", r.body)
	}
	return items
}

func TestStockLevelsByBranchAndSKU(t *testing.T) {
	e := newReadEnv(t)
	feed := newStockFeed(e)
	merchant, other := uuid.New(), uuid.New()
	b1, b2 := uuid.New(), uuid.New()
	sale := uuid.New()
	feed.receive(merchant, b1, "TEA", 20, 1_000)
	feed.receive(merchant, b1, "TEA", 10, 1_300)
	feed.reserve(merchant, b1, "TEA", sale, 4)
	feed.receive(merchant, b2, "TEA", 5, 900)
	feed.receive(merchant, b1, "CAKE", 2, 25_000)
	otherPos := feed.receive(other, b1, "TEA", 7, 800) // another merchant, the same branch id and SKU
	pos := feed.adjust(merchant, b2, "TEA", -1)

	tea1, tea2, cake1 := feed.ledger(merchant, b1, "TEA"), feed.ledger(merchant, b2, "TEA"), feed.ledger(merchant, b1, "CAKE")
	theirs := feed.ledger(other, b1, "TEA")
	if tea1.Available() != 26 || tea1.AvgCost() != 1_100 {
		t.Fatalf("fixture: TEA in branch 1 has %d available at %d", tea1.Available(), tea1.AvgCost())
	}
	manager := newUser(t, merchant, "MANAGER")
	auditor := newUser(t, merchant, "AUDITOR")
	wait := map[string]string{"X-Min-Position": pos}
	// Ordered by branch id, then SKU.
	ordered := func(ls ...*stock.Ledger) []map[string]any {
		out := make([]map[string]any, 0, len(ls))
		for _, l := range ls {
			out = append(out, levelJSON(l))
		}
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if out[j]["branch_id"].(string) < out[i]["branch_id"].(string) ||
					out[j]["branch_id"] == out[i]["branch_id"] && out[j]["sku"].(string) < out[i]["sku"].(string) {
					out[i], out[j] = out[j], out[i]
				}
			}
		}
		return out
	}
	for _, tt := range []struct {
		name  string
		u     *user
		query string
		want  []map[string]any
	}{
		{"every level", &manager, "", ordered(tea1, tea2, cake1)},
		{"branch 1", &manager, "?branch_id=" + b1.String(), ordered(tea1, cake1)},
		{"TEA", &auditor, "?sku=TEA", ordered(tea1, tea2)},
		{"TEA in branch 2", &auditor, "?sku=TEA&branch_id=" + b2.String(), ordered(tea2)},
		{"a SKU never received", &manager, "?sku=COFFEE", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := must(t, e.do(request{method: "GET", path: "/v1/stock" + tt.query, user: tt.u, headers: wait}), 200)
			items := itemsOf(t, r)
			if len(items) != len(tt.want) || r.json(t)["next_cursor"] != nil || r.header.Get("X-Position") == "" {
				t.Fatalf("%d items, want %d: %s %v", len(items), len(tt.want), r.body, r.header)
			}
			for i, w := range tt.want {
				if !sameJSON(items[i], w) {
					t.Errorf("item %d: %v, want %v", i, items[i], w)
				}
			}
		})
	}

	// Pages of one.
	seen := map[string]bool{}
	path := "/v1/stock?limit=1"
	for page := 1; ; page++ {
		r := must(t, e.do(request{method: "GET", path: path, user: &manager}), 200)
		items := itemsOf(t, r)
		if len(items) != 1 {
			t.Fatalf("page %d: %s", page, r.body)
		}
		seen[items[0].(map[string]any)["id"].(string)] = true
		cursor, _ := r.json(t)["next_cursor"].(string)
		if cursor == "" {
			if page != 3 {
				t.Fatalf("%d pages, want 3", page)
			}
			break
		}
		path = "/v1/stock?limit=1&cursor=" + url.QueryEscape(cursor)
	}
	if len(seen) != 3 {
		t.Fatalf("pages held %v", seen)
	}

	// The other merchant sees its own level only, never this one's (its
	// partition is applied apart from this merchant's: it waits for its own
	// write).
	theirManager := newUser(t, other, "MANAGER")
	r := must(t, e.do(request{method: "GET", path: "/v1/stock?sku=TEA", user: &theirManager,
		headers: map[string]string{"X-Min-Position": otherPos}}), 200)
	if items := itemsOf(t, r); len(items) != 1 || !sameJSON(items[0], levelJSON(theirs)) {
		t.Fatalf("the other merchant's stock: %s", r.body)
	}
	r = must(t, e.do(request{method: "GET", path: "/v1/stock?branch_id=" + b2.String(), user: &theirManager}), 200)
	if len(itemsOf(t, r)) != 0 {
		t.Fatalf("the other merchant sees this one's branch: %s", r.body)
	}

	// A cashier limited to branch 2 reads branch 2 only.
	cashier := newUser(t, merchant, "CASHIER", b2)
	r = must(t, e.do(request{method: "GET", path: "/v1/stock", user: &cashier}), 200)
	if items := itemsOf(t, r); len(items) != 1 || !sameJSON(items[0], levelJSON(tea2)) {
		t.Fatalf("branch-limited list: %s", r.body)
	}
	r = must(t, e.do(request{method: "GET", path: "/v1/stock?branch_id=" + b1.String(), user: &cashier}), 403)
	if r.code(t) != "forbidden" {
		t.Fatalf("another branch: %s", r.body)
	}
	twoBranches := newUser(t, merchant, "CASHIER", b1, b2)
	must(t, e.do(request{method: "GET", path: "/v1/stock", user: &twoBranches}), 400)
	if items := itemsOf(t, must(t, e.do(request{method: "GET", path: "/v1/stock?branch_id=" + b1.String(), user: &twoBranches}), 200)); len(items) != 2 {
		t.Fatalf("a two-branch cashier naming branch 1: %d items", len(items))
	}

	for _, p := range []string{"/v1/stock?branch_id=main", "/v1/stock?limit=0", "/v1/stock?limit=501", "/v1/stock?sku=%20TEA",
		"/v1/stock?cursor=garbage", "/v1/stock?min_position=latest"} {
		r = must(t, e.do(request{method: "GET", path: p, user: &manager}), 400)
		if r.code(t) != "invalid_request" {
			t.Fatalf("%s: %s", p, r.body)
		}
	}
	must(t, e.do(request{method: "GET", path: "/v1/stock"}), 401)
}

func TestStockMovementsPaging(t *testing.T) {
	e := newReadEnv(t)
	feed := newStockFeed(e)
	merchant, other := uuid.New(), uuid.New()
	b1, b2 := uuid.New(), uuid.New()
	sale := uuid.New()
	feed.receive(merchant, b1, "TEA", 20, 1_000)
	feed.receive(merchant, b2, "TEA", 5, 900)
	feed.reserve(merchant, b1, "TEA", sale, 4)
	feed.sell(merchant, b1, "TEA", sale, 4)
	feed.adjust(merchant, b2, "TEA", 2)
	feed.receive(merchant, b1, "CAKE", 1, 25_000)
	otherPos := feed.receive(other, b1, "TEA", 7, 800)
	pos := feed.adjust(merchant, b1, "TEA", -3)
	manager := newUser(t, merchant, "MANAGER")

	// Newest first, pages of two: 6 TEA movements of this merchant.
	type key struct {
		ledger  string
		version float64
	}
	var got []map[string]any
	path := "/v1/stock/TEA/movements?limit=2"
	headers := map[string]string{"X-Min-Position": pos}
	var firstCursor string
	for page := 1; ; page++ {
		r := must(t, e.do(request{method: "GET", path: path, user: &manager, headers: headers}), 200)
		headers = nil
		for _, it := range itemsOf(t, r) {
			got = append(got, it.(map[string]any))
		}
		cursor, _ := r.json(t)["next_cursor"].(string)
		if cursor == "" {
			break
		}
		if firstCursor == "" {
			firstCursor = cursor
		}
		if page > 10 {
			t.Fatal("paging does not end")
		}
		path = "/v1/stock/TEA/movements?limit=2&cursor=" + url.QueryEscape(cursor)
	}
	wantKinds := []string{"adjustment", "adjustment", "sale", "reserve", "receipt", "receipt"}
	wantQty := []float64{-3, 2, -4, 4, 5, 20}
	wantBranch := []uuid.UUID{b1, b2, b1, b1, b2, b1}
	if len(got) != len(wantKinds) {
		t.Fatalf("%d movements, want %d: %v", len(got), len(wantKinds), got)
	}
	seen := map[key]bool{}
	for i, m := range got {
		if m["kind"] != wantKinds[i] || m["qty"] != wantQty[i] || m["branch_id"] != wantBranch[i].String() {
			t.Errorf("movement %d: %v, want %s %v in %s", i, m, wantKinds[i], wantQty[i], wantBranch[i])
		}
		seen[key{m["ledger_id"].(string), m["version"].(float64)}] = true
	}
	if len(seen) != len(got) {
		t.Errorf("a movement was repeated across pages: %v", got)
	}
	last := got[len(got)-1]
	if last["unit_cost"] != float64(1_000) || last["at"] != "2025-03-10T02:01:00Z" || last["version"] != float64(1) ||
		last["ledger_id"] != stock.LedgerID(merchant, b1, "TEA").String() {
		t.Errorf("the first receipt: %v", last)
	}
	if got[0]["unit_cost"] != nil || got[3]["unit_cost"] != nil || got[2]["unit_cost"] != float64(1_000) {
		t.Errorf("unit costs: adjustment %v, reserve %v, sale %v; want null, null, 1000", got[0]["unit_cost"], got[3]["unit_cost"], got[2]["unit_cost"])
	}
	if got[2]["source_id"] != sale.String() || got[3]["source_id"] != sale.String() {
		t.Errorf("the sale's movements name %v and %v, want the transaction %s", got[2]["source_id"], got[3]["source_id"], sale)
	}

	// One branch.
	r := must(t, e.do(request{method: "GET", path: "/v1/stock/TEA/movements?branch_id=" + b2.String(), user: &manager}), 200)
	if items := itemsOf(t, r); len(items) != 2 || items[0].(map[string]any)["qty"] != float64(2) {
		t.Fatalf("branch 2: %s", r.body)
	}

	// A tampered cursor, one of another filter and one of another merchant
	// are refused.
	tampered := []byte(firstCursor)
	if tampered[5] == 'A' {
		tampered[5] = 'B'
	} else {
		tampered[5] = 'A'
	}
	theirManager := newUser(t, other, "MANAGER")
	for _, c := range []struct {
		path string
		u    *user
	}{
		{"/v1/stock/TEA/movements?limit=2&cursor=" + string(tampered), &manager},
		{"/v1/stock/TEA/movements?limit=2&cursor=" + firstCursor + "AA", &manager},
		{"/v1/stock/TEA/movements?limit=2&branch_id=" + b1.String() + "&cursor=" + firstCursor, &manager},
		{"/v1/stock/CAKE/movements?limit=2&cursor=" + firstCursor, &manager},
		{"/v1/stock?limit=2&cursor=" + firstCursor, &manager},
		{"/v1/stock/TEA/movements?limit=2&cursor=" + firstCursor, &theirManager},
	} {
		r := must(t, e.do(request{method: "GET", path: c.path, user: c.u}), 400)
		if r.code(t) != "invalid_request" {
			t.Fatalf("%s: %s", c.path, r.body)
		}
	}

	// The other merchant sees its own TEA only; a SKU never moved is empty.
	// (Its partition is applied apart from this merchant's: it waits for
	// its own write.)
	r = must(t, e.do(request{method: "GET", path: "/v1/stock/TEA/movements", user: &theirManager,
		headers: map[string]string{"X-Min-Position": otherPos}}), 200)
	if items := itemsOf(t, r); len(items) != 1 || items[0].(map[string]any)["ledger_id"] != stock.LedgerID(other, b1, "TEA").String() {
		t.Fatalf("the other merchant's movements: %s", r.body)
	}
	r = must(t, e.do(request{method: "GET", path: "/v1/stock/COFFEE/movements", user: &manager}), 200)
	if len(itemsOf(t, r)) != 0 || r.json(t)["next_cursor"] != nil {
		t.Fatalf("a SKU never moved: %s", r.body)
	}

	// Branch limits as for every read.
	cashier := newUser(t, merchant, "CASHIER", b2)
	r = must(t, e.do(request{method: "GET", path: "/v1/stock/TEA/movements", user: &cashier}), 200)
	if len(itemsOf(t, r)) != 2 {
		t.Fatalf("branch-limited movements: %s", r.body)
	}
	must(t, e.do(request{method: "GET", path: "/v1/stock/TEA/movements?branch_id=" + b1.String(), user: &cashier}), 403)
	for _, p := range []string{"/v1/stock/TEA/movements?limit=501", "/v1/stock/TEA/movements?branch_id=x",
		"/v1/stock/%20TEA/movements", "/v1/stock/" + strings.Repeat("X", 65) + "/movements"} {
		r = must(t, e.do(request{method: "GET", path: p, user: &manager}), 400)
		if r.code(t) != "invalid_request" {
			t.Fatalf("%s: %s", p, r.body)
		}
	}
}

// TestStockMovementsOfAnEscapedSKU: a SKU with a space or a slash travels
// percent-encoded in the path.
func TestStockMovementsOfAnEscapedSKU(t *testing.T) {
	e := newReadEnv(t)
	feed := newStockFeed(e)
	merchant, branch := uuid.New(), uuid.New()
	feed.receive(merchant, branch, "ICED TEA", 3, 100)
	pos := feed.receive(merchant, branch, "TEA/L", 4, 100)
	manager := newUser(t, merchant, "MANAGER")
	for sku, want := range map[string]float64{"ICED TEA": 3, "TEA/L": 4} {
		r := must(t, e.do(request{method: "GET", path: "/v1/stock/" + url.PathEscape(sku) + "/movements", user: &manager,
			headers: map[string]string{"X-Min-Position": pos}}), 200)
		if items := itemsOf(t, r); len(items) != 1 || items[0].(map[string]any)["qty"] != want {
			t.Fatalf("%q: %s", sku, r.body)
		}
	}
}

func TestStockReadYourWrite(t *testing.T) {
	e := newReadEnv(t)
	feed := newStockFeed(e)
	merchant, branch := uuid.New(), uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	for i := range 5 {
		pos := feed.receive(merchant, branch, "TEA", int64(i+1), 1_000)
		l := feed.ledger(merchant, branch, "TEA")

		// Levels, with the header.
		r := must(t, e.do(request{method: "GET", path: "/v1/stock?sku=TEA", user: &cashier, headers: map[string]string{"X-Min-Position": pos}}), 200)
		if items := itemsOf(t, r); len(items) != 1 || !sameJSON(items[0], levelJSON(l)) {
			t.Fatalf("after receipt %d: %s", i+1, r.body)
		}
		got, err := eventstore.ParsePosition(r.header.Get("X-Position"))
		want, _ := eventstore.ParsePosition(pos)
		if err != nil || got.Less(want) {
			t.Fatalf("X-Position %q is behind the write's %q", r.header.Get("X-Position"), pos)
		}

		// Movements, with the query parameter.
		r = must(t, e.do(request{method: "GET", path: "/v1/stock/TEA/movements?min_position=" + url.QueryEscape(pos), user: &cashier}), 200)
		if items := itemsOf(t, r); len(items) != i+1 || items[0].(map[string]any)["qty"] != float64(i+1) {
			t.Fatalf("movements after receipt %d: %s", i+1, r.body)
		}
	}

	r := must(t, e.do(request{method: "GET", path: "/v1/stock", user: &cashier, headers: map[string]string{"X-Min-Position": "999999999999.0"}}), 503)
	if r.code(t) != "not_yet_consistent" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("unreached position: %s %v", r.body, r.header)
	}
	r = must(t, e.do(request{method: "GET", path: "/v1/stock/TEA/movements?min_position=999999999999.0", user: &cashier}), 503)
	if r.code(t) != "not_yet_consistent" {
		t.Fatalf("unreached position: %s", r.body)
	}
}
