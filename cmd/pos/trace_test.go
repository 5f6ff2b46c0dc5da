package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"pos/internal/pgtest"
	"pos/internal/testlog"
)

// collector is an OTLP/HTTP traces endpoint that keeps what it is sent.
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if r.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, fmt.Sprintf("%s: %v", r.URL.Path, err), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans of trace id received so far.
func (c *collector) trace(id []byte) []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range c.spans {
		if bytes.Equal(s.TraceId, id) {
			out = append(out, s)
		}
	}
	return out
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, `serve` exports one trace per
// request that goes all the way (SPEC §8): the request's span, the command
// and its append inside it, the relay's publication of each event (a child
// of the request, whose context the event's metadata carries), each
// worker's delivery of it (a child of the publication), and the commands
// the stock process manager sends because of it.
func TestServeExportsATraceFromRequestToProjector(t *testing.T) {
	col := &collector{}
	otlp := httptest.NewServer(col)
	defer otlp.Close()
	addr := freeAddr(t)
	vars := map[string]string{
		"DATABASE_URL":                pgtest.NewEmptyDatabase(t),
		"POS_ADDR":                    addr,
		"POS_DATA_DIR":                t.TempDir(),
		"REDIS_URL":                   "redis://127.0.0.1:6379/0",
		"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL,
	}
	merchant, branch := uuid.New(), uuid.New()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "-merchant", merchant.String(), "-role", "MANAGER", "-sub", "test"}, env(vars), &out, &out); err != nil {
		t.Fatalf("token: %v: %s", err, out.String())
	}
	token := strings.TrimSpace(out.String())

	logs := &testlog.Buffer{}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- run(ctx, []string{"serve"}, env(vars), logs, logs) }()
	defer func() {
		stop()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Errorf("serve still running 30s after the signal")
		}
	}()
	base := "http://" + addr
	client := &http.Client{Timeout: 10 * time.Second}
	waitReady(t, client, base, served, logs)

	// Every request names one trace, each from a parent span of its own.
	traceID := uuid.New()
	post := func(path, body string) (parent string) {
		t.Helper()
		span := uuid.New()
		parent = hex.EncodeToString(span[:8])
		req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("traceparent", fmt.Sprintf("00-%x-%s-01", traceID[:], parent))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
		return parent
	}
	tx := uuid.New()
	post("/v1/stock/receipts", fmt.Sprintf(`{"branch_id":%q,"sku":"TEA","qty":10,"unit_cost":6000}`, branch))
	post("/v1/transactions", fmt.Sprintf(`{"branch_id":%q,"transaction_id":%q}`, branch, tx))
	post("/v1/transactions/"+tx.String()+"/items", fmt.Sprintf(`{"line_id":%q,"sku":"TEA","name":"Tea","qty":1,"unit_price":15000,"tax_rate_bps":0}`, uuid.New()))
	post("/v1/transactions/"+tx.String()+"/checkout", `{}`)
	payParent := post("/v1/transactions/"+tx.String()+"/payments", `{"method":"CASH","amount":15000}`)

	// missing names the first link of the payment's chain not received yet
	// ("" when it is whole). Spans arrive in batches, in any order.
	missing := func(spans []*tracepb.Span) string {
		under := func(name string, parents ...*tracepb.Span) *tracepb.Span {
			for _, s := range spans {
				for _, p := range parents {
					if s.Name == name && bytes.Equal(s.ParentSpanId, p.SpanId) {
						return s
					}
				}
			}
			return nil
		}
		var pay *tracepb.Span // the request's span: its parent's child, named after its route
		for _, s := range spans {
			if s.Name == "POST /v1/transactions/{id}/payments" && hex.EncodeToString(s.ParentSpanId) == payParent {
				pay = s
			}
		}
		if pay == nil {
			return "the payment's request span"
		}
		command := under("command transaction", pay)
		if command == nil {
			return "the transaction command span under the payment's request"
		}
		if under("append", command) == nil {
			return "the append span under the payment's command"
		}
		// The relay publishes the payment's events as children of the
		// request, and each worker's delivery of one is a child of its
		// publication.
		var publications []*tracepb.Span
		for _, s := range spans {
			if s.Name == "relay publish" && bytes.Equal(s.ParentSpanId, pay.SpanId) && s.Kind == tracepb.Span_SPAN_KIND_PRODUCER {
				publications = append(publications, s)
			}
		}
		if len(publications) == 0 {
			return "a relay publish span under the payment's request"
		}
		for _, durable := range []string{"pos_projector", processDurable} {
			if c := under("consume "+durable, publications...); c == nil || c.Kind != tracepb.Span_SPAN_KIND_CONSUMER {
				return "a consume " + durable + " span under a publication of the payment's events"
			}
		}
		// The process manager sells the paid units in the payment's trace.
		if under("command stock", pay) == nil {
			return "the process manager's stock command under the payment's request"
		}
		return ""
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		spans := col.trace(traceID[:])
		gap := missing(spans)
		if gap == "" {
			return
		}
		if time.Now().After(deadline) {
			var names []string
			for _, s := range spans {
				names = append(names, s.Name)
			}
			t.Fatalf("after 45s, no %s; the trace's spans: %q\n%s", gap, names, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitReady waits for serve's /readyz to answer 200.
func waitReady(t *testing.T, client *http.Client, base string, served <-chan error, logs *testlog.Buffer) {
	t.Helper()
	for range 200 {
		if resp, err := client.Get(base + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-served:
			t.Fatalf("serve returned before it was ready: %v\n%s", err, logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("serve not ready after 20s\n%s", logs.String())
}
