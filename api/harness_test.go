package api_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/api"
	"pos/api/auth"
	"pos/commands"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/internal/pgtest"
	"pos/internal/telemetry"
	"pos/rebuild"
)

var secret = []byte("api-test-secret-0123456789abcdef-0123456789")

// env is one API under test on its own database.
type env struct {
	t     *testing.T
	url   string
	store *pgstore.Store
	srv   *api.Server
	// replaced counts the swaps the server was told of (options.rebuilds).
	replaced *atomic.Int64
	pool     *pgxpool.Pool
	dbURL    string // as the database owner
	router   routers.Router
	client   *http.Client
	// validated counts responses checked against the OpenAPI document.
	validated *atomic.Int64
}

// sub returns e reporting to t (a subtest).
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, options{})
}

// options vary the API under test.
type options struct {
	tel *telemetry.Telemetry
	// retries bounds the command handlers' conflict retries (0: default).
	retries uint64
	// noTx runs idempotency keys in claim mode, as with EventStoreDB.
	noTx bool
	// poolSize, when set, is the main pool's size.
	poolSize int32
	// wrap, when set, wraps every store the command handlers get.
	wrap func(eventstore.Store) eventstore.Store
	// reads serves the read routes: a queries.Reader, the projections'
	// checkpoints, and a runner following the store for the test's lifetime.
	reads bool
	// consistencyWait bounds X-Min-Position waits (0: the API's default).
	consistencyWait time.Duration
	// rebuilds serves the projection endpoints (with reads).
	rebuilds bool
	// operators restricts them to these merchants' ADMIN.
	operators []uuid.UUID
	// verifier, when set, checks tokens instead of HS256 with secret.
	verifier *auth.Verifier
}

