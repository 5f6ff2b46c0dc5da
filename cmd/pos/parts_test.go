package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/consume"
	"pos/internal/pgtest"
	"pos/internal/testlog"
)

// caller returns what sends requests to the API at addr with tok, a fresh
// Idempotency-Key and any pairs of header names and values, and returns the
// status, the headers and the JSON object answered (0 and nils when the
// request failed). Safe for concurrent use.
func caller(addr, tok string) func(method, path, body string, headers ...string) (int, http.Header, map[string]any) {
	client := &http.Client{Timeout: 10 * time.Second}
	return func(method, path, body string, headers ...string) (int, http.Header, map[string]any) {
		req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		if err != nil {
			return 0, nil, nil
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", uuid.NewString())
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, nil
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		return resp.StatusCode, resp.Header, m
	}
}

// Each part runs alone (issue #5): serve with POS_READ_SIDE=off is the API
// without relay or workers, so a sale's read model waits; `pos relay` and
// `pos projector`, in processes of their own (here: run calls of their
// own) on one broker, then bring it up to date, and the API answers the
// sale at its own write's position.
func TestEachPartRunsAlone(t *testing.T) {
	_, portStr, _ := net.SplitHostPort(freeAddr(t))
	port, _ := strconv.Atoi(portStr)
	broker, err := consume.StartEmbedded(t.TempDir(), port) // this test's own
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Shutdown)
	url := pgtest.NewEmptyDatabase(t)
	addr := freeAddr(t)
	vars := map[string]string{
		"DATABASE_URL":         url,
		"POS_ADDR":             addr,
		"NATS_URL":             broker.URL(),
		"POS_READ_SIDE":        "off",
		"POS_CONSISTENCY_WAIT": "300ms",
		"POS_ANCHOR_INTERVAL":  "0",
		"REDIS_URL":            "redis://127.0.0.1:6379/0",
	}
	merchant := uuid.New()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "-merchant", merchant.String(), "-role", "CASHIER", "-sub", "t"}, env(vars), &out, &out); err != nil {
		t.Fatalf("token: %v: %s", err, out.String())
	}
	tok := strings.TrimSpace(out.String())

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	logs := &testlog.Buffer{}
	ended := make(chan error, 3)
	start := func(args []string, extra map[string]string) {
		v := map[string]string{}
		for k, x := range vars {
			v[k] = x
		}
		for k, x := range extra {
			v[k] = x
		}
		go func() { ended <- run(ctx, args, env(v), logs, logs) }()
	}
	start([]string{"serve"}, nil)
	do := caller(addr, tok)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _, _ := do("GET", "/readyz", ""); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready after 30s\n%s", logs)
		}
	}
	code, h, sale := do("POST", "/v1/transactions", `{"branch_id":"`+uuid.NewString()+`"}`)
	if code != http.StatusCreated {
		t.Fatalf("open: %d %v", code, sale)
	}
	id, pos := sale["id"].(string), h.Get("X-Position")
	// Nothing applies the sale while the API runs alone, and it runs no
	// relay (serve's would have led at once).
	if code, _, body := do("GET", "/v1/transactions/"+id, "", "X-Min-Position", pos); code != http.StatusServiceUnavailable {
		t.Fatalf("with the API alone: %d %v, want 503 not_yet_consistent", code, body)
	}
	if strings.Contains(logs.String(), `"msg":"relay leading"`) {
		t.Fatalf("the API alone runs a relay\n%s", logs)
	}

	relayMetrics, projectorMetrics := freeAddr(t), freeAddr(t)
	start([]string{"relay"}, map[string]string{"POS_METRICS_ADDR": relayMetrics})
	start([]string{"projector"}, map[string]string{"POS_METRICS_ADDR": projectorMetrics})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, _, body := do("GET", "/v1/transactions/"+id, "", "X-Min-Position", pos)
		if code == http.StatusOK && body["id"] == id && body["status"] == "draft" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with a relay and a projector of their own: %d %v\n%s", code, body, logs)
		}
	}
	// Each reports its pools by what they are for (see
	// TestServeReportsEachPoolOnMetrics): both were at work on the sale.
	for addr, pools := range map[string][]string{relayMetrics: {"relay"}, projectorMetrics: {"store", "workers", "ledgers"}} {
		got := poolStats(t, addr)
		if len(got) != len(pools) {
			t.Errorf("%s/metrics: pools %v, want %v", addr, slices.Sorted(maps.Keys(got)), pools)
		}
		for _, p := range pools {
			if got[p]["pgxpool_max_connections"] <= 0 {
				t.Errorf("%s/metrics: no %s pool (pools %v)", addr, p, slices.Sorted(maps.Keys(got)))
			}
		}
	}
	stop()
	for range 3 {
		select {
		case err := <-ended:
			if err != nil {
				t.Errorf("a part returned %v\n%s", err, logs)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("a part did not stop within 30s\n%s", logs)
		}
	}
}

