package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/commands"
	"pos/eventstore"
)

// Fifty cashiers check out fifty sales of the last unit at once: exactly one
// gets it, the others answer 422 insufficient_stock naming the SKU, and no
// reservation is left behind by the losers. Half send idempotency keys, so
// both the plain store and the per-request transaction are in the race.
func TestLastUnitSellsOnce(t *testing.T) {
	// A small pool: the fifty requests queue for connections, as they
	// would on a busy server, and the suite's parallel packages stay
	// within the server's connection limit.
	e := newEnvWith(t, options{poolSize: 12})
	merchant, branch := uuid.New(), uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	e.receiveStock(merchant, branch, "LAST", 1)
	const n = 50
	sales := make([]*sale, n)
	for i := range sales {
		sales[i] = e.open(&cashier, branch)
		must(t, sales[i].post("/items", map[string]any{"sku": "LAST", "name": "Last one", "qty": 1, "unit_price": 1000}), 201)
	}
	answers := make([]resp, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, s := range sales {
		wg.Go(func() {
			<-start
			req := request{method: "POST", path: s.path("/checkout"), user: &cashier, body: map[string]any{}}
			if i%2 == 0 {
				req.headers = map[string]string{"Idempotency-Key": fmt.Sprintf("checkout-%d", i)}
			}
			answers[i] = e.do(req)
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i, a := range answers {
		switch a.status {
		case http.StatusOK:
			won++
		case http.StatusUnprocessableEntity:
			if c := a.code(t); c != "insufficient_stock" {
				t.Errorf("checkout %d: 422 %s", i, c)
			}
			if skus, _ := a.json(t)["skus"].([]any); len(skus) != 1 || skus[0] != "LAST" {
				t.Errorf("checkout %d: skus %v, want [LAST]", i, a.json(t)["skus"])
			}
		default:
			t.Errorf("checkout %d: %d %s", i, a.status, a.body)
		}
	}
	if won != 1 {
		t.Fatalf("%d checkouts won the last unit, want exactly 1", won)
	}
	// The ledger holds one reservation and nothing else: the losers left
	// none behind. A receipt of zero-cost units shows the state.
	r := e.receiveStock(merchant, branch, "LAST", 1)
	if on, res, av := r.num(t, "on_hand"), r.num(t, "reserved"), r.num(t, "available"); on != 2 || res != 1 || av != 1 {
		t.Errorf("after the race and one more receipt: on hand %d reserved %d available %d, want 2, 1, 1", on, res, av)
	}
}

// A ledger is written outside the request's transaction: concurrent copies
// of one keyed stock command, naming no movement id, must still move the
// stock once (the id comes from the key), in both key modes.
func TestKeyedStockCommandsApplyOnce(t *testing.T) {
	for _, noTx := range []bool{false, true} {
		t.Run(fmt.Sprint("claim mode ", noTx), func(t *testing.T) {
			e := newEnvWith(t, options{noTx: noTx})
			merchant, b1, b2 := uuid.New(), uuid.New(), uuid.New()
			manager := newUser(t, merchant, "MANAGER")
			send := func(path, key string, body any) []resp {
				const n = 8
				out := make([]resp, n)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range out {
					wg.Go(func() {
						<-start
						out[i] = e.do(request{method: "POST", path: "/v1/stock/" + path, user: &manager, body: body, headers: map[string]string{"Idempotency-Key": key}})
					})
				}
				close(start)
				wg.Wait()
				for i, r := range out {
					if r.status != 201 || !bytes.Equal(r.body, out[0].body) {
						t.Fatalf("%s copy %d: %d %s; first %d %s", path, i, r.status, r.body, out[0].status, out[0].body)
					}
				}
				return out
			}
			send("receipts", "receive-1", map[string]any{"branch_id": b1, "sku": "MILK", "qty": 10, "unit_cost": 100})
			send("adjustments", "adjust-1", map[string]any{"branch_id": b1, "sku": "MILK", "delta": -1, "reason": "broken"})
			send("transfers", "transfer-1", map[string]any{"from_branch_id": b1, "to_branch_id": b2, "sku": "MILK", "qty": 4})
			for _, c := range []struct {
				branch uuid.UUID
				want   []string
			}{{b1, []string{"StockReceived", "StockAdjusted", "StockTransferredOut"}}, {b2, []string{"StockTransferredIn"}}} {
				events, err := e.store.ReadStream(context.Background(), commands.StockStream(merchant, c.branch, "MILK"), 1, 0)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, ev := range events {
					got = append(got, ev.Type)
				}
				if !slices.Equal(got, c.want) {
					t.Errorf("branch %s ledger after each command sent 8 times with one key: %v, want %v", c.branch, got, c.want)
				}
			}
		})
	}
}

func TestStockCommands(t *testing.T) {
	e := newEnv(t)
	merchant, b1, b2 := uuid.New(), uuid.New(), uuid.New()
	manager := newUser(t, merchant, "MANAGER")
	cashier := newUser(t, merchant, "CASHIER", b1)
	auditor := newUser(t, merchant, "AUDITOR")
	post := func(u *user, path string, body any) resp {
		return e.do(request{method: "POST", path: "/v1/stock/" + path, user: u, body: body})
	}

	r := must(t, post(&cashier, "receipts", map[string]any{"branch_id": b1, "sku": "MILK", "qty": 10, "unit_cost": 100}), 201)
	must(t, post(&manager, "receipts", map[string]any{"branch_id": b1, "sku": "MILK", "qty": 5, "unit_cost": 130}), 201)
	ledger := r.str(t, "id")
	r = must(t, post(&manager, "adjustments", map[string]any{"branch_id": b1, "sku": "MILK", "delta": -1, "reason": "broken"}), 201)
	if r.num(t, "on_hand") != 14 || r.num(t, "avg_cost") != 110 || r.str(t, "id") != ledger {
		t.Errorf("after receipts and an adjustment: %s", r.body)
	}
	r = must(t, post(&manager, "transfers", map[string]any{"from_branch_id": b1, "to_branch_id": b2, "sku": "MILK", "qty": 4}), 201)
	from, to := r.json(t)["from"].(map[string]any), r.json(t)["to"].(map[string]any)
	if from["on_hand"] != float64(10) || to["on_hand"] != float64(4) || to["avg_cost"] != float64(110) {
		t.Errorf("transfer answer: %s", r.body)
	}
	if r.header.Get("X-Position") == "" || r.str(t, "transfer_id") == "" {
		t.Errorf("transfer answer lacks X-Position or transfer_id: %s", r.body)
	}

	for _, c := range []struct {
		name   string
		u      *user
		path   string
		body   any
		status int
		code   string
	}{
		{"adjustment below available", &manager, "adjustments", map[string]any{"branch_id": b1, "sku": "MILK", "delta": -11, "reason": "typo"}, 422, "insufficient_stock"},
		{"transfer beyond available", &manager, "transfers", map[string]any{"from_branch_id": b2, "to_branch_id": b1, "sku": "MILK", "qty": 5}, 422, "insufficient_stock"},
		{"transfer to the same branch", &manager, "transfers", map[string]any{"from_branch_id": b1, "to_branch_id": b1, "sku": "MILK", "qty": 1}, 400, "invalid_request"},
		{"cashier adjusts", &cashier, "adjustments", map[string]any{"branch_id": b1, "sku": "MILK", "delta": 1, "reason": "found"}, 403, "forbidden"},
		{"cashier transfers", &cashier, "transfers", map[string]any{"from_branch_id": b1, "to_branch_id": b2, "sku": "MILK", "qty": 1}, 403, "forbidden"},
		{"cashier receives at another branch", &cashier, "receipts", map[string]any{"branch_id": b2, "sku": "MILK", "qty": 1, "unit_cost": 1}, 403, "forbidden"},
		{"auditor receives", &auditor, "receipts", map[string]any{"branch_id": b1, "sku": "MILK", "qty": 1, "unit_cost": 1}, 403, "forbidden"},
		{"zero qty", &manager, "receipts", map[string]any{"branch_id": b1, "sku": "MILK", "qty": 0, "unit_cost": 1}, 400, "invalid_request"},
		{"negative cost", &manager, "receipts", map[string]any{"branch_id": b1, "sku": "MILK", "qty": 1, "unit_cost": -1}, 400, "invalid_request"},
		{"no sku", &manager, "receipts", map[string]any{"branch_id": b1, "qty": 1, "unit_cost": 1}, 400, "invalid_request"},
		{"no branch", &manager, "receipts", map[string]any{"sku": "MILK", "qty": 1, "unit_cost": 1}, 400, "invalid_request"},
		{"no unit cost", &manager, "receipts", map[string]any{"branch_id": b1, "sku": "MILK", "qty": 1}, 400, "invalid_request"},
		{"zero delta", &manager, "adjustments", map[string]any{"branch_id": b1, "sku": "MILK", "delta": 0, "reason": "x"}, 400, "invalid_request"},
		{"no reason", &manager, "adjustments", map[string]any{"branch_id": b1, "sku": "MILK", "delta": 1}, 400, "invalid_request"},
		{"unknown field", &manager, "receipts", map[string]any{"branch_id": b1, "sku": "MILK", "qty": 1, "unit_cost": 1, "colour": "red"}, 400, "invalid_request"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := post(c.u, c.path, c.body)
			if r.status != c.status || r.code(t) != c.code {
				t.Errorf("%d %s, want %d %s: %s", r.status, r.code(t), c.status, c.code, r.body)
			}
		})
	}

	// A receipt id already applied changes nothing.
	receipt := uuid.NewString()
	first := must(t, post(&manager, "receipts", map[string]any{"branch_id": b2, "sku": "MILK", "qty": 3, "unit_cost": 200, "receipt_id": receipt}), 201)
	again := must(t, post(&manager, "receipts", map[string]any{"branch_id": b2, "sku": "MILK", "qty": 3, "unit_cost": 200, "receipt_id": receipt}), 201)
	if first.num(t, "version") != again.num(t, "version") || again.num(t, "on_hand") != 7 {
		t.Errorf("a repeated receipt id: %s then %s", first.body, again.body)
	}
	reused := post(&manager, "receipts", map[string]any{"branch_id": b2, "sku": "MILK", "qty": 30, "unit_cost": 200, "receipt_id": receipt})
	if reused.status != 409 || reused.code(t) != "already_exists" {
		t.Errorf("a receipt id reused for other figures: %d %s", reused.status, reused.body)
	}

	// The audit trail replays the ledger by the id the answers carry.
	admin := newUser(t, merchant, "ADMIN")
	st := must(t, e.do(request{method: "GET", path: "/v1/audit/stock/" + ledger + "/state", user: &admin}), 200)
	if st.num(t, "on_hand") != 10 || st.num(t, "avg_cost") != 110 || st.str(t, "sku") != "MILK" {
		t.Errorf("audit state: %s", st.body)
	}
	other := newUser(t, uuid.New(), "ADMIN")
	must(t, e.do(request{method: "GET", path: "/v1/audit/stock/" + ledger + "/state", user: &other}), 404)
}

// A ledger is written outside the request's transaction, so a keyed request
// whose key another request stored must not reach it: a key reused for
// another receipt or adjustment answers 422 and moves no stock, and a
// checkout refused for a shortage, retried with its key once the stock has
// come, replays the refusal and reserves nothing. Concurrent requests that
// reuse one key for different receipts move the stock once.
func TestStoredKeysKeepStockUntouched(t *testing.T) {
	e := newEnv(t)
	merchant, branch := uuid.New(), uuid.New()
	manager := newUser(t, merchant, "MANAGER")
	keyed := func(path, key string, body any) resp {
		return e.do(request{method: "POST", path: path, user: &manager, body: body, headers: map[string]string{"Idempotency-Key": key}})
	}
	receipt := func(qty int64) map[string]any {
		return map[string]any{"branch_id": branch, "sku": "MILK", "qty": qty, "unit_cost": 100}
	}
	// What the ledger holds, shown by a receipt of one unit (counted in
	// extra).
	var extra int64
	onHand := func() (int64, int64) {
		t.Helper()
		r := e.receiveStock(merchant, branch, "MILK", 1)
		extra++
		return r.num(t, "on_hand") - extra, r.num(t, "reserved")
	}
	must(t, keyed("/v1/stock/receipts", "rcpt-1", receipt(5)), 201)
	if c := must(t, keyed("/v1/stock/receipts", "rcpt-1", receipt(7)), 422).code(t); c != "idempotency_key_reused" {
		t.Fatalf("receipt under a stored key: 422 %s", c)
	}
	must(t, keyed("/v1/stock/adjustments", "adj-1", map[string]any{"branch_id": branch, "sku": "MILK", "delta": -1, "reason": "broken"}), 201)
	if c := must(t, keyed("/v1/stock/adjustments", "adj-1", map[string]any{"branch_id": branch, "sku": "MILK", "delta": -3, "reason": "broken"}), 422).code(t); c != "idempotency_key_reused" {
		t.Fatalf("adjustment under a stored key: 422 %s", c)
	}
	if on, _ := onHand(); on != 4 {
		t.Fatalf("on hand %d after receiving 5 and adjusting -1, each also refused under its stored key: want 4", on)
	}

	// Eight receipts of different sizes race under one new key: one
	// applies, the others answer 422 (or replay it, if sent alike).
	answers := make([]resp, 8)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range answers {
		wg.Go(func() {
			<-start
			answers[i] = keyed("/v1/stock/receipts", "rcpt-race", receipt(int64(10+i)))
		})
	}
	close(start)
	wg.Wait()
	var won int64
	for i, a := range answers {
		switch {
		case a.status == 201 && won == 0:
			won = int64(10 + i)
		case a.status == 422 && a.code(t) == "idempotency_key_reused":
		default:
			t.Fatalf("receipt %d of the race: %d %s", i, a.status, a.body)
		}
	}
	if on, _ := onHand(); won == 0 || on != 4+won {
		t.Fatalf("on hand %d after a race of receipts under one key, one of %d units applied: want %d", on, won, 4+won)
	}

	// A checkout refused for want of stock is final for its key.
	cashier := newUser(t, merchant, "CASHIER")
	s := e.open(&cashier, branch)
	must(t, s.post("/items", map[string]any{"sku": "MILK", "name": "Milk", "qty": 100, "unit_price": 1000}), 201)
	checkout := request{method: "POST", path: s.path("/checkout"), user: &cashier, body: map[string]any{}, headers: map[string]string{"Idempotency-Key": "co-1"}}
	first := must(t, e.do(checkout), 422)
	e.receiveStock(merchant, branch, "MILK", 100)
	again := must(t, e.do(checkout), 422)
	if !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("checkout retried with its key: %s (replayed %q), want the stored %s", again.body, again.header.Get("Idempotent-Replayed"), first.body)
	}
	if _, reserved := onHand(); reserved != 0 {
		t.Fatalf("%d units reserved by a checkout whose key had stored its refusal: want 0", reserved)
	}
}

// A transfer id is the client's, unique at its source ledger: one slip may
// pull the same SKU from two branches. Both transfers arrive; before, the
// target refused the second after its units had left their branch.
func TestOneTransferIDFromTwoBranches(t *testing.T) {
	e := newEnv(t)
	merchant, b1, b2, b3 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	manager := newUser(t, merchant, "MANAGER")
	e.receiveStock(merchant, b1, "MILK", 10)
	e.receiveStock(merchant, b3, "MILK", 10)
	slip := uuid.New()
	for _, from := range []uuid.UUID{b1, b3} {
		must(t, e.do(request{method: "POST", path: "/v1/stock/transfers", user: &manager,
			body: map[string]any{"from_branch_id": from, "to_branch_id": b2, "sku": "MILK", "qty": 4, "transfer_id": slip}}), 201)
	}
	for branch, want := range map[uuid.UUID]int64{b1: 6, b2: 8, b3: 6} {
		if on := e.receiveStock(merchant, branch, "MILK", 1).num(t, "on_hand") - 1; on != want {
			t.Errorf("branch %s: on hand %d, want %d", branch, on, want)
		}
	}
}

// stallingStore stalls the first ledger append of merchant until release is
// closed, telling entered when it is there.
type stallingStore struct {
	eventstore.Store
	merchant         string
	armed            *atomic.Bool
	entered, release chan struct{}
	once             *sync.Once
}

func (s stallingStore) Append(ctx context.Context, stream string, exp eventstore.ExpectedVersion, ev ...eventstore.EventData) (eventstore.AppendResult, error) {
	if s.armed.Load() && strings.HasPrefix(stream, "stock-"+s.merchant) {
		s.once.Do(func() { close(s.entered); <-s.release })
	}
	return s.Store.Append(ctx, stream, exp, ev...)
}

func newStallingEnv(t *testing.T, merchant uuid.UUID) (*env, stallingStore) {
	st := stallingStore{merchant: merchant.String(), armed: new(atomic.Bool), entered: make(chan struct{}), release: make(chan struct{}), once: &sync.Once{}}
	e := newEnvWith(t, options{wrap: func(s eventstore.Store) eventstore.Store {
		st.Store = s
		return st
	}})
	st.armed.Store(true)
	return e, st
}

// A keyed stock command claims its key without taking a transaction id (a
// lock and a read), so while it works on ledgers the store's feed goes on:
// another merchant's write is readable at once. A key row inserted early
// held every feed reader back until the command ended.
func TestKeyClaimHoldsBackNoFeed(t *testing.T) {
	a, b, branch := uuid.New(), uuid.New(), uuid.New()
	e, st := newStallingEnv(t, a)
	manager := newUser(t, a, "MANAGER")
	done := make(chan resp, 1)
	go func() {
		done <- e.do(request{method: "POST", path: "/v1/stock/receipts", user: &manager,
			body:    map[string]any{"branch_id": branch, "sku": "MILK", "qty": 5, "unit_cost": 100},
			headers: map[string]string{"Idempotency-Key": "receipt-1"}})
	}()
	<-st.entered
	e.receiveStock(b, branch, "TEA", 3)
	// The feed's horizon is the whole server's: other tests' transactions
	// hold it back for moments, the stalled request's would for good.
	var got []eventstore.RecordedEvent
	var err error
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && err == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got, err = e.store.ReadAll(context.Background(), eventstore.Start, eventstore.Filter{MerchantID: b.String()}, 10)
	}
	close(st.release)
	must(t, <-done, 201)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("another merchant's receipt, committed while a keyed receipt was in its ledger append: %d events in the feed after 5 s, want 1", len(got))
	}
}

