package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/api"
	"pos/api/auth"
	"pos/audit"
	"pos/commands"
	"pos/domain/money"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/eventstore/storetest"
	"pos/internal/pgtest"
)

// auditKey signs the anchors of the audit tests.
var auditKey = func() audit.Key {
	k, err := audit.NewKey(bytes.Repeat([]byte{0xa7}, 32))
	if err != nil {
		panic(err)
	}
	return k
}()

// auditEnv is the harness's env with the API wired as serve wires it:
// anchors verified with auditKey, events upcast through the registry
// before a state replay. anchorer signs with the same key.
type auditEnv struct {
	*env
	anchorer *audit.Anchorer
}

func registry(t testing.TB) *eventstore.Registry {
	t.Helper()
	reg, err := commands.Registry()
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// auditServer builds the API over store and pool (on dbURL) with the audit
// wiring.
func auditServer(t testing.TB, dbURL string, store *pgstore.Store, pool *pgxpool.Pool, reg *eventstore.Registry) *api.Server {
	t.Helper()
	v, err := auth.NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	codesPool, err := pgstore.ConnectSized(context.Background(), dbURL, 2) // as serve does: see commands.NewCodes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codesPool.Close)
	deps := &commands.Deps{
		Now:   func() time.Time { return time.Now().UTC() },
		NewID: func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes: commands.NewCodes(codesPool),
	}
	return api.New(api.Config{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Store:    store,
		Verifier: v,
		Pool:     pool,
		TxStore:  func(tx pgx.Tx) eventstore.Store { return store.InTx(tx) },
		Commands: func(s eventstore.Store) *commands.Handlers {
			return commands.New(eventstore.Upcasting{Store: s, Registry: reg}, deps)
		},
		Audit:    &audit.Auditor{Store: store, Ledger: audit.NewLedger(pool), Key: auditKey.Public()},
		Registry: reg,
	})
}

func newAuditEnv(t *testing.T) *auditEnv {
	t.Helper()
	return newAuditEnvWith(t, registry(t))
}

func newAuditEnvWith(t *testing.T, reg *eventstore.Registry) *auditEnv {
	t.Helper()
	e := newEnv(t)
	ts := httptest.NewServer(auditServer(t, e.dbURL, e.store, e.pool, reg).Handler())
	t.Cleanup(ts.Close)
	c := *e
	c.url = ts.URL
	return &auditEnv{env: &c, anchorer: audit.NewAnchorer(e.store, audit.NewLedger(e.pool), auditKey, slog.New(slog.NewTextHandler(io.Discard, nil)))}
}

func (e *auditEnv) sub(t *testing.T) *auditEnv {
	return &auditEnv{env: e.env.sub(t), anchorer: e.anchorer}
}

// Wire shapes as an auditor's tool reads them.

type auditEvent struct {
	EventID       string          `json:"event_id"`
	Stream        string          `json:"stream"`
	Version       uint64          `json:"version"`
	Position      string          `json:"position"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	Data          json.RawMessage `json:"data"`
	Metadata      struct {
		Actor         string `json:"actor"`
		Role          string `json:"role"`
		MerchantID    string `json:"merchant_id"`
		CorrelationID string `json:"correlation_id"`
		CausationID   string `json:"causation_id"`
		TraceID       string `json:"trace_id"`
		TraceParent   string `json:"traceparent"`
		TraceState    string `json:"tracestate"`
	} `json:"metadata"`
	RecordedAt time.Time `json:"recorded_at"`
	Hash       string    `json:"hash"`
	PrevHash   string    `json:"prev_hash"`
}

// rehash recomputes the event's hash from the answer alone.
func (a auditEvent) rehash(t testing.TB) string {
	t.Helper()
	prev, err := hex.DecodeString(a.PrevHash)
	if err != nil {
		t.Fatal(err)
	}
	md := a.Metadata
	return hex.EncodeToString(eventstore.Hash(uuid.MustParse(a.EventID), a.Stream, a.Version, a.Type, a.SchemaVersion, a.Data,
		eventstore.Metadata{MerchantID: md.MerchantID, Actor: md.Actor, Role: md.Role, CorrelationID: md.CorrelationID,
			CausationID: md.CausationID, TraceParent: md.TraceParent, TraceState: md.TraceState}, prev))
}

type feedPage struct {
	Events       []auditEvent `json:"events"`
	NextPosition string       `json:"next_position"`
}

type verifyReport struct {
	StreamsChecked int   `json:"streams_checked"`
	EventsChecked  int64 `json:"events_checked"`
	Breaks         []struct {
		Stream          string `json:"stream"`
		Version         uint64 `json:"version"`
		Reason          string `json:"reason"`
		AnchoredVersion uint64 `json:"anchored_version"`
		AnchorSeq       int64  `json:"anchor_seq"`
	} `json:"breaks"`
	Anchors []struct {
		Seq   int64  `json:"seq"`
		KeyID string `json:"key_id"`
	} `json:"anchors"`
}

func (v verifyReport) breaks() []string {
	out := []string{}
	for _, b := range v.Breaks {
		if b.Stream == "" {
			out = append(out, fmt.Sprintf("anchor %d: %s", b.AnchorSeq, b.Reason))
		} else {
			out = append(out, fmt.Sprintf("%s@%d %s", b.Stream, b.Version, b.Reason))
		}
	}
	return out
}

func decodeAs[T any](t testing.TB, r resp) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("answer %d: %v: %s", r.status, err, r.body)
	}
	return v
}

func (e *auditEnv) get(u *user, path string) resp {
	e.t.Helper()
	return e.do(request{method: "GET", path: path, user: u})
}

func (e *auditEnv) history(u *user, id string) []auditEvent {
	e.t.Helper()
	return e.streamHistory(u, "transactions", id)
}

// streamHistory is the history of the aggregate's stream of that id.
func (e *auditEnv) streamHistory(u *user, aggregate, id string) []auditEvent {
	e.t.Helper()
	return decodeAs[struct {
		Events []auditEvent `json:"events"`
	}](e.t, must(e.t, e.get(u, "/v1/audit/streams/"+aggregate+"/"+id+"/events"), 200)).Events
}

func (e *auditEnv) verify(u *user) verifyReport {
	e.t.Helper()
	return decodeAs[verifyReport](e.t, must(e.t, e.get(u, "/v1/audit/verify"), 200))
}

// tamper runs sql as the database owner with triggers disabled, as a
// superuser bypassing the append-only rules would.
func (e *auditEnv) tamper(sql string, args ...any) {
	e.t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, sql, args...)
		if err == nil && tag.RowsAffected() == 0 {
			err = fmt.Errorf("no row changed")
		}
		return err
	}); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// completedSale rings up a paid, completed sale with one idempotent
// command, and returns its id.
func (e *auditEnv) completedSale(u *user) string {
	e.t.Helper()
	id, _ := e.completedSaleAndLedger(u)
	return id
}

// completedSaleAndLedger is completedSale, also returning the id of the
// stock ledger of the sale's one SKU at its own new branch: an ADMIN's
// receipt of the sale's units (before it is checked out), then the
// checkout's reservation, are that ledger's two events.
func (e *auditEnv) completedSaleAndLedger(u *user) (tx, ledger string) {
	e.t.Helper()
	s := e.open(u, uuid.New())
	s.addItem(2, 15000)
	ledger = s.stockUp().str(e.t, "id")
	must(e.t, s.post("/checkout", map[string]any{}), 200)
	must(e.t, e.do(request{method: "POST", path: s.path("/payments"), user: u, body: map[string]any{"method": "CASH", "amount": 50000},
		headers: map[string]string{"Idempotency-Key": "pay-" + s.id, "X-Correlation-ID": "0193a5c0-0000-7000-8000-00000000c0c0"}}), 201)
	must(e.t, s.post("/complete", map[string]any{}), 200)
	return s.id, ledger
}

func TestAuditStreamHistory(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	id := e.completedSale(&cashier)

	events := e.history(&auditor, id)
	wantTypes := []string{"TransactionOpened", "ItemAdded", "CheckedOut", "PaymentAdded", "TransactionPaid", "TransactionCompleted"}
	if len(events) != len(wantTypes) {
		t.Fatalf("%d events, want %d", len(events), len(wantTypes))
	}
	stream := commands.TransactionStream(merchant, uuid.MustParse(id))
	prevPos := eventstore.Start
	for i, ev := range events {
		if ev.Type != wantTypes[i] || ev.Version != uint64(i+1) || ev.Stream != stream || ev.SchemaVersion != 1 {
			t.Errorf("event %d: %s v%d of %s (schema %d)", i, ev.Type, ev.Version, ev.Stream, ev.SchemaVersion)
		}
		md := ev.Metadata
		if md.Actor != "user-cashier" || md.Role != "CASHIER" || md.MerchantID != merchant.String() || md.CorrelationID == "" || ev.RecordedAt.IsZero() {
			t.Errorf("event %d metadata %+v at %s", i, md, ev.RecordedAt)
		}
		if got := ev.rehash(t); got != ev.Hash {
			t.Errorf("event %d: hash recomputed from the answer %s, answered %s", i, got, ev.Hash)
		}
		if i == 0 && ev.PrevHash != "" || i > 0 && ev.PrevHash != events[i-1].Hash {
			t.Errorf("event %d: prev_hash %q does not chain", i, ev.PrevHash)
		}
		pos, err := eventstore.ParsePosition(ev.Position)
		if err != nil || !prevPos.Less(pos) {
			t.Errorf("event %d: position %s after %s", i, ev.Position, prevPos)
		}
		prevPos = pos
	}
	pay := events[3].Metadata
	if pay.CausationID != "pay-"+id || pay.CorrelationID != "0193a5c0-0000-7000-8000-00000000c0c0" {
		t.Errorf("payment causation %q, correlation %q: want the Idempotency-Key and X-Correlation-ID", pay.CausationID, pay.CorrelationID)
	}
	if events[3].Version != events[4].Version-1 || events[3].Metadata != events[4].Metadata {
		t.Errorf("the two events of one command differ in metadata")
	}
}

func TestAuditIsForAuditorsAndAdminsOfTheirOwnMerchant(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	id := e.completedSale(&cashier)
	paths := []string{
		"/v1/audit/streams/transactions/" + id + "/events",
		"/v1/audit/transactions/" + id + "/state",
		"/v1/audit/events",
		"/v1/audit/verify",
	}
	for _, role := range []string{"CASHIER", "MANAGER"} {
		u := newUser(t, merchant, role)
		for _, p := range paths {
			if r := e.get(&u, p); r.status != 403 || r.code(t) != "forbidden" {
				t.Errorf("%s GET %s: %d %s", role, p, r.status, r.body)
			}
		}
	}
	for _, role := range []string{"AUDITOR", "ADMIN"} {
		u := newUser(t, merchant, role)
		for _, p := range paths {
			must(t, e.get(&u, p), 200)
		}
	}
	for _, p := range paths {
		if r := e.get(nil, p); r.status != 401 {
			t.Errorf("no token GET %s: %d", p, r.status)
		}
	}

	// Another merchant's auditor: the stream is not theirs, so it is not
	// there at all, byte for byte like a missing one.
	stranger := newUser(t, uuid.New(), "AUDITOR")
	missing := uuid.NewString()
	for _, pair := range [][2]string{
		{"/v1/audit/streams/transactions/" + id + "/events", "/v1/audit/streams/transactions/" + missing + "/events"},
		{"/v1/audit/transactions/" + id + "/state", "/v1/audit/transactions/" + missing + "/state"},
		{"/v1/audit/transactions/" + id + "/state?as_of_version=1", "/v1/audit/transactions/" + missing + "/state?as_of_version=1"},
	} {
		theirs, none := e.get(&stranger, pair[0]), e.get(&stranger, pair[1])
		if theirs.status != 404 || theirs.code(t) != "not_found" || !bytes.Equal(theirs.body, none.body) {
			t.Errorf("another merchant's %s: %d %s; missing: %d %s", pair[0], theirs.status, theirs.body, none.status, none.body)
		}
	}
	feed := decodeAs[feedPage](t, must(t, e.get(&stranger, "/v1/audit/events"), 200))
	if len(feed.Events) != 0 {
		t.Errorf("another merchant's feed has %d events", len(feed.Events))
	}
	if rep := e.verify(&stranger); rep.EventsChecked != 0 {
		t.Errorf("another merchant's verify checked %d events", rep.EventsChecked)
	}
	// Streams that do not exist (no stock ledger has a sale's id; approvals
	// and journals are not built yet), and malformed ids.
	auditor := newUser(t, merchant, "AUDITOR")
	for _, p := range []string{
		"/v1/audit/streams/stock/" + id + "/events", "/v1/audit/approvals/" + id + "/state",
		"/v1/audit/streams/journal/" + id + "/events", "/v1/audit/streams/transactions/nope/events",
		"/v1/audit/widgets/" + id + "/state",
	} {
		if r := e.get(&auditor, p); r.status != 404 || r.code(t) != "not_found" {
			t.Errorf("GET %s: %d %s", p, r.status, r.body)
		}
	}
}

// A token limited to branches audits only their aggregates, and none of the
// merchant-wide endpoints, whatever its role.
func TestAuditHonoursBranchLimits(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	tx, ledger := e.completedSaleAndLedger(&cashier)
	branch := uuid.MustParse(decodeAs[stateView](t, must(t, e.get(&auditor, "/v1/audit/transactions/"+tx+"/state"), 200)).BranchID)
	streams := []string{
		"/v1/audit/streams/transactions/" + tx + "/events",
		"/v1/audit/transactions/" + tx + "/state",
		"/v1/audit/transactions/" + tx + "/state?as_of_version=1",
		"/v1/audit/streams/stock/" + ledger + "/events",
		"/v1/audit/stock/" + ledger + "/state",
	}
	wide := []string{"/v1/audit/events", "/v1/audit/verify"}
	for _, role := range []string{"AUDITOR", "ADMIN"} {
		here := newUser(t, merchant, role, branch)
		there := newUser(t, merchant, role, uuid.New())
		for _, p := range streams {
			must(t, e.get(&here, p), 200)
			if r := e.get(&there, p); r.status != 403 || r.code(t) != "forbidden" {
				t.Errorf("%s of another branch GET %s: %d %s", role, p, r.status, r.body)
			}
		}
		for _, p := range wide {
			if r := e.get(&here, p); r.status != 403 || r.code(t) != "forbidden" {
				t.Errorf("%s limited to a branch GET %s: %d %s", role, p, r.status, r.body)
			}
		}
	}
}

// stateView is GET /v1/audit/transactions/{id}/state as the test reads it,
// and what it expects from transaction.Load: filled from the aggregate's
// getters, not from the API's view code.
type stateView struct {
	ID               string          `json:"id"`
	Code             string          `json:"code"`
	MerchantID       string          `json:"merchant_id"`
	BranchID         string          `json:"branch_id"`
	Status           string          `json:"status"`
	Currency         string          `json:"currency"`
	PricesIncludeTax bool            `json:"prices_include_tax"`
	OpenedAt         string          `json:"opened_at"`
	OpenedBy         string          `json:"opened_by"`
	Version          uint64          `json:"version"`
	Lines            []stateLine     `json:"lines"`
	Discounts        []stateDiscount `json:"discounts"`
	Totals           stateTotals     `json:"totals"`
	Payments         []statePayment  `json:"payments"`
	Refunds          []stateRefund   `json:"refunds"`
	Paid             int64           `json:"paid"`
	Pending          int64           `json:"pending"`
	Due              int64           `json:"due"`
	Refunded         int64           `json:"refunded"`
	Refundable       int64           `json:"refundable"`
}

type stateLine struct {
	LineID         string `json:"line_id"`
	SKU            string `json:"sku"`
	Name           string `json:"name"`
	Qty            int64  `json:"qty"`
	UnitPrice      int64  `json:"unit_price"`
	TaxRateBps     int64  `json:"tax_rate_bps"`
	Gross          int64  `json:"gross"`
	Discount       int64  `json:"discount"`
	Net            int64  `json:"net"`
	Tax            int64  `json:"tax"`
	Total          int64  `json:"total"`
	RefundedQty    int64  `json:"refunded_qty"`
	RefundedAmount int64  `json:"refunded_amount"`
}

type stateDiscount struct {
	DiscountID string `json:"discount_id"`
	Kind       string `json:"kind"`
	Bps        int64  `json:"bps"`
	Amount     int64  `json:"amount"`
	Reason     string `json:"reason"`
}

type stateTotals struct {
	Currency   string `json:"currency"`
	Subtotal   int64  `json:"subtotal"`
	Discount   int64  `json:"discount"`
	Tax        int64  `json:"tax"`
	GrandTotal int64  `json:"grand_total"`
}

type statePayment struct {
	PaymentID     string `json:"payment_id"`
	Method        string `json:"method"`
	Amount        int64  `json:"amount"`
	Applied       int64  `json:"applied"`
	Change        int64  `json:"change"`
	Status        string `json:"status"`
	GatewayRef    string `json:"gateway_ref"`
	DeclineReason string `json:"decline_reason"`
}

type stateRefund struct {
	RefundID string `json:"refund_id"`
	Amount   int64  `json:"amount"`
	Reason   string `json:"reason"`
}

func expectedState(t *transaction.Transaction) stateView {
	tot := t.Totals()
	v := stateView{
		ID: t.ID().String(), Code: t.Code(), MerchantID: t.MerchantID().String(), BranchID: t.BranchID().String(),
		Status: string(t.Status()), Currency: string(t.Currency()), PricesIncludeTax: t.PricesIncludeTax(),
		OpenedAt: t.OpenedAt().UTC().Format(time.RFC3339Nano), OpenedBy: t.OpenedBy(), Version: t.Version(),
		Lines: []stateLine{}, Discounts: []stateDiscount{}, Payments: []statePayment{}, Refunds: []stateRefund{},
		Totals: stateTotals{string(tot.Currency), int64(tot.Subtotal), int64(tot.Discount), int64(tot.Tax), int64(tot.GrandTotal)},
		Paid:   int64(t.Paid()), Pending: int64(t.Pending()), Due: int64(t.Due()), Refunded: int64(t.Refunded()), Refundable: int64(t.Refundable()),
	}
	for _, l := range t.Lines() {
		v.Lines = append(v.Lines, stateLine{l.LineID.String(), l.SKU, l.Name, l.Qty, int64(l.UnitPrice), l.TaxRateBps, int64(l.Gross),
			int64(l.Discount), int64(l.Net), int64(l.Tax), int64(l.Total), l.RefundedQty, int64(l.RefundedAmount)})
	}
	for _, d := range t.Discounts() {
		v.Discounts = append(v.Discounts, stateDiscount{d.DiscountID.String(), string(d.Kind), d.Bps, int64(d.Amount), d.Reason})
	}
	for _, p := range t.Payments() {
		v.Payments = append(v.Payments, statePayment{p.PaymentID.String(), string(p.Method), int64(p.Amount), int64(p.Applied),
			int64(p.Change), string(p.Status), p.GatewayRef, p.DeclineReason})
	}
	for _, r := range t.Refunds() {
		v.Refunds = append(v.Refunds, stateRefund{r.RefundID.String(), int64(r.Amount), r.Reason})
	}
	return v
}

// randomHistory drives a transaction through random domain commands (those
// the aggregate refuses are skipped) and returns the events it recorded.
func randomHistory(t *testing.T, rng *rand.Rand, merchant, id uuid.UUID) []transaction.Event {
	t.Helper()
	agg := &transaction.Transaction{}
	var history []transaction.Event
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	try := func(events []transaction.Event, err error) {
		if err != nil {
			return
		}
		for _, e := range events {
			if err := agg.Apply(e); err != nil {
				t.Fatalf("apply %s: %v", e.EventType(), err)
			}
			history = append(history, e)
		}
	}
	pick := func(ids []uuid.UUID) uuid.UUID {
		if len(ids) == 0 {
			return uuid.New()
		}
		return ids[rng.IntN(len(ids))]
	}
	currency := money.Currency([]string{"IDR", "USD"}[rng.IntN(2)])
	try(agg.Open(transaction.Open{TransactionID: id, MerchantID: merchant, BranchID: uuid.New(), Code: "000-" + id.String()[:3],
		Currency: currency, PricesIncludeTax: rng.IntN(2) == 0, By: "user-cashier", At: at}))
	var lines, payments []uuid.UUID
	addItem := func() {
		line := uuid.New()
		lines = append(lines, line)
		try(agg.AddItem(transaction.AddItem{LineID: line, SKU: fmt.Sprintf("SKU-%d", rng.IntN(5)), Name: "Item", Qty: 1 + rng.Int64N(4),
			UnitPrice: money.Amount(rng.Int64N(40_000)), TaxRateBps: []int64{0, 1100, 1250}[rng.IntN(3)], At: at}))
	}
	pay := func() {
		due := int64(agg.Due())
		method := []transaction.Method{transaction.MethodCash, transaction.MethodCard, transaction.MethodQRIS, transaction.MethodEWallet}[rng.IntN(4)]
		amount := max(1, due/int64(1+rng.IntN(2)))
		if method == transaction.MethodCash {
			amount += rng.Int64N(5000)
		}
		p := uuid.New()
		payments = append(payments, p)
		try(agg.AddPayment(transaction.AddPayment{PaymentID: p, Method: method, Amount: money.Amount(amount), At: at}))
	}
	refund := func() {
		r := transaction.Refund{RefundID: uuid.New(), Reason: "return", At: at}
		if rng.IntN(2) == 0 {
			r.Amount = money.Amount(1 + rng.Int64N(max(1, int64(agg.Refundable()))))
		} else {
			r.Lines = []transaction.RefundLine{{LineID: pick(lines), Qty: 1}}
		}
		try(agg.Refund(r))
	}
	// Commands fit the status most of the time, and now and then one that
	// does not (the aggregate refuses it, and nothing is recorded).
	for step := 0; step < 10+rng.IntN(30); step++ {
		at = at.Add(time.Duration(1+rng.IntN(90)) * time.Second)
		k := rng.IntN(100)
		switch status := agg.Status(); {
		case k < 2:
			try(agg.Void(transaction.Void{Reason: "mistake", At: at}))
		case k < 5:
			try(agg.Complete(transaction.Complete{At: at}))
		case status == transaction.StatusDraft && k < 55:
			addItem()
		case status == transaction.StatusDraft && k < 65:
			try(agg.RemoveItem(transaction.RemoveItem{LineID: pick(lines), At: at}))
		case status == transaction.StatusDraft && k < 80:
			d := transaction.ApplyDiscount{DiscountID: uuid.New(), Kind: transaction.DiscountPercent, Bps: rng.Int64N(3000), Reason: "promo", At: at}
			if rng.IntN(2) == 0 {
				d.Kind, d.Bps, d.Amount = transaction.DiscountAmount, 0, money.Amount(rng.Int64N(20_000))
			}
			try(agg.ApplyDiscount(d))
		case status == transaction.StatusDraft:
			try(agg.Checkout(transaction.Checkout{At: at}))
		case status == transaction.StatusPendingPayment && k < 65:
			pay()
		case status == transaction.StatusPendingPayment && k < 80:
			try(agg.DeclinePayment(transaction.DeclinePayment{PaymentID: pick(payments), Reason: "declined", At: at}))
		case status == transaction.StatusPendingPayment:
			try(agg.ConfirmPayment(transaction.ConfirmPayment{PaymentID: pick(payments), GatewayRef: "gw", At: at}))
		case status == transaction.StatusPaid && k < 50:
			try(agg.Complete(transaction.Complete{At: at}))
		default:
			refund()
		}
	}
	return history
}

// appendHistory stores history as the command handlers would, in appends
// of random sizes.
func appendHistory(t *testing.T, rng *rand.Rand, store eventstore.Store, merchant, id uuid.UUID, history []transaction.Event) {
	t.Helper()
	stream := commands.TransactionStream(merchant, id)
	md := eventstore.Metadata{MerchantID: merchant.String(), Actor: "user-cashier", Role: "CASHIER", CorrelationID: uuid.NewString()}
	for v := 0; v < len(history); {
		n := min(1+rng.IntN(3), len(history)-v)
		data := make([]eventstore.EventData, n)
		for i := range data {
			e := history[v+i]
			raw, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			data[i] = eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: e.EventType(), SchemaVersion: transaction.SchemaVersion, Data: raw, Metadata: md}
		}
		if _, err := store.Append(context.Background(), stream, eventstore.Exact(uint64(v)), data...); err != nil {
			t.Fatal(err)
		}
		v += n
	}
}

// TestAuditStateAsOfEveryVersion: for random histories, the state as of
// version N is the aggregate after its first N events, for every N.
func TestAuditStateAsOfEveryVersion(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	auditor := newUser(t, merchant, "AUDITOR")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	statuses := map[string]bool{}
	for range 16 {
		id := uuid.New()
		history := randomHistory(t, rng, merchant, id)
		appendHistory(t, rng, e.store, merchant, id, history)
		for n := 1; n <= len(history); n++ {
			r := must(t, e.get(&auditor, fmt.Sprintf("/v1/audit/transactions/%s/state?as_of_version=%d", id, n)), 200)
			want, err := transaction.Load(history[:n])
			if err != nil {
				t.Fatal(err)
			}
			got := decodeAs[stateView](t, r)
			if wantView := expectedState(want); !equalJSON(t, got, wantView) {
				t.Fatalf("seed %d, %s as of version %d:\n got %s\nwant %s", seed, id, n, mustJSON(t, got), mustJSON(t, wantView))
			}
			if r.header.Get("ETag") != fmt.Sprintf(`"%d"`, n) {
				t.Errorf("ETag %s as of version %d", r.header.Get("ETag"), n)
			}
			statuses[got.Status] = true
		}
		// No version: the whole history. Past the head: not found.
		whole := decodeAs[stateView](t, must(t, e.get(&auditor, "/v1/audit/transactions/"+id.String()+"/state"), 200))
		if whole.Version != uint64(len(history)) {
			t.Fatalf("current state at version %d, want %d", whole.Version, len(history))
		}
		r := e.get(&auditor, fmt.Sprintf("/v1/audit/transactions/%s/state?as_of_version=%d", id, len(history)+1))
		if r.status != 404 || r.code(t) != "not_found" {
			t.Fatalf("as of a version not reached: %d %s", r.status, r.body)
		}
	}
	t.Logf("statuses reached: %v", slices.Sorted(maps.Keys(statuses)))
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalJSON(t testing.TB, a, b any) bool { return bytes.Equal(mustJSON(t, a), mustJSON(t, b)) }

func TestAuditStateAsOfTime(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	s := e.open(&cashier, uuid.New())
	for range 3 {
		time.Sleep(5 * time.Millisecond) // distinct recorded times
		s.addItem(1, 1000)
	}
	events := e.history(&auditor, s.id)
	state := func(query string) resp {
		return e.get(&auditor, "/v1/audit/transactions/"+s.id+"/state?"+query)
	}
	at := func(t time.Time) string { return "as_of_time=" + url.QueryEscape(t.Format(time.RFC3339Nano)) }
	for i, ev := range events {
		got := decodeAs[stateView](t, must(t, state(at(ev.RecordedAt)), 200))
		if got.Version != ev.Version || len(got.Lines) != i {
			t.Errorf("as of event %d's time: version %d with %d lines", i+1, got.Version, len(got.Lines))
		}
		if i > 0 {
			before := decodeAs[stateView](t, must(t, state(at(ev.RecordedAt.Add(-time.Microsecond))), 200))
			if before.Version != ev.Version-1 {
				t.Errorf("just before event %d: version %d", i+1, before.Version)
			}
		}
	}
	if r := state(at(events[0].RecordedAt.Add(-time.Second))); r.status != 404 || r.code(t) != "not_found" {
		t.Errorf("before the first event: %d %s", r.status, r.body)
	}
	for _, q := range []string{"as_of_time=yesterday", "as_of_version=0", "as_of_version=-1", "as_of_version=x", "as_of_version=1&" + at(time.Now())} {
		if r := state(q); r.status != 400 || r.code(t) != "invalid_request" {
			t.Errorf("?%s: %d %s", q, r.status, r.body)
		}
	}
}

func TestAuditFeedPages(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	var sales [][2]string // transaction id, stock ledger id
	for range 2 {
		tx, ledger := e.completedSaleAndLedger(&cashier)
		sales = append(sales, [2]string{tx, ledger})
	}
	e.completedSale(ptr(newUser(t, uuid.New(), "CASHIER"))) // another merchant's
	// The feed trails commits while any transaction on the cluster runs
	// (pgstore); wait until it holds the sales above.
	if err := e.store.Settle(context.Background()); err != nil {
		t.Fatal(err)
	}

	var all []auditEvent
	pos := ""
	for pages := 0; ; pages++ {
		page := decodeAs[feedPage](t, must(t, e.get(&auditor, "/v1/audit/events?limit=5&from_position="+url.QueryEscape(pos)), 200))
		all = append(all, page.Events...)
		if len(page.Events) == 0 {
			if page.NextPosition != pos && pos != "" {
				t.Errorf("an empty page moved next_position from %s to %s", pos, page.NextPosition)
			}
			break
		}
		if page.NextPosition != page.Events[len(page.Events)-1].Position {
			t.Errorf("next_position %s, last event at %s", page.NextPosition, page.Events[len(page.Events)-1].Position)
		}
		pos = page.NextPosition
		if pages > 10 {
			t.Fatal("the feed does not end")
		}
	}
	// Each sale: its six events, and its stock ledger's two (the receipt
	// before it, the checkout's reservation).
	if len(all) != 16 {
		t.Fatalf("%d events in the merchant's feed, want 16", len(all))
	}
	var streams []auditEvent
	for _, sale := range sales {
		stock := e.streamHistory(&auditor, "stock", sale[1])
		if len(stock) != 2 || stock[0].Type != "StockReceived" || stock[1].Type != "StockReserved" {
			t.Errorf("stock ledger %s: %d events, want the receipt and the reservation", sale[1], len(stock))
		}
		streams = append(streams, e.history(&auditor, sale[0])...)
		streams = append(streams, stock...)
	}
	// The feed is those streams' events merged in position order.
	positionOf := func(ev auditEvent) eventstore.Position {
		pos, err := eventstore.ParsePosition(ev.Position)
		if err != nil {
			t.Fatalf("event %s: position %q: %v", ev.EventID, ev.Position, err)
		}
		return pos
	}
	slices.SortFunc(streams, func(a, b auditEvent) int {
		pa, pb := positionOf(a), positionOf(b)
		switch {
		case pa.Less(pb):
			return -1
		case pb.Less(pa):
			return 1
		}
		return 0
	})
	var want []string
	for _, ev := range streams {
		want = append(want, ev.EventID)
	}
	var got []string
	for _, ev := range all {
		got = append(got, ev.EventID)
		if ev.Metadata.MerchantID != merchant.String() {
			t.Errorf("another merchant's event in the feed: %+v", ev)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("feed order %v, want %v", got, want)
	}
	def := decodeAs[feedPage](t, must(t, e.get(&auditor, "/v1/audit/events"), 200))
	if len(def.Events) != 16 {
		t.Errorf("default page: %d events", len(def.Events))
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x", "from_position=nope", "from_position=1.x"} {
		if r := e.get(&auditor, "/v1/audit/events?"+q); r.status != 400 || r.code(t) != "invalid_request" {
			t.Errorf("?%s: %d %s", q, r.status, r.body)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// export runs GET /v1/audit/events as NDJSON and returns its lines.
func (e *auditEnv) export(u *user, query string) []auditEvent {
	e.t.Helper()
	r := must(e.t, e.do(request{method: "GET", path: "/v1/audit/events?" + query, user: u, headers: map[string]string{"Accept": "application/x-ndjson"}}), 200)
	if ct := r.header.Get("Content-Type"); ct != "application/x-ndjson" {
		e.t.Fatalf("export Content-Type %q", ct)
	}
	var out []auditEvent
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			e.t.Fatalf("export line %d: %v: %s", len(out)+1, err, sc.Bytes())
		}
		out = append(out, ev)
	}
	return out
}

// TestAuditExportUnderConcurrentAppends: an export taken while writers
// append holds every event committed before it began, in feed order, none
// twice, and is exactly a prefix of the feed as it ends up: no event
// skipped.
func TestAuditExportUnderConcurrentAppends(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	auditor := newUser(t, merchant, "AUDITOR")
	ctx := context.Background()
	appendBatch := func(n int) error {
		events := make([]eventstore.EventData, n)
		for i := range events {
			events[i] = eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: "ItemAdded", SchemaVersion: 1,
				Data: json.RawMessage(`{"sku":"TEA","qty":1}`), Metadata: eventstore.Metadata{MerchantID: merchant.String(), Actor: "seed"}}
		}
		_, err := e.store.Append(ctx, eventstore.StreamName("transaction", merchant.String(), uuid.NewString()), eventstore.NoStream, events...)
		return err
	}
	for range 8 {
		if err := appendBatch(1000); err != nil {
			t.Fatal(err)
		}
	}
	before := feedIDs(t, e.store, merchant)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var appended atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 150 && !stop.Load(); i++ {
				if err := appendBatch(1 + i%7); err != nil {
					t.Error(err)
					return
				}
				appended.Add(1)
			}
		}()
	}
	for appended.Load() < 5 {
		runtime.Gosched()
	}
	exported := e.export(&auditor, "")
	during := appended.Load()
	stop.Store(true)
	wg.Wait()
	final := feedIDs(t, e.store, merchant)

	seen := map[string]bool{}
	var last eventstore.Position
	ids := make([]string, len(exported))
	for i, ev := range exported {
		if seen[ev.EventID] {
			t.Fatalf("event %s exported twice", ev.EventID)
		}
		seen[ev.EventID] = true
		pos, err := eventstore.ParsePosition(ev.Position)
		if err != nil || !last.Less(pos) {
			t.Fatalf("line %d: position %s after %s", i+1, ev.Position, last)
		}
		last, ids[i] = pos, ev.EventID
	}
	for _, id := range before {
		if !seen[id] {
			t.Fatalf("event %s, committed before the export, is missing", id)
		}
	}
	if len(ids) > len(final) || !slices.Equal(ids, final[:len(ids)]) {
		t.Fatalf("the export (%d events) is not a prefix of the final feed (%d events)", len(ids), len(final))
	}
	t.Logf("exported %d events (%d before it began, %d in the end; %d appends ran while exporting)", len(ids), len(before), len(final), during)
}

// feedIDs reads the merchant's whole feed, settled, as event ids.
func feedIDs(t *testing.T, store eventstore.Store, merchant uuid.UUID) []string {
	t.Helper()
	ctx := context.Background()
	if err := store.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	var out []string
	pos := eventstore.Start
	for {
		page, err := store.ReadAll(ctx, pos, eventstore.Filter{MerchantID: merchant.String()}, 5000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page {
			out = append(out, ev.ID.String())
		}
		if len(page) < 5000 {
			return out
		}
		pos = page[len(page)-1].Position
	}
}

func TestAuditExportDateRange(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	// Dates are the merchant's days: in a zone twelve hours from UTC, the
	// other side of the date line from the events' UTC date.
	zone := "Etc/GMT-12" // UTC+12: an afternoon (UTC) is tomorrow there
	if time.Now().UTC().Hour() < 12 {
		zone = "Etc/GMT+12" // UTC−12: a morning (UTC) is yesterday there
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	admin := newUser(t, merchant, "ADMIN")
	must(t, e.do(request{method: "PUT", path: "/v1/settings", user: &admin,
		body: `{"currency":"IDR","prices_include_tax":false,"allow_negative_stock":false,"timezone":"` + zone + `"}`}), 200)
	s := e.open(&cashier, uuid.New())
	for range 4 {
		time.Sleep(5 * time.Millisecond)
		s.addItem(1, 100)
	}
	events := e.history(&auditor, s.id)
	ts := func(t time.Time) string { return url.QueryEscape(t.Format(time.RFC3339Nano)) }
	versions := func(evs []auditEvent) []uint64 {
		var out []uint64
		for _, ev := range evs {
			out = append(out, ev.Version)
		}
		return out
	}
	if got := versions(e.export(&auditor, "from="+ts(events[1].RecordedAt)+"&to="+ts(events[3].RecordedAt))); !slices.Equal(got, []uint64{2, 3}) {
		t.Errorf("[event 2, event 4): versions %v", got)
	}
	if got := versions(e.export(&auditor, "from="+ts(events[3].RecordedAt))); !slices.Equal(got, []uint64{4, 5}) {
		t.Errorf("from event 4: versions %v", got)
	}
	today := events[0].RecordedAt.In(loc).Format(time.DateOnly)
	if today == events[0].RecordedAt.UTC().Format(time.DateOnly) {
		t.Fatalf("%s: the merchant's day %s is the UTC one", zone, today)
	}
	if got := e.export(&auditor, "from="+today+"&to="+today); len(got) != 6 {
		t.Errorf("the merchant's day %s as dates: %d events, want 6 (the settings and the sale)", today, len(got))
	}
	tomorrow := events[0].RecordedAt.In(loc).AddDate(0, 0, 1).Format(time.DateOnly)
	if got := e.export(&auditor, "from="+tomorrow); len(got) != 0 {
		t.Errorf("from tomorrow: %d events", len(got))
	}
	if got := versions(e.export(&auditor, "from_position="+url.QueryEscape(events[2].Position))); !slices.Equal(got, []uint64{4, 5}) {
		t.Errorf("after event 3's position: versions %v", got)
	}
	for _, q := range []string{"from=soon", "to=2026-13-01", "from=" + tomorrow + "&to=" + today, "from_position=x"} {
		r := e.do(request{method: "GET", path: "/v1/audit/events?" + q, user: &auditor, headers: map[string]string{"Accept": "application/x-ndjson"}})
		if r.status != 400 || r.code(t) != "invalid_request" {
			t.Errorf("export ?%s: %d %s", q, r.status, r.body)
		}
	}
}

// An export's days are the daily sales' days: in the merchant's time zone
// in force when each event was recorded. A sale rung up before a change of
// zone stays on its day in the old zone; the change, and what follows it,
// are on their days in the new one. Before, every event was dated in
// today's zone, and one day's export missed what its report counted.
func TestAuditExportDaysFollowTheZoneInForce(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	admin := newUser(t, merchant, "ADMIN")
	before := e.open(&cashier, uuid.New()) // in the default zone, Asia/Jakarta (UTC+7)
	before.addItem(1, 100)
	old, err := time.LoadLocation("Asia/Jakarta")
	if err != nil {
		t.Fatal(err)
	}
	// A zone whose date differs from Jakarta's now.
	zone := "Etc/GMT+12" // UTC−12
	if h := time.Now().UTC().Hour(); h >= 12 && h < 17 {
		zone = "Etc/GMT-14" // UTC+14
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	must(t, e.do(request{method: "PUT", path: "/v1/settings", user: &admin,
		body: `{"currency":"IDR","prices_include_tax":false,"allow_negative_stock":false,"timezone":"` + zone + `"}`}), 200)
	after := e.open(&cashier, uuid.New())
	after.addItem(1, 100)

	at := e.history(&auditor, before.id)[0].RecordedAt
	oldDay, newDay := at.In(old).Format(time.DateOnly), at.In(loc).Format(time.DateOnly)
	if oldDay == newDay {
		t.Fatalf("%s and Asia/Jakarta share the day %s", zone, oldDay)
	}
	streams := func(day string) map[string]int {
		out := map[string]int{}
		for _, ev := range e.export(&auditor, "from="+day+"&to="+day) {
			out[ev.Stream]++
		}
		return out
	}
	sale := func(s *sale) string { return commands.TransactionStream(merchant, uuid.MustParse(s.id)) }
	settingsStream := commands.SettingsStream(merchant)
	if got, want := streams(oldDay), map[string]int{sale(before): 2}; !maps.Equal(got, want) {
		t.Errorf("Jakarta's day %s: events by stream %v, want %v (the sale before the change)", oldDay, got, want)
	}
	if got, want := streams(newDay), map[string]int{settingsStream: 1, sale(after): 2}; !maps.Equal(got, want) {
		t.Errorf("%s's day %s: events by stream %v, want %v (the change and the sale after it)", zone, newDay, got, want)
	}
	// From a position after the change, days are the new zone's.
	pos := e.history(&auditor, after.id)[0].Position
	if got := e.export(&auditor, "from_position="+url.QueryEscape(pos)+"&from="+newDay+"&to="+newDay); len(got) != 1 || got[0].Stream != sale(after) {
		t.Errorf("after the sale's first event, on %s: %d events, want the sale's second", newDay, len(got))
	}
}

// TestAuditVerifyFindsTampering: a payload edited by a superuser with the
// triggers disabled, a stream's last event deleted, a whole stream deleted
// and a forged anchor, each named by GET /v1/audit/verify.
func TestAuditVerifyFindsTampering(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	cashier := newUser(t, merchant, "CASHIER")
	auditor := newUser(t, merchant, "AUDITOR")
	edited, cut, gone := e.completedSale(&cashier), e.completedSale(&cashier), e.completedSale(&cashier)
	stream := func(id string) string { return commands.TransactionStream(merchant, uuid.MustParse(id)) }
	other := newUser(t, uuid.New(), "CASHIER")
	e.completedSale(&other)
	ctx := context.Background()
	if _, err := e.anchorer.AnchorOnce(ctx); err != nil {
		t.Fatal(err)
	}
	rep := e.verify(&auditor)
	// Three sales of six events each, and each sale's stock ledger with
	// two (a receipt, the checkout's reservation).
	if rep.StreamsChecked != 6 || rep.EventsChecked != 24 || len(rep.Breaks) != 0 || len(rep.Anchors) != 1 || rep.Anchors[0].KeyID != auditKey.Public().ID() {
		t.Fatalf("intact history: %+v", rep)
	}

	t.Run("payload edited", func(t *testing.T) {
		e := e.sub(t)
		e.tamper(`UPDATE events SET data = '{"line_id":"x","qty":200}' WHERE stream_name = $1 AND version = 2`, stream(edited))
		wantBreaks(t, e.verify(&auditor), stream(edited)+"@2 hash_mismatch")
	})
	t.Run("last event and a whole stream deleted", func(t *testing.T) {
		e := e.sub(t)
		e.tamper(`DELETE FROM events WHERE stream_name = $1 AND version = 6`, stream(cut))
		e.tamper(`DELETE FROM events WHERE stream_name = $1`, stream(gone))
		rep := e.verify(&auditor)
		wantBreaks(t, rep, stream(edited)+"@2 hash_mismatch", stream(cut)+"@6 missing_events", stream(gone)+"@1 stream_missing")
		for _, b := range rep.Breaks {
			if b.Reason != "hash_mismatch" && (b.AnchoredVersion != 6 || b.AnchorSeq != rep.Anchors[0].Seq) {
				t.Errorf("break %+v: want anchored version 6 of anchor %d", b, rep.Anchors[0].Seq)
			}
		}
	})
	t.Run("forged anchor", func(t *testing.T) {
		e := e.sub(t)
		forger, err := audit.NewKey(bytes.Repeat([]byte{0x66}, 32))
		if err != nil {
			t.Fatal(err)
		}
		// The forger anchors the shortened history with the service's
		// database role (which may insert anchors) but another key.
		if _, err := audit.NewAnchorer(e.store, audit.NewLedger(e.pool), forger, slog.New(slog.NewTextHandler(io.Discard, nil))).AnchorOnce(ctx); err != nil {
			t.Fatal(err)
		}
		rep := e.verify(&auditor)
		wantBreaks(t, rep, fmt.Sprintf("anchor %d: anchor_signature_invalid", rep.Anchors[0].Seq),
			stream(edited)+"@2 hash_mismatch", stream(cut)+"@6 missing_events", stream(gone)+"@1 stream_missing")
	})
}

func wantBreaks(t *testing.T, rep verifyReport, want ...string) {
	t.Helper()
	slices.Sort(want)
	got := rep.breaks()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("breaks:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestAuditStateUpcastsLikeTheHandlers: the state replay reads old schema
// versions through the registry, as the command handlers do, while the
// history shows them exactly as stored.
func TestAuditStateUpcastsLikeTheHandlers(t *testing.T) {
	var types []eventstore.EventType
	for _, name := range transaction.EventTypes() {
		et := eventstore.EventType{Name: name, Current: 1}
		if name == "ItemAdded" { // version 1 called qty "quantity"
			et.Current = 2
			et.Upcasters = map[int]eventstore.Upcaster{1: func(data json.RawMessage) (json.RawMessage, error) {
				var m map[string]any
				if err := json.Unmarshal(data, &m); err != nil {
					return nil, err
				}
				m["qty"] = m["quantity"]
				delete(m, "quantity")
				return json.Marshal(m)
			}}
		}
		types = append(types, et)
	}
	reg, err := eventstore.NewRegistry(types...)
	if err != nil {
		t.Fatal(err)
	}
	e := newAuditEnvWith(t, reg)
	merchant, id, line := uuid.New(), uuid.New(), uuid.New()
	auditor := newUser(t, merchant, "AUDITOR")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	opened, err := json.Marshal(transaction.TransactionOpened{TransactionID: id, MerchantID: merchant, BranchID: uuid.New(), Code: "OLD", Currency: "IDR", OpenedAt: at, OpenedBy: "u"})
	if err != nil {
		t.Fatal(err)
	}
	old := fmt.Sprintf(`{"line_id":%q,"sku":"TEA","name":"Tea","quantity":3,"unit_price":1000,"tax_rate_bps":0,"at":"2026-01-02T03:04:06Z"}`, line)
	md := eventstore.Metadata{MerchantID: merchant.String()}
	if _, err := e.store.Append(context.Background(), commands.TransactionStream(merchant, id), eventstore.NoStream,
		eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: "TransactionOpened", SchemaVersion: 1, Data: opened, Metadata: md},
		eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: "ItemAdded", SchemaVersion: 1, Data: json.RawMessage(old), Metadata: md}); err != nil {
		t.Fatal(err)
	}
	st := decodeAs[stateView](t, must(t, e.get(&auditor, "/v1/audit/transactions/"+id.String()+"/state"), 200))
	if len(st.Lines) != 1 || st.Lines[0].Qty != 3 || st.Totals.GrandTotal != 3000 {
		t.Fatalf("state of an upcast history: %+v", st)
	}
	evs := e.history(&auditor, id.String())
	if evs[1].SchemaVersion != 1 || string(evs[1].Data) != old || evs[1].rehash(t) != evs[1].Hash {
		t.Fatalf("history shows %d %s, want the stored version 1 form", evs[1].SchemaVersion, evs[1].Data)
	}
}

// TestAuditStateOfAnUnreplayableHistory: a stream the domain cannot apply
// answers 500 without internal text; its history still reads.
func TestAuditStateOfAnUnreplayableHistory(t *testing.T) {
	e := newAuditEnv(t)
	merchant := uuid.New()
	auditor := newUser(t, merchant, "AUDITOR")
	id := uuid.New()
	stream := commands.TransactionStream(merchant, id)
	if _, err := e.store.Append(context.Background(), stream, eventstore.NoStream, eventstore.EventData{ID: uuid.Must(uuid.NewV7()),
		Type: "ItemAdded", SchemaVersion: 1, Data: json.RawMessage(`{}`), Metadata: eventstore.Metadata{MerchantID: merchant.String()}}); err != nil {
		t.Fatal(err)
	}
	r := e.get(&auditor, "/v1/audit/transactions/"+id.String()+"/state")
	if r.status != http.StatusInternalServerError || r.code(t) != "internal" || strings.Contains(string(r.body), "ItemAdded") {
		t.Fatalf("unreplayable history: %d %s", r.status, r.body)
	}
	if evs := e.history(&auditor, id.String()); len(evs) != 1 || string(evs[0].Data) != `{}` {
		t.Fatalf("history: %+v", evs)
	}
}

// seedMerchant appends n events (a multiple of 50) for merchant, streams of
// 50 events in one append each, by 8 concurrent writers, then vacuums as
// the owner of dbURL.
func seedMerchant(b *testing.B, store *pgstore.Store, dbURL, merchant string, n int) {
	b.Helper()
	const streamLen, seeders = 50, 8
	ctx := context.Background()
	start := time.Now()
	if err := storetest.Seed(ctx, store, []string{merchant}, n, streamLen, seeders); err != nil {
		b.Fatalf("seed: %v", err)
	}
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	// Autovacuum would have visited a table this size in production.
	if _, err := c.Exec(ctx, "VACUUM (ANALYZE) events"); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d events in %s", n, time.Since(start).Round(time.Millisecond))
}

// countingWriter counts NDJSON lines as the client receives them.
type countingWriter struct{ lines int }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.lines += bytes.Count(p, []byte{'\n'})
	return len(p), nil
}

// BenchmarkExport measures the NDJSON export of one merchant's whole feed
// (100k and 1M events) through the real handler and an HTTP client in the
// same process: one op is one full export; events/s is its rate, and
// peak-heap-MB the largest HeapInuse sampled every 10 ms during it (server
// and client together), which stays flat from 100k to 1M events because
// nothing accumulates. The seed is not timed.
//
// Run: go test -run '^$' -bench BenchmarkExport -benchtime 3x ./api/
func BenchmarkExport(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("events=%dk", n/1000), func(b *testing.B) {
			url := pgtest.NewDatabase(b)
			ctx := context.Background()
			pool, err := pgstore.Connect(ctx, url)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(pool.Close)
			merchant := uuid.New()
			// The seeding store's head cache grows with the streams written:
			// the server gets a fresh store, so the baseline does not.
			seedMerchant(b, pgstore.New(pool), url, merchant.String(), n)
			ts := httptest.NewServer(auditServer(b, url, pgstore.New(pool), pool, registry(b)).Handler())
			b.Cleanup(ts.Close)
			auditor := newUser(b, merchant, "AUDITOR")

			var peak atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapInuse
			go func() {
				defer close(sampled)
				t := time.NewTicker(10 * time.Millisecond)
				defer t.Stop()
				var ms runtime.MemStats
				for {
					select {
					case <-stop:
						return
					case <-t.C:
					}
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
				}
			}()
			for b.Loop() {
				req, err := http.NewRequest("GET", ts.URL+"/v1/audit/events", nil)
				if err != nil {
					b.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+auditor.tok)
				req.Header.Set("Accept", "application/x-ndjson")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				var cw countingWriter
				_, err = io.Copy(&cw, res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || cw.lines != n {
					b.Fatalf("export: status %d, %d lines, %v", res.StatusCode, cw.lines, err)
				}
			}
			close(stop)
			<-sampled
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
			b.ReportMetric(float64(base)/(1<<20), "base-heap-MB")
		})
	}
}