// `pos projector` on a pool of one connection (pool_max_conns=1 in
// DATABASE_URL) still has its process manager sell a completed sale's
// stock, and the stock projection shows it: the runners work on a pool of
// their own and the stock ledgers on theirs, as serve's do. On one pool, a
// process-manager transaction held the only connection while its command
// waited for another.
func TestProjectorOnAPoolOfOneSellsTheStock(t *testing.T) {
	_, portStr, _ := net.SplitHostPort(freeAddr(t))
	port, _ := strconv.Atoi(portStr)
	broker, err := consume.StartEmbedded(t.TempDir(), port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Shutdown)
	url, addr, sep := pgtest.NewEmptyDatabase(t), freeAddr(t), "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	vars := map[string]string{
		"DATABASE_URL": url, "POS_ADDR": addr, "NATS_URL": broker.URL(), "POS_READ_SIDE": "off",
		"POS_ANCHOR_INTERVAL": "0", "POS_CACHE": "off",
	}
	merchant, branch, sale := uuid.New(), uuid.New(), uuid.New()
	token := func(role string) string {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"token", "-merchant", merchant.String(), "-role", role, "-sub", "t"}, env(vars), &out, &out); err != nil {
			t.Fatalf("token: %v: %s", err, out.String())
		}
		return strings.TrimSpace(out.String())
	}
	manager, cashier := caller(addr, token("MANAGER")), caller(addr, token("CASHIER"))

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served, logs := startServe(t, ctx, vars)
	ended := make(chan error, 2)
	for _, part := range []string{"relay", "projector"} {
		v := map[string]string{"POS_METRICS_ADDR": freeAddr(t)}
		for k, x := range vars {
			v[k] = x
		}
		if part == "projector" {
			v["DATABASE_URL"] = url + sep + "pool_max_conns=1"
		}
		go func() { ended <- run(ctx, []string{part}, env(v), logs, logs) }()
	}
	// The process manager acts on events after its activation only: the
	// sale must come once it consumes.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), `"msg":"workers consuming","worker":"processes"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the projector's process manager not consuming after 30s\n%s", logs)
		}
	}

	if code, _, body := manager("POST", "/v1/stock/receipts", `{"branch_id":"`+branch.String()+`","sku":"TEA","qty":10,"unit_cost":6000}`); code != http.StatusCreated {
		t.Fatalf("receive stock: %d %v", code, body)
	}
	tx := "/v1/transactions/" + sale.String()
	for _, step := range []struct{ path, body string }{
		{"/v1/transactions", `{"branch_id":"` + branch.String() + `","transaction_id":"` + sale.String() + `"}`},
		{tx + "/items", `{"line_id":"` + uuid.NewString() + `","sku":"TEA","name":"Tea","qty":1,"unit_price":15000,"tax_rate_bps":0}`},
		{tx + "/checkout", `{}`},
		{tx + "/payments", `{"method":"CASH","amount":15000}`},
		{tx + "/complete", `{}`},
	} {
		if code, _, body := cashier("POST", step.path, step.body); code >= 300 {
			t.Fatalf("POST %s: %d %v", step.path, code, body)
		}
	}
	// The sale reserved its unit at checkout; the process manager sells it
	// once the sale completes, and the stock projection then shows it gone.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, _, body := manager("GET", "/v1/stock?branch_id="+branch.String()+"&sku=TEA", "")
		items, _ := body["items"].([]any)
		if len(items) == 1 {
			level, _ := items[0].(map[string]any)
			if level["on_hand"] == float64(9) && level["reserved"] == float64(0) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sale's stock not sold after 30s: %v\n%s", body, logs)
		}
	}
	stop()
	if err := <-served; err != nil {
		t.Errorf("serve returned %v", err)
	}
	for range 2 {
		select {
		case err := <-ended:
			if err != nil {
				t.Errorf("a part returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("a part did not stop within 30s\n%s", logs)
		}
	}
}