// One key sent at once with two requests on one sale: a checkout, which
// claims the key and then appends to the sale, and an add-item, which
// appends to the sale and then stores the key. Each waits for the other;
// PostgreSQL breaks the deadlock by rolling one back, and that request runs
// again: the checkout answers, the add-item gets 422 idempotency_key_reused,
// never a 500.
func TestKeyReusedOnOneSaleAtOnce(t *testing.T) {
	merchant, branch := uuid.New(), uuid.New()
	e, st := newStallingEnv(t, merchant)
	st.armed.Store(false)
	cashier := newUser(t, merchant, "CASHIER")
	e.receiveStock(merchant, branch, "MILK", 10)
	s := e.open(&cashier, branch)
	must(t, s.post("/items", map[string]any{"sku": "MILK", "name": "Milk", "qty": 1, "unit_price": 1000}), 201)
	st.armed.Store(true)
	key := map[string]string{"Idempotency-Key": "same"}
	checkout := make(chan resp, 1)
	go func() {
		checkout <- e.do(request{method: "POST", path: s.path("/checkout"), user: &cashier, body: map[string]any{}, headers: key})
	}()
	<-st.entered
	item := make(chan resp, 1)
	go func() {
		item <- e.do(request{method: "POST", path: s.path("/items"), user: &cashier, body: map[string]any{"sku": "TEA", "name": "Tea", "qty": 1, "unit_price": 10}, headers: key})
	}()
	time.Sleep(200 * time.Millisecond) // the add-item waits on the checkout's key lock
	close(st.release)
	rc, ri := <-checkout, <-item
	statuses := []int{rc.status, ri.status}
	slices.Sort(statuses)
	if !slices.Equal(statuses, []int{200, 422}) && !slices.Equal(statuses, []int{201, 422}) {
		t.Fatalf("checkout %d %s; add-item %d %s: want one answered, the other 422 idempotency_key_reused", rc.status, rc.body, ri.status, ri.body)
	}
	for _, r := range []resp{rc, ri} {
		if r.status == 422 && r.code(t) != "idempotency_key_reused" {
			t.Fatalf("422 %s, want idempotency_key_reused", r.body)
		}
	}
}