func newEnvWith(t *testing.T, o options) *env {
	t.Helper()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgstore.ConnectSized(ctx, dbURL, o.poolSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := pgstore.New(pool)
	codesPool, err := pgstore.ConnectSized(ctx, dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codesPool.Close)
	v, err := auth.NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	if o.verifier != nil {
		v = o.verifier
	}
	// Stock ledgers are written on a pool of their own, as in production
	// (cmd/pos ledgerStore).
	ledgerPool, err := pgstore.ConnectSized(ctx, dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ledgerPool.Close)
	ledgers := eventstore.Store(pgstore.New(ledgerPool))
	deps := &commands.Deps{
		Now:     func() time.Time { return time.Now().UTC() },
		NewID:   func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes:   commands.NewCodes(codesPool),
		Retries: o.retries,
		// As in production (cmd/pos): ledgers in memory, written outside
		// requests' transactions, one command at a time per ledger.
		Snapshots:      commands.NewSnapshots(0),
		Ledgers:        ledgers,
		Locks:          &commands.StreamLocks{},
		TrustSnapshots: true,
	}
	if o.wrap != nil {
		deps.Ledgers = o.wrap(ledgers)
	}
	txStore := func(tx pgx.Tx) eventstore.Store { return store.InTx(tx) }
	if o.noTx {
		txStore = nil
	}
	cfg := api.Config{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Store:    store,
		Verifier: v,
		Pool:     pool,
		TxStore:  txStore,
		Commands: func(s eventstore.Store) *commands.Handlers {
			if o.wrap != nil {
				s = o.wrap(s)
			}
			return commands.New(s, deps)
		},
		Telemetry: o.tel,
	}
	if o.reads {
		cfg.Reader, cfg.Checkpoints = startReads(t, dbURL, pool, store)
		cfg.ConsistencyWait = o.consistencyWait
	}
	if o.rebuilds {
		cfg.Rebuilds = rebuild.New(t.Context(), pool, dbURL, store, rebuild.Options{Count: store.CountAfter})
		cfg.Operators = o.operators
	}
	srv := api.New(cfg)
	replaced := new(atomic.Int64)
	if o.rebuilds {
		// As serve wires it (cmd/pos apiServer), so that tests read what a
		// rebuild swapped in.
		w, err := rebuild.NewWatcher(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		wctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.Run(wctx, 10*time.Millisecond, cfg.Log, func(context.Context) { srv.ReadModelsReplaced(); replaced.Add(1) })
		}()
		t.Cleanup(func() { stop(); <-done })
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPIDocument())
	if err != nil {
		t.Fatalf("load OpenAPI document: %v", err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("OpenAPI document is invalid: %v", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, url: ts.URL, dbURL: dbURL, store: store, srv: srv, pool: pool, router: router, client: &http.Client{Timeout: 30 * time.Second}, validated: new(atomic.Int64), replaced: replaced}
	return e
}

// token builds an HS256 JWT by hand (not with the library the server
// verifies with).
func token(t testing.TB, claims map[string]any) string {
	t.Helper()
	b64 := func(v any) string {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	signing := b64(map[string]string{"alg": "HS256", "typ": "JWT"}) + "." + b64(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// user is a caller: a merchant, a role, optional branches.
type user struct {
	merchant uuid.UUID
	role     string
	branches []uuid.UUID
	tok      string
}

func newUser(t testing.TB, merchant uuid.UUID, role string, branches ...uuid.UUID) user {
	claims := map[string]any{
		"sub": "user-" + strings.ToLower(role), "merchant_id": merchant.String(), "role": role,
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
	}
	if len(branches) > 0 {
		ids := make([]string, len(branches))
		for i, b := range branches {
			ids[i] = b.String()
		}
		claims["branch_ids"] = ids
	}
	return user{merchant: merchant, role: role, branches: branches, tok: token(t, claims)}
}

// resp is a response read whole.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %s", r.status, r.body)
	}
	return m
}

func (r resp) str(t testing.TB, field string) string {
	t.Helper()
	v, _ := r.json(t)[field].(string)
	return v
}

func (r resp) num(t testing.TB, field string) int64 {
	t.Helper()
	v, ok := r.json(t)[field].(float64)
	if !ok {
		t.Fatalf("response has no number %q: %s", field, r.body)
	}
	return int64(v)
}

func (r resp) code(t testing.TB) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("error response %d has Content-Type %q: %s", r.status, ct, r.body)
	}
	return r.str(t, "code")
}

// request is one HTTP call.
type request struct {
	method, path string
	body         any // a string is sent as is
	user         *user
	headers      map[string]string
}

// do sends req, reads the response, and validates it against the OpenAPI
// document: every response the API tests receive is checked.
func (e *env) do(req request) resp {
	e.t.Helper()
	var body io.Reader
	var raw []byte
	switch b := req.body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			e.t.Fatal(err)
		}
	}
	if raw != nil {
		body = bytes.NewReader(raw)
	}
	hr, err := http.NewRequest(req.method, e.url+req.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if raw != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.user != nil {
		hr.Header.Set("Authorization", "Bearer "+req.user.tok)
	}
	for k, v := range req.headers {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	// Errorf, not Fatalf: do also runs on goroutines the test started.
	res, err := e.client.Do(hr)
	if err != nil {
		e.t.Errorf("%s %s: %v", req.method, req.path, err)
		return resp{}
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Errorf("%s %s: read body: %v", req.method, req.path, err)
		return resp{}
	}
	r := resp{status: res.StatusCode, header: res.Header, body: out}
	e.validate(hr, r)
	return r
}

func (e *env) validate(hr *http.Request, r resp) {
	e.t.Helper()
	route, params, err := e.router.FindRoute(hr)
	if err != nil {
		if r.status == http.StatusNotFound || r.status == http.StatusMethodNotAllowed {
			return // a path the document does not have; nothing to validate against
		}
		e.t.Errorf("%s %s: no route in the OpenAPI document: %v", hr.Method, hr.URL.Path, err)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: hr, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  r.status,
		Header:  r.header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(r.body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		e.t.Errorf("%s %s answered %d, which the OpenAPI document does not allow: %v\nbody: %s", hr.Method, hr.URL.Path, r.status, err, r.body)
	}
	e.validated.Add(1)
}

// must fails the test unless r has status want.
func must(t testing.TB, r resp, want int) resp {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

// receiveStock records a receipt of qty units of sku at branch, at unit
// cost 100, as an ADMIN of merchant (POST /v1/stock/receipts), and returns
// the answer. A SKU never received is at zero stock (SPEC §4.2), so a test
// that checks a sale out receives its units first: checkout reserves them
// and, with the default settings (no negative stock), answers 422
// insufficient_stock without them.
func (e *env) receiveStock(merchant, branch uuid.UUID, sku string, qty int64) resp {
	e.t.Helper()
	admin := newUser(e.t, merchant, "ADMIN")
	return must(e.t, e.do(request{method: "POST", path: "/v1/stock/receipts", user: &admin,
		body: map[string]any{"branch_id": branch, "sku": sku, "qty": qty, "unit_cost": 100}}), 201)
}

// sale drives a transaction to the point a test needs.
type sale struct {
	e      *env
	u      *user
	id     string
	branch uuid.UUID
	line   string
	units  map[string]int64 // per SKU, what addItem added
}

func (e *env) open(u *user, branch uuid.UUID) *sale {
	e.t.Helper()
	r := must(e.t, e.do(request{method: "POST", path: "/v1/transactions", user: u, body: map[string]any{"branch_id": branch}}), 201)
	return &sale{e: e, u: u, id: r.str(e.t, "id"), branch: branch, units: map[string]int64{}}
}

// stockUp receives at the sale's branch, for its merchant, exactly the
// units its lines (added with addItem) hold, so that its checkout can
// reserve them and nothing more is on hand; it returns the last receipt's
// answer.
func (s *sale) stockUp() resp {
	s.e.t.Helper()
	var r resp
	for _, sku := range slices.Sorted(maps.Keys(s.units)) {
		r = s.e.receiveStock(s.u.merchant, s.branch, sku, s.units[sku])
	}
	return r
}

func (s *sale) path(suffix string) string { return "/v1/transactions/" + s.id + suffix }

func (s *sale) post(suffix string, body any) resp {
	s.e.t.Helper()
	return s.e.do(request{method: "POST", path: s.path(suffix), user: s.u, body: body})
}

func (s *sale) addItem(qty, price int64) resp {
	s.e.t.Helper()
	r := must(s.e.t, s.post("/items", map[string]any{"sku": "TEA", "name": "Tea", "qty": qty, "unit_price": price, "tax_rate_bps": 1100}), 201)
	s.line = r.str(s.e.t, "line_id")
	s.units["TEA"] += qty
	return r
}
