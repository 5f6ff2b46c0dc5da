package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePOS checks what posload must guarantee: each transaction's steps come
// in order, one at a time, each after the previous one's response; a sale
// whose step failed sends nothing more.
type fakePOS struct {
	t       *testing.T
	mu      sync.Mutex
	next    map[string]int  // transaction → step expected next
	busy    map[string]bool // transaction → a request is being served
	failed  map[string]bool
	opened  int
	keyless int
}

var stepSuffix = []string{"", "/items", "/items", "/items", "/checkout", "/payments", "/complete"}

func (f *fakePOS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if r.Header.Get("Idempotency-Key") == "" {
		f.keyless++
	}
	var tx string
	if r.URL.Path == "/v1/transactions" {
		var body struct {
			BranchID      string `json:"branch_id"`
			TransactionID string `json:"transaction_id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.TransactionID == "" || body.BranchID == "" {
			f.t.Errorf("open without ids: %v %+v", err, body)
		}
		tx = body.TransactionID
		f.opened++
		if _, seen := f.next[tx]; seen {
			f.t.Errorf("transaction %s opened twice", tx)
		}
	} else {
		rest := strings.TrimPrefix(r.URL.Path, "/v1/transactions/")
		tx, _, _ = strings.Cut(rest, "/")
		if f.failed[tx] {
			f.t.Errorf("%s %s sent after the sale failed", r.Method, r.URL.Path)
		}
		if n := f.next[tx]; n == 0 || n >= len(stepSuffix) || !strings.HasSuffix(r.URL.Path, stepSuffix[n]) {
			f.t.Errorf("%s: step %d expected", r.URL.Path, n)
		}
	}
	if f.busy[tx] {
		f.t.Errorf("%s: sent before the previous step's response", r.URL.Path)
	}
	f.busy[tx] = true
	step := f.next[tx]
	f.next[tx]++
	fail := step == 4 && f.opened%5 == 0 // some checkouts fail
	f.mu.Unlock()

	time.Sleep(200 * time.Microsecond)
	f.mu.Lock()
	f.busy[tx] = false
	if fail {
		f.failed[tx] = true
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case fail:
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(`{"code":"invalid_state"}`))
	case step == 0 || step == 5 || (step >= 1 && step <= 3):
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{}`))
	default:
		_, _ = w.Write([]byte(`{}`))
	}
}

func TestSalesChainAndFailedSalesStop(t *testing.T) {
	for _, mode := range []string{"closed", "open"} {
		t.Run(mode, func(t *testing.T) {
			f := &fakePOS{t: t, next: map[string]int{}, busy: map[string]bool{}, failed: map[string]bool{}}
			srv := httptest.NewServer(f)
			defer srv.Close()
			o := options{url: srv.URL, name: "test", mode: mode, clients: 4, rate: 2000, duration: 800 * time.Millisecond,
				warmup: 100 * time.Millisecond, keys: true, branches: 2, tokens: []string{"a", "b", "c"}, timeout: 5 * time.Second,
				maxWorkers: 100, errorBodies: 3}
			rep, err := attack(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Sales == 0 || rep.OK == 0 {
				t.Fatalf("no sales completed: %+v", rep)
			}
			if rep.Errors == 0 || len(rep.ErrorSamples) == 0 || !strings.Contains(rep.ErrorSamples[0], "invalid_state") {
				t.Errorf("the injected failures were not reported: errors %d, samples %q", rep.Errors, rep.ErrorSamples)
			}
			if rep.StatusCodes["409"] != int(rep.Errors) {
				t.Errorf("status codes %v, errors %d", rep.StatusCodes, rep.Errors)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.keyless > 0 {
				t.Errorf("%d commands without an Idempotency-Key", f.keyless)
			}
		})
	}
}

func TestCashCoversTheTotal(t *testing.T) {
	var lines [3]line
	for i := range lines {
		lines[i] = line{it: catalogue[i], qty: 3}
	}
	pay := cashFor(lines)
	var gross int64
	for _, l := range lines {
		gross += l.qty * l.it.price * (10_000 + l.it.taxBps) / 10_000
	}
	if pay < gross+3 || pay%50_000 != 0 {
		t.Fatalf("cash %d for a gross total of %d", pay, gross)
	}
}

func TestOnlyLoopbackTargets(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:80"} {
		if err := loopbackOnly(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"http://10.0.0.1:8080", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:8080"} {
		if err := loopbackOnly(u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}
