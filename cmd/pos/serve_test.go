package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/internal/pgtest"
	"pos/internal/testlog"
)

// freeAddr is a loopback address no one listened on a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs serve with vars until ctx ends, and returns once it
// answers /readyz: the channel receives what serve returns, logs holds
// what it logs.
func startServe(t *testing.T, ctx context.Context, vars map[string]string) (served <-chan error, logs *testlog.Buffer) {
	t.Helper()
	logs = &testlog.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, env(vars), logs, logs) }()
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if resp, err := client.Get("http://" + vars["POS_ADDR"] + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return done, logs
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve returned before it was ready: %v\n%s", err, logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("serve not ready after 20s\n%s", logs.String())
	return nil, nil
}

// `serve` stopped in the middle of a sales load (the signal comes while
// requests run and the read side's workers hold messages, the process
// manager's stock commands among them) shuts down cleanly: it returns nil
// and logs no error. The workers finish what they hold before the pools,
// the cache and the embedded NATS server they use are closed.
func TestServeStopsUnderLoadWithoutErrors(t *testing.T) {
	url := pgtest.NewEmptyDatabase(t)
	addr := freeAddr(t)
	vars := map[string]string{
		"DATABASE_URL": url,
		"POS_ADDR":     addr,
		"POS_DATA_DIR": t.TempDir(), // embedded NATS, this test's own
		"REDIS_URL":    "redis://127.0.0.1:6379/0",
	}
	merchant, branch := uuid.New(), uuid.New()
	token := func(role string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(context.Background(), []string{"token", "-merchant", merchant.String(), "-role", role, "-sub", "test"}, env(vars), &out, &out); err != nil {
			t.Fatalf("token: %v: %s", err, out.String())
		}
		return strings.TrimSpace(out.String())
	}
	manager, cashier := token("MANAGER"), token("CASHIER")

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served, logs := startServe(t, ctx, vars)
	asManager, asCashier := caller(addr, manager), caller(addr, cashier)
	if code, _, body := asManager("POST", "/v1/stock/receipts", fmt.Sprintf(`{"branch_id":%q,"sku":"TEA","qty":1000000,"unit_cost":6000}`, branch)); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("receive stock: %d %v", code, body)
	}

	// Cashiers ring up complete sales until the signal; what they see
	// after it (refused connections) is not this test's concern.
	var wg sync.WaitGroup
	var mu sync.Mutex
	completed := 0
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				tx := uuid.New()
				steps := []struct{ path, body string }{
					{"/v1/transactions", fmt.Sprintf(`{"branch_id":%q,"transaction_id":%q}`, branch, tx)},
					{"/v1/transactions/" + tx.String() + "/items", fmt.Sprintf(`{"line_id":%q,"sku":"TEA","name":"Tea","qty":1,"unit_price":15000,"tax_rate_bps":0}`, uuid.New())},
					{"/v1/transactions/" + tx.String() + "/checkout", `{}`},
					{"/v1/transactions/" + tx.String() + "/payments", `{"method":"CASH","amount":15000}`},
					{"/v1/transactions/" + tx.String() + "/complete", `{}`},
				}
				for _, s := range steps {
					if code, _, body := asCashier("POST", s.path, s.body); code == 0 || code >= 300 {
						if ctx.Err() == nil {
							t.Errorf("POST %s: %d %v", s.path, code, body)
						}
						return
					}
				}
				mu.Lock()
				completed++
				mu.Unlock()
			}
		})
	}
	time.Sleep(3 * time.Second)
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve returned %v after the signal", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("serve still running 60s after the signal\n%s", logs.String())
	}
	wg.Wait()
	mu.Lock()
	n := completed
	mu.Unlock()
	if n == 0 {
		t.Fatalf("no sale completed before the signal: the test proves nothing\n%s", logs.String())
	}
	var errs []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			errs = append(errs, line)
		}
	}
	if len(errs) > 0 {
		t.Fatalf("%d errors logged (%d sales completed); the first:\n%s", len(errs), n, strings.Join(errs[:min(3, len(errs))], "\n"))
	}
}

// A request still running when the shutdown grace ends is cut off, and
// said in the log; the stop itself succeeds (a supervisor must not count a
// requested stop as a crash).
func TestServeCutsOffARequestPastTheGrace(t *testing.T) {
	addr := freeAddr(t)
	vars := map[string]string{
		"DATABASE_URL":               pgtest.NewEmptyDatabase(t),
		"POS_ADDR":                   addr,
		"POS_READ_SIDE":              "off",
		"POS_SHUTDOWN_GRACE_SECONDS": "1",
	}
	logs := &testlog.Buffer{}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- run(ctx, []string{"serve"}, env(vars), logs, logs) }()
	var conn net.Conn
	for range 200 {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A body announced and never sent: the request stays in its handler.
	fmt.Fprintf(conn, "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	time.Sleep(200 * time.Millisecond)
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve stopped with %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(logs.String(), "cut off") {
		t.Errorf("nothing said of the cut-off request:\n%s", logs.String())
	}
}

// A setting serve refuses is refused before the database is touched: a
// deploy with a bad one must not migrate the schema and then crash.
func TestServeRefusesBadSettingsBeforeMigrating(t *testing.T) {
	for name, v := range map[string]map[string]string{
		"POS_CACHE":      {"POS_CACHE": "false"},
		"POS_JWT_SECRET": {"POS_JWT_SECRET": "short"},
		"POS_CURSOR_KEY": {"POS_CURSOR_KEY": "c2hvcnQ="},
		"POS_ANCHOR_KEY": {"POS_ANCHOR_KEY": "not a key"},
	} {
		t.Run(name, func(t *testing.T) {
			url := pgtest.NewEmptyDatabase(t)
			vars := map[string]string{"DATABASE_URL": url, "POS_ADDR": freeAddr(t), "POS_READ_SIDE": "off"}
			maps.Copy(vars, v)
			logs := &testlog.Buffer{}
			err := run(context.Background(), []string{"serve"}, env(vars), logs, logs)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("serve: %v, want a refusal naming %s", err, name)
			}
			if strings.Contains(logs.String(), "migrations applied") {
				t.Errorf("the database was migrated before the refusal:\n%s", logs.String())
			}
		})
	}
}

