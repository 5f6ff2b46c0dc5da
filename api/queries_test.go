package api_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/projections"
	"pos/queries"
)

// startReads builds a queries.Reader on its own pos_api pool, the
// projections' checkpoints on pool, and a runner that follows store until
// the test ends.
func startReads(t *testing.T, dbURL string, pool *pgxpool.Pool, store *pgstore.Store) (*queries.Reader, *projections.Checkpoints) {
	t.Helper()
	qpool, err := queries.ConnectSized(context.Background(), dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(qpool.Close)
	key, err := queries.NewCursorKey([]byte("api-test-cursor-key-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	reader, err := queries.New(qpool, key)
	if err != nil {
		t.Fatal(err)
	}
	runner, err := projections.NewRunner(pool, store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			err := runner.Follow(ctx, eventstore.Start, eventstore.FollowOptions{Idle: 10 * time.Millisecond})
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("projections runner: %v (restarting)", err)
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return reader, runner.Checkpoints()
}

// newReadEnv waits up to 2 s (the API's default) for X-Min-Position: reads
// of one's own writes must not depend on how fast a loaded test machine
// projects. TestMinPositionNotReached sets a shorter bound to time the 503.
func newReadEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, options{reads: true, consistencyWait: 2 * time.Second})
}

// paidSale opens a sale of one line and pays it in cash; it returns the
// sale and the last command's answer.
func (e *env) paidSale(u *user, branch uuid.UUID) (*sale, resp) {
	e.t.Helper()
	s := e.open(u, branch)
	s.addItem(2, 10000)
	s.stockUp()
	must(e.t, s.post("/checkout", map[string]any{}), 200)
	r := must(e.t, s.post("/payments", map[string]any{"method": "CASH", "amount": 50000}), 201)
	return s, r
}

func TestReadYourWriteWithMinPosition(t *testing.T) {
	e := newReadEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	s, paid := e.paidSale(&cashier, branch)
	pos := paid.header.Get("X-Position")

	r := must(t, e.do(request{method: "GET", path: s.path(""), user: &auditor, headers: map[string]string{"X-Min-Position": pos}}), 200)
	body := r.json(t)
	if body["status"] != "paid" || int64(body["version"].(float64)) != paid.num(t, "version") || r.header.Get("ETag") != paid.header.Get("ETag") {
		t.Fatalf("transaction after payment: %s %v", r.body, r.header)
	}
	lines, payments := body["lines"].([]any), body["payments"].([]any)
	if len(lines) != 1 || len(payments) != 1 || payments[0].(map[string]any)["method"] != "CASH" {
		t.Fatalf("lines or payments: %s", r.body)
	}
	got, err := eventstore.ParsePosition(r.header.Get("X-Position"))
	want, _ := eventstore.ParsePosition(pos)
	if err != nil || got.Less(want) {
		t.Fatalf("X-Position %q is behind the write's %q", r.header.Get("X-Position"), pos)
	}

	// The query parameter works too.
	must(t, e.do(request{method: "GET", path: s.path("?min_position=" + url.QueryEscape(pos)), user: &cashier}), 200)
}

func TestMinPositionNotReached(t *testing.T) {
	e := newEnvWith(t, options{reads: true, consistencyWait: 300 * time.Millisecond})
	merchant := uuid.New()
	manager := newUser(t, merchant, "MANAGER")

	start := time.Now()
	r := must(t, e.do(request{method: "GET", path: "/v1/transactions", user: &manager, headers: map[string]string{"X-Min-Position": "999999999999.0"}}), 503)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("503 took %v, want about the 300ms bound", took)
	}
	if r.code(t) != "not_yet_consistent" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("answer: %s %v", r.body, r.header)
	}
	r = must(t, e.do(request{method: "GET", path: "/v1/reports/daily-sales?from=2025-01-01&to=2025-01-02&min_position=999999999999.0", user: &manager}), 503)
	if r.code(t) != "not_yet_consistent" {
		t.Fatalf("report answer: %s", r.body)
	}
	r = must(t, e.do(request{method: "GET", path: "/v1/transactions", user: &manager, headers: map[string]string{"X-Min-Position": "latest"}}), 400)
	if r.code(t) != "invalid_request" {
		t.Fatalf("malformed position: %s", r.body)
	}
}

