package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// projectionOf returns the entry of name in a GET /v1/admin/projections
// answer.
func projectionOf(t *testing.T, r resp, name string) map[string]any {
	t.Helper()
	list, _ := r.json(t)["projections"].([]any)
	for _, p := range list {
		if m := p.(map[string]any); m["name"] == name {
			return m
		}
	}
	t.Fatalf("no projection %q in %s", name, r.body)
	return nil
}

// ADMIN sees the projections and rebuilds one while the sale it projects
// stays readable; every other role is refused; an unknown name is 404, and
// a second rebuild while one runs is 409.
func TestAdminProjections(t *testing.T) {
	e := newEnvWith(t, options{reads: true, rebuilds: true, consistencyWait: 2 * time.Second})
	merchant, branch := uuid.New(), uuid.New()
	admin := newUser(t, merchant, "ADMIN")
	s, paid := e.paidSale(&admin, branch)
	pos := paid.header.Get("X-Position")
	read := func() map[string]any {
		t.Helper()
		return must(t, e.do(request{method: "GET", path: s.path(""), user: &admin, headers: map[string]string{"X-Min-Position": pos}}), 200).json(t)
	}
	before := read()
	// A projector bug's work, read (and its body kept in memory) before the
	// rebuild repairs it: the rebuilt detail has the same version.
	db, err := pgx.Connect(t.Context(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(t.Context(), `UPDATE rm_transactions SET code = 'BROKEN', paid = 0`); err != nil {
		t.Fatal(err)
	}
	e.srv.ReadModelsReplaced() // forget the good body read above
	if got := read(); got["code"] != "BROKEN" {
		t.Fatalf("the damaged detail reads %v (the test proves nothing)", got["code"])
	}

	for _, role := range []string{"CASHIER", "MANAGER", "AUDITOR"} {
		u := newUser(t, merchant, role)
		if c := must(t, e.do(request{method: "GET", path: "/v1/admin/projections", user: &u}), 403).code(t); c != "forbidden" {
			t.Fatalf("%s lists projections: %s", role, c)
		}
		if c := must(t, e.do(request{method: "POST", path: "/v1/admin/projections/all/rebuild", user: &u}), 403).code(t); c != "forbidden" {
			t.Fatalf("%s rebuilds: %s", role, c)
		}
	}
	must(t, e.do(request{method: "GET", path: "/v1/admin/projections"}), 401)
	if c := must(t, e.do(request{method: "POST", path: "/v1/admin/projections/journal/rebuild", user: &admin}), 404).code(t); c != "not_found" {
		t.Fatalf("unknown projection: %s", c)
	}

	list := must(t, e.do(request{method: "GET", path: "/v1/admin/projections", user: &admin}), 200)
	if n := len(list.json(t)["projections"].([]any)); n != 4 {
		t.Fatalf("%d projections listed: %s", n, list.body)
	}
	if tx := projectionOf(t, list, "transactions"); tx["position"] == "0.0" || tx["rebuild"] != nil || tx["last_rebuild"] != nil {
		t.Fatalf("transactions before any rebuild: %v", tx)
	}

	id := must(t, e.do(request{method: "POST", path: "/v1/admin/projections/transactions/rebuild", user: &admin}), 202).str(t, "rebuild_id")
	var last map[string]any
	for deadline := time.Now().Add(20 * time.Second); ; {
		tx := projectionOf(t, must(t, e.do(request{method: "GET", path: "/v1/admin/projections", user: &admin}), 200), "transactions")
		if l, ok := tx["last_rebuild"].(map[string]any); ok && l["rebuild_id"] == id {
			last = l
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rebuild %s not finished after 20 s: %v", id, tx)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if last["state"] != "done" || last["events_done"].(float64) < 1 || last["finished_at"] == nil || last["eta_seconds"] != nil {
		t.Fatalf("finished rebuild: %v", last)
	}
	// The server hears of the swap (rebuild.Watcher) and reads the repaired
	// detail, not the damaged body it rendered.
	for deadline := time.Now().Add(10 * time.Second); e.replaced.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server was never told of the swap")
		}
	}
	if a, b := string(mustJSON(t, read())), string(mustJSON(t, before)); a != b {
		t.Fatalf("the sale after the rebuild:\n%s\nbefore it was damaged:\n%s", a, b)
	}

	// Another process's rebuild holds the slot.
	other, err := pgx.Connect(t.Context(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(t.Context(), `SELECT pg_advisory_lock(x'72626c64'::int, 1)`); err != nil {
		t.Fatal(err)
	}
	if c := must(t, e.do(request{method: "POST", path: "/v1/admin/projections/all/rebuild", user: &admin}), 409).code(t); c != "invalid_state" {
		t.Fatalf("rebuild while another runs: %s", c)
	}
}

// With operators configured, another merchant's ADMIN cannot see or rebuild
// the deployment's projections.
func TestAdminProjectionsOnlyForOperators(t *testing.T) {
	operator := uuid.New()
	e := newEnvWith(t, options{reads: true, rebuilds: true, operators: []uuid.UUID{operator}})
	tenant := newUser(t, uuid.New(), "ADMIN")
	op := newUser(t, operator, "ADMIN")
	if c := must(t, e.do(request{method: "GET", path: "/v1/admin/projections", user: &tenant}), 403).code(t); c != "forbidden" {
		t.Fatalf("a tenant's ADMIN lists projections: %s", c)
	}
	if c := must(t, e.do(request{method: "POST", path: "/v1/admin/projections/all/rebuild", user: &tenant}), 403).code(t); c != "forbidden" {
		t.Fatalf("a tenant's ADMIN rebuilds: %s", c)
	}
	must(t, e.do(request{method: "GET", path: "/v1/admin/projections", user: &op}), 200)
}

// A detail rendered before a rebuild swapped tables in is not served after
// it, though its version did not change (Server.ReadModelsReplaced).
func TestRenderedDetailsDroppedWhenReadModelsAreReplaced(t *testing.T) {
	e := newReadEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	manager := newUser(t, merchant, "MANAGER")
	s, paid := e.paidSale(&manager, branch)
	read := func() string {
		t.Helper()
		r := must(t, e.do(request{method: "GET", path: s.path(""), user: &manager, headers: map[string]string{"X-Min-Position": paid.header.Get("X-Position")}}), 200)
		return r.str(t, "code")
	}
	code := read()
	// What a rebuild that fixed the projector would leave: other content at
	// the same version.
	c, err := pgx.Connect(t.Context(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(t.Context(), `UPDATE rm_transactions SET code = 'REBUILT'`); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != code {
		t.Fatalf("before the swap is known the detail reads %q, want the rendered %q (the test proves nothing)", got, code)
	}
	e.srv.ReadModelsReplaced()
	if got := read(); got != "REBUILT" {
		t.Fatalf("after ReadModelsReplaced the detail reads %q, want REBUILT", got)
	}
}