// pooledServe returns serve's address and environment on a fresh database
// whose DATABASE_URL sets pool_max_conns (the requests' and queries' pools),
// without the cache, and a CASHIER token of a new merchant.
func pooledServe(t *testing.T, maxConns int) (addr string, vars map[string]string, token string) {
	t.Helper()
	addr, url, sep := freeAddr(t), pgtest.NewEmptyDatabase(t), "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	vars = map[string]string{
		"DATABASE_URL": fmt.Sprintf("%s%spool_max_conns=%d", url, sep, maxConns),
		"POS_ADDR":     addr,
		"POS_DATA_DIR": t.TempDir(),
		"POS_CACHE":    "off",
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "-merchant", uuid.NewString(), "-role", "CASHIER", "-sub", "test"}, env(vars), &out, &out); err != nil {
		t.Fatalf("token: %v: %s", err, out.String())
	}
	return addr, vars, strings.TrimSpace(out.String())
}

// serve with a pool of one connection (pool_max_conns=1 in DATABASE_URL)
// still takes commands and reads its writes: the relay, which holds a
// connection for its lease as long as it leads, works on a pool of its own,
// not on the requests' (where it took the only connection, and under load
// its reads of the feed waited behind every request).
func TestServeWithAPoolOfOneReadsItsWrites(t *testing.T) {
	addr, vars, tok := pooledServe(t, 1)
	branch := uuid.New()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served, logs := startServe(t, ctx, vars)

	do := caller(addr, tok)
	tx := uuid.New()
	code, h, body := do("POST", "/v1/transactions", fmt.Sprintf(`{"branch_id":%q,"transaction_id":%q}`, branch, tx))
	pos := h.Get("X-Position")
	if code != http.StatusCreated || pos == "" {
		t.Fatalf("open a sale: %d (X-Position %q) %v\n%s", code, pos, body, logs.String())
	}
	if code, _, body := do("GET", "/v1/transactions/"+tx.String(), "", "X-Min-Position", pos); code != http.StatusOK {
		t.Fatalf("read the sale at its own X-Position: %d %v, want 200\n%s", code, body, logs.String())
	}
	stop()
	if err := <-served; err != nil {
		t.Errorf("serve returned %v after the signal", err)
	}
}

// Every pool serve opens is on /metrics under its name, with its size and
// its use (pgxpool's statistics, see telemetry.ObservePool): a pool whose
// connections run out shows there as empty-acquire waits. The store's and
// the queries' pools take DATABASE_URL's pool_max_conns; the others have
// sizes of their own.
func TestServeReportsEachPoolOnMetrics(t *testing.T) {
	addr, vars, tok := pooledServe(t, 5)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served, logs := startServe(t, ctx, vars)
	do := caller(addr, tok)

	before := poolStats(t, addr)
	want := map[string]float64{"store": 5, "queries": 5, "codes": 2, "ledgers": ledgerPoolSize, "relay": relayPoolSize, "workers": workerPoolSize}
	for pool, size := range want {
		if m := before[pool]["pgxpool_max_connections"]; m != size {
			t.Errorf("pool %q: pgxpool_max_connections %v, want %v (pools reported: %v)", pool, m, size, slices.Sorted(maps.Keys(before)))
		}
	}
	if len(before) != len(want) {
		t.Errorf("pools reported: %v, want %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(want)))
	}
	// The statistics are live: each command's transaction takes a
	// connection of the store's pool. (otelpgx reads them at most once a
	// second.)
	time.Sleep(1100 * time.Millisecond)
	const sales = 5
	for range sales {
		if code, _, body := do("POST", "/v1/transactions", fmt.Sprintf(`{"branch_id":%q,"transaction_id":%q}`, uuid.New(), uuid.New())); code != http.StatusCreated {
			t.Fatalf("open a sale: %d %v\n%s", code, body, logs.String())
		}
	}
	after := poolStats(t, addr)
	if got := after["store"]["pgxpool_acquires_total"] - before["store"]["pgxpool_acquires_total"]; got < sales {
		t.Errorf("store pool: pgxpool_acquires_total grew by %v over %d commands, want at least %d", got, sales, sales)
	}
	stop()
	if err := <-served; err != nil {
		t.Errorf("serve returned %v after the signal", err)
	}
}

// poolStats scrapes addr's /metrics and returns the pgxpool_* values by
// pool label and metric name, from lines such as
// pgxpool_max_connections{...,pool="store"} 5.
func poolStats(t *testing.T, addr string) map[string]map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/metrics: %d %v", addr, resp.StatusCode, err)
	}
	got := map[string]map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		name, rest, ok := strings.Cut(line, "{")
		if !ok || !strings.HasPrefix(name, "pgxpool_") {
			continue
		}
		_, pool, ok := strings.Cut(rest, `,pool="`)
		if !ok {
			continue
		}
		pool, _, _ = strings.Cut(pool, `"`)
		var v float64
		if _, err := fmt.Sscan(rest[strings.LastIndex(rest, " ")+1:], &v); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if got[pool] == nil {
			got[pool] = map[string]float64{}
		}
		got[pool][name] = v
	}
	return got
}