func TestListTransactionsPaging(t *testing.T) {
	e := newReadEnv(t)
	merchant, branch, other := uuid.New(), uuid.New(), uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	var last resp
	ids := map[string]bool{}
	for range 3 {
		s := e.open(&cashier, branch)
		ids[s.id] = true
		last = s.addItem(1, 500)
	}
	e.open(&cashier, other)
	pos := last.header.Get("X-Position")

	seen := map[string]bool{}
	path := "/v1/transactions?limit=2&branch_id=" + branch.String()
	r := must(t, e.do(request{method: "GET", path: path, user: &cashier, headers: map[string]string{"X-Min-Position": pos}}), 200)
	page := r.json(t)
	cursor, _ := page["next_cursor"].(string)
	if len(page["items"].([]any)) != 2 || cursor == "" || r.header.Get("X-Position") == "" {
		t.Fatalf("first page: %s %v", r.body, r.header)
	}
	for _, it := range page["items"].([]any) {
		seen[it.(map[string]any)["id"].(string)] = true
	}
	r = must(t, e.do(request{method: "GET", path: path + "&cursor=" + url.QueryEscape(cursor), user: &cashier}), 200)
	page = r.json(t)
	if len(page["items"].([]any)) != 1 || page["next_cursor"] != nil {
		t.Fatalf("second page: %s", r.body)
	}
	for _, it := range page["items"].([]any) {
		seen[it.(map[string]any)["id"].(string)] = true
	}
	if len(seen) != 3 {
		t.Fatalf("pages held %v, want %v", seen, ids)
	}
	for id := range ids {
		if !seen[id] {
			t.Errorf("transaction %s missing from the pages", id)
		}
	}

	// A tampered cursor, or one used with another filter, is refused.
	tampered := []byte(cursor)
	if tampered[5] == 'A' {
		tampered[5] = 'B'
	} else {
		tampered[5] = 'A'
	}
	for _, p := range []string{path + "&cursor=" + string(tampered), "/v1/transactions?limit=2&cursor=" + cursor} {
		r = must(t, e.do(request{method: "GET", path: p, user: &cashier}), 400)
		if r.code(t) != "invalid_request" {
			t.Fatalf("bad cursor: %s", r.body)
		}
	}
	for _, p := range []string{"/v1/transactions?status=lost", "/v1/transactions?from=yesterday", "/v1/transactions?limit=501", "/v1/transactions?branch_id=main"} {
		r = must(t, e.do(request{method: "GET", path: p, user: &cashier}), 400)
		if r.code(t) != "invalid_request" {
			t.Fatalf("%s: %s", p, r.body)
		}
	}

	// A token limited to a branch may not ask for another one.
	limited := newUser(t, merchant, "CASHIER", branch)
	r = must(t, e.do(request{method: "GET", path: "/v1/transactions?branch_id=" + other.String(), user: &limited}), 403)
	if r.code(t) != "forbidden" {
		t.Fatalf("other branch: %s", r.body)
	}
	// Naming no branch, it sees its own branch only.
	r = must(t, e.do(request{method: "GET", path: "/v1/transactions?limit=50", user: &limited}), 200)
	items := r.json(t)["items"].([]any)
	if len(items) != 3 {
		t.Fatalf("branch-limited list holds %d items, want its branch's 3: %s", len(items), r.body)
	}
	for _, it := range items {
		if it.(map[string]any)["branch_id"] != branch.String() {
			t.Fatalf("branch-limited list shows another branch: %s", r.body)
		}
	}
	two := newUser(t, merchant, "CASHIER", branch, other)
	r = must(t, e.do(request{method: "GET", path: "/v1/transactions", user: &two}), 400)
	if r.code(t) != "invalid_request" {
		t.Fatalf("several branches, none named: %s", r.body)
	}
}

func TestGetAnotherMerchantsTransaction(t *testing.T) {
	e := newReadEnv(t)
	branch := uuid.New()
	mine := newUser(t, uuid.New(), "MANAGER")
	theirs := newUser(t, uuid.New(), "ADMIN")
	s := e.open(&mine, branch)
	pos := s.addItem(1, 100).header.Get("X-Position")
	must(t, e.do(request{method: "GET", path: s.path(""), user: &mine, headers: map[string]string{"X-Min-Position": pos}}), 200)
	for _, p := range []string{s.path(""), "/v1/transactions/" + uuid.NewString(), "/v1/transactions/nope"} {
		r := must(t, e.do(request{method: "GET", path: p, user: &theirs}), 404)
		if r.code(t) != "not_found" {
			t.Fatalf("%s: %s", p, r.body)
		}
	}
	r := must(t, e.do(request{method: "GET", path: "/v1/transactions", user: &theirs}), 200)
	if n := len(r.json(t)["items"].([]any)); n != 0 {
		t.Fatalf("another merchant lists %d transactions: %s", n, r.body)
	}
}

func TestDailySalesAfterPaidSale(t *testing.T) {
	e := newReadEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	_, paid := e.paidSale(&cashier, branch)
	grand := int64(paid.json(t)["totals"].(map[string]any)["grand_total"].(float64))

	now := time.Now().UTC()
	path := "/v1/reports/daily-sales?from=" + now.AddDate(0, 0, -1).Format(time.DateOnly) +
		"&to=" + now.AddDate(0, 0, 1).Format(time.DateOnly) + "&branch_id=" + branch.String()
	r := must(t, e.do(request{method: "GET", path: path, user: &auditor, headers: map[string]string{"X-Min-Position": paid.header.Get("X-Position")}}), 200)
	items := r.json(t)["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("report rows: %s", r.body)
	}
	row := items[0].(map[string]any)
	if row["count"].(float64) != 1 || row["currency"] == "" || row["branch_id"] != branch.String() ||
		int64(row["by_method"].(map[string]any)["CASH"].(float64)) != grand {
		t.Fatalf("report row: %s (grand total %d)", r.body, grand)
	}
	for _, p := range []string{"/v1/reports/daily-sales?from=2025-01-02", "/v1/reports/daily-sales?from=2025-01-02&to=2025-01-01", "/v1/reports/daily-sales?from=2025-01-01&to=2026-06-01"} {
		r = must(t, e.do(request{method: "GET", path: p, user: &auditor}), 400)
		if r.code(t) != "invalid_request" {
			t.Fatalf("%s: %s", p, r.body)
		}
	}
}

// Two merchants may hold a transaction of the same id (clients choose ids
// for offline sync): each reads its own, at the same version, whatever the
// server remembers of the other's.
func TestSameTransactionIDInTwoMerchants(t *testing.T) {
	e := newReadEnv(t)
	id := uuid.NewString()
	var bodies [2]string
	for i, price := range []int64{10000, 77000} {
		u := newUser(t, uuid.New(), "CASHIER")
		must(t, e.do(request{method: "POST", path: "/v1/transactions", user: &u, body: map[string]any{"branch_id": uuid.New(), "transaction_id": id}}), 201)
		added := must(t, e.do(request{method: "POST", path: "/v1/transactions/" + id + "/items", user: &u,
			body: map[string]any{"sku": "TEA", "name": "Tea", "qty": 1, "unit_price": price}}), 201)
		for range 2 { // the second read is the remembered one
			r := must(t, e.do(request{method: "GET", path: "/v1/transactions/" + id, user: &u,
				headers: map[string]string{"X-Min-Position": added.header.Get("X-Position")}}), 200)
			lines := r.json(t)["lines"].([]any)
			if got := int64(lines[0].(map[string]any)["unit_price"].(float64)); got != price {
				t.Fatalf("merchant %d reads unit price %d, want its own %d: %s", i, got, price, r.body)
			}
			bodies[i] = string(r.body)
		}
	}
	if bodies[0] == bodies[1] {
		t.Fatal("two merchants' transactions read the same")
	}
}

// A report from year 0 is a bad request, not a failure: PostgreSQL's dates
// have no year 0.
func TestDailySalesYearZeroIsABadRequest(t *testing.T) {
	e := newReadEnv(t)
	auditor := newUser(t, uuid.New(), "AUDITOR")
	for _, p := range []string{
		"/v1/reports/daily-sales?from=0000-01-01&to=0000-01-01",
		"/v1/reports/daily-sales?from=0000-12-31&to=0001-01-01",
	} {
		if r := e.do(request{method: "GET", path: p, user: &auditor}); r.status != 400 || r.code(t) != "invalid_request" {
			t.Errorf("%s: %d %s, want 400 invalid_request", p, r.status, r.body)
		}
	}
}

// The daily-sales report is a list like the others: limit, next_cursor
// absent on the last page, and a bad cursor answers 400. Today's report
// (one day, cacheable) and a range (paged in PostgreSQL) both page.
func TestDailySalesPages(t *testing.T) {
	e := newReadEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	var last string
	for range 3 { // three branches: three rows today
		_, paid := e.paidSale(&cashier, uuid.New())
		last = paid.header.Get("X-Position")
	}
	jakarta, err := time.LoadLocation("Asia/Jakarta") // the default zone
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().In(jakarta)
	today := now.Format(time.DateOnly) // the sales' business day
	for _, base := range []string{
		"/v1/reports/daily-sales?from=" + today + "&to=" + today,
		"/v1/reports/daily-sales?from=" + now.AddDate(0, 0, -1).Format(time.DateOnly) + "&to=" + now.AddDate(0, 0, 1).Format(time.DateOnly),
	} {
		// Written rows are visible to the first read; the later pages
		// read as a screen does, from the cache where there is one.
		seen := map[string]bool{}
		cursor, pages := "", 0
		for {
			path := base + "&limit=2"
			headers := map[string]string{}
			if cursor != "" {
				path += "&cursor=" + cursor
			} else {
				headers["X-Min-Position"] = last
			}
			r := must(t, e.do(request{method: "GET", path: path, user: &auditor, headers: headers}), 200)
			body := r.json(t)
			for _, it := range body["items"].([]any) {
				b := it.(map[string]any)["branch_id"].(string)
				if seen[b] {
					t.Fatalf("%s: branch %s twice", base, b)
				}
				seen[b] = true
			}
			pages++
			next, ok := body["next_cursor"].(string)
			if !ok {
				break
			}
			cursor = next
		}
		if len(seen) != 3 || pages != 2 {
			t.Errorf("%s: %d rows in %d pages, want 3 in 2", base, len(seen), pages)
		}
		if r := must(t, e.do(request{method: "GET", path: base + "&cursor=garbage", user: &auditor}), 400); r.code(t) != "invalid_request" {
			t.Errorf("%s with a bad cursor: %s", base, r.body)
		}
	}
}
