package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"pos/api/auth"
)

// fakePOS checks what posload must guarantee: each transaction's steps come
// in order, one at a time, each after the previous one's response; a sale
// whose step failed sends nothing more. Like the server (SPEC §4.2), its
// checkout reserves each line's units from the stock received at the
// sale's branch, and refuses (422 insufficient_stock, a test error) what
// was never received; with noStock it is an older server, without stock
// endpoints or reservations.
type fakePOS struct {
	t       *testing.T
	mu      sync.Mutex
	next    map[string]int  // transaction → step expected next
	busy    map[string]bool // transaction → a request is being served
	failed  map[string]bool
	opened  int
	keyless int

	merchantOf    map[string]string // Authorization → merchant, for the sales' and the receipts' tokens
	noStock       bool              // receipts answer 404 (no such route)
	receiptStatus int               // when set, receipts answer it
	receipts      int               // receipts answered
	badReceipts   int               // receipts sent after a sale began, or by a token of no merchant
	stock         map[string]int64  // merchant/branch/sku → units available
	itemSKUs      map[string]int    // sku → item lines added
	sales         map[string]*fakeSale
}

type fakeSale struct {
	merchant, branch string
	units            map[string]int64 // sku → units
}

func newFakePOS(t *testing.T, merchantOf map[string]string) *fakePOS {
	return &fakePOS{t: t, next: map[string]int{}, busy: map[string]bool{}, failed: map[string]bool{},
		merchantOf: merchantOf, stock: map[string]int64{}, itemSKUs: map[string]int{}, sales: map[string]*fakeSale{}}
}

var stepSuffix = []string{"", "/items", "/items", "/items", "/checkout", "/payments", "/complete"}

// receive serves POST /v1/stock/receipts (f.mu held).
func (f *fakePOS) receive(w http.ResponseWriter, r *http.Request) {
	f.receipts++
	merchant, ok := f.merchantOf[r.Header.Get("Authorization")]
	if !ok || f.opened > 0 {
		f.badReceipts++
	}
	var body struct {
		BranchID string `json:"branch_id"`
		SKU      string `json:"sku"`
		Qty      int64  `json:"qty"`
		UnitCost *int64 `json:"unit_cost"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.BranchID == "" || body.SKU == "" || body.Qty <= 0 || body.UnitCost == nil || *body.UnitCost < 0 {
		f.t.Errorf("receipt %v %+v", err, body)
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case f.noStock:
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"code":"not_found"}`))
	case f.receiptStatus != 0:
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(f.receiptStatus)
		_, _ = w.Write([]byte(`{"code":"forbidden"}`))
	default:
		f.stock[merchant+"/"+body.BranchID+"/"+body.SKU] += body.Qty
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{}`))
	}
}

// reserve takes a sale's units from the stock of its branch, all or
// nothing, and reports whether there were enough (f.mu held).
func (f *fakePOS) reserve(tx string) bool {
	s := f.sales[tx]
	for sku, n := range s.units {
		if f.stock[s.merchant+"/"+s.branch+"/"+sku] < n {
			f.t.Errorf("checkout of %s: %d × %s at branch %s, %d in stock", tx, n, sku, s.branch, f.stock[s.merchant+"/"+s.branch+"/"+sku])
			return false
		}
	}
	for sku, n := range s.units {
		f.stock[s.merchant+"/"+s.branch+"/"+sku] -= n
	}
	return true
}

func (f *fakePOS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if r.Header.Get("Idempotency-Key") == "" {
		f.keyless++
	}
	if r.URL.Path == "/v1/stock/receipts" {
		f.receive(w, r)
		f.mu.Unlock()
		return
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
		f.sales[tx] = &fakeSale{merchant: f.merchantOf[r.Header.Get("Authorization")], branch: body.BranchID, units: map[string]int64{}}
	} else {
		rest := strings.TrimPrefix(r.URL.Path, "/v1/transactions/")
		tx, _, _ = strings.Cut(rest, "/")
		if f.failed[tx] {
			f.t.Errorf("%s %s sent after the sale failed", r.Method, r.URL.Path)
		}
		if n := f.next[tx]; n == 0 || n >= len(stepSuffix) || !strings.HasSuffix(r.URL.Path, stepSuffix[n]) {
			f.t.Errorf("%s: step %d expected", r.URL.Path, n)
		}
		if s := f.sales[tx]; s != nil && strings.HasSuffix(r.URL.Path, "/items") {
			var item struct {
				SKU string `json:"sku"`
				Qty int64  `json:"qty"`
			}
			if err := json.NewDecoder(r.Body).Decode(&item); err != nil || item.SKU == "" || item.Qty <= 0 {
				f.t.Errorf("item %v %+v", err, item)
			}
			s.units[item.SKU] += item.Qty
			f.itemSKUs[item.SKU]++
		}
	}
	if f.busy[tx] {
		f.t.Errorf("%s: sent before the previous step's response", r.URL.Path)
	}
	f.busy[tx] = true
	step := f.next[tx]
	f.next[tx]++
	fail := step == 4 && f.opened%5 == 0 // some checkouts fail
	short := step == 4 && !fail && !f.noStock && !f.reserve(tx)
	f.mu.Unlock()

	time.Sleep(200 * time.Microsecond)
	f.mu.Lock()
	f.busy[tx] = false
	if fail || short {
		f.failed[tx] = true
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case short:
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(`{"code":"insufficient_stock"}`))
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

// fakeMerchants are three merchants' tokens: a cashier's for the sales, a
// manager's for the stock, and which merchant each belongs to.
func fakeMerchants() (cashiers, managers []string, merchantOf map[string]string) {
	merchantOf = map[string]string{}
	for _, m := range []string{"a", "b", "c"} {
		cashiers, managers = append(cashiers, m), append(managers, "manager-"+m)
		merchantOf["Bearer "+m], merchantOf["Bearer manager-"+m] = m, m
	}
	return cashiers, managers, merchantOf
}

func fakeOptions(url, mode string) options {
	cashiers, managers, _ := fakeMerchants()
	return options{url: url, name: "test", mode: mode, clients: 4, rate: 2000, duration: 800 * time.Millisecond,
		warmup: 100 * time.Millisecond, keys: true, branches: 2, tokens: cashiers, stockTokens: managers, stockQty: 1_000_000,
		timeout: 5 * time.Second, maxWorkers: 100, errorBodies: 3}
}

func TestSalesChainAndFailedSalesStop(t *testing.T) {
	for _, mode := range []string{"closed", "open"} {
		t.Run(mode, func(t *testing.T) {
			_, _, merchantOf := fakeMerchants()
			f := newFakePOS(t, merchantOf)
			srv := httptest.NewServer(f)
			defer srv.Close()
			o := fakeOptions(srv.URL, mode)
			var stderr bytes.Buffer
			d, err := prepare(context.Background(), o, &stderr)
			if err != nil {
				t.Fatal(err)
			}
			// One receipt per merchant, branch and catalogue SKU, by the
			// merchant's stock token, before any sale.
			f.mu.Lock()
			receipts, bad := f.receipts, f.badReceipts
			f.mu.Unlock()
			if want := len(o.tokens) * o.branches * len(catalogue); receipts != want || bad != 0 {
				t.Fatalf("%d receipts (%d by a token of no merchant), want %d; stderr: %s", receipts, bad, want, stderr.String())
			}
			rep, err := attack(context.Background(), o, d)
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
				t.Errorf("status codes %v, errors %d (a 422 is a checkout without stock)", rep.StatusCodes, rep.Errors)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.keyless > 0 {
				t.Errorf("%d commands without an Idempotency-Key", f.keyless)
			}
			if f.badReceipts != 0 || f.receipts != len(o.tokens)*o.branches*len(catalogue) {
				t.Errorf("%d receipts in all, %d of them after a sale began", f.receipts, f.badReceipts)
			}
		})
	}
}

// TestOlderServerWithoutStock: against a server with no stock endpoints
// (404 on the first receipt) posload says so on stderr, sends no other
// receipt, and the sales run as before.
func TestOlderServerWithoutStock(t *testing.T) {
	_, _, merchantOf := fakeMerchants()
	f := newFakePOS(t, merchantOf)
	f.noStock = true
	srv := httptest.NewServer(f)
	defer srv.Close()
	o := fakeOptions(srv.URL, "closed")
	var stderr bytes.Buffer
	d, err := prepare(context.Background(), o, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "no stock endpoints") || !strings.Contains(stderr.String(), "404") {
		t.Errorf("stderr %q: want a note that the stock setup was skipped", stderr.String())
	}
	rep, err := attack(context.Background(), o, d)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sales == 0 {
		t.Fatalf("no sales completed: %+v", rep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.receipts != 1 {
		t.Errorf("%d receipts sent, want the one that found no endpoint", f.receipts)
	}
}

// TestRefusedReceiptStopsTheRun: a server with stock endpoints that refuses
// the receipts would refuse every checkout; posload stops before the sales
// and says why.
func TestRefusedReceiptStopsTheRun(t *testing.T) {
	_, _, merchantOf := fakeMerchants()
	f := newFakePOS(t, merchantOf)
	f.receiptStatus = http.StatusForbidden
	srv := httptest.NewServer(f)
	defer srv.Close()
	var stderr bytes.Buffer
	_, err := prepare(context.Background(), fakeOptions(srv.URL, "closed"), &stderr)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("prepare with refused receipts: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.opened != 0 {
		t.Errorf("%d sales opened after the stock was refused", f.opened)
	}
}

// TestStockTokens: minted tokens come in pairs, a CASHIER for the sales and
// a MANAGER of the same merchant for the stock; given tokens receive the
// stock themselves.
func TestStockTokens(t *testing.T) {
	const secret = "posload-test-secret-0123456789abcdef"
	o, err := parseOptions([]string{"-merchants", "3"}, func(k string) string {
		if k == "POS_JWT_SECRET" {
			return secret
		}
		return ""
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewHS256([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.tokens) != 3 || len(o.stockTokens) != 3 || o.stockQty != defaultStockQty {
		t.Fatalf("%d tokens, %d stock tokens, stock qty %d", len(o.tokens), len(o.stockTokens), o.stockQty)
	}
	seen := map[string]bool{}
	for i := range o.tokens {
		cashier, err := v.Verify(o.tokens[i])
		if err != nil {
			t.Fatal(err)
		}
		manager, err := v.Verify(o.stockTokens[i])
		if err != nil {
			t.Fatal(err)
		}
		if cashier.Role != auth.RoleCashier || manager.Role != auth.RoleManager || manager.MerchantID != cashier.MerchantID ||
			len(cashier.BranchIDs) != 0 || len(manager.BranchIDs) != 0 || seen[cashier.MerchantID.String()] {
			t.Errorf("merchant %d: cashier %+v, stock token %+v", i, cashier, manager)
		}
		seen[cashier.MerchantID.String()] = true
	}

	o, err = parseOptions([]string{"-token", "t1", "-token", "t2", "-stock-qty", "0"}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.stockTokens, []string{"t1", "t2"}) || o.stockQty != 0 {
		t.Errorf("given tokens: stock tokens %q, qty %d", o.stockTokens, o.stockQty)
	}
	if _, err := parseOptions([]string{"-token", "t1", "-stock-qty", "-1"}, func(string) string { return "" }, &bytes.Buffer{}); err == nil {
		t.Error("-stock-qty -1 accepted")
	}
}

// TestHotSKU: with -skus 1, one merchant and one branch, the setup receives
// that one SKU once and every line of every sale is that SKU (the hot stock
// ledger of scripts/stockbench.sh).
func TestHotSKU(t *testing.T) {
	noEnv := func(string) string { return "" }
	o, err := parseOptions([]string{"-token", "a", "-skus", "1", "-branches", "1"}, noEnv, &bytes.Buffer{})
	if err != nil || o.skus != 1 {
		t.Fatalf("-skus 1: %v, skus %d", err, o.skus)
	}
	for _, bad := range []string{"-1", fmt.Sprint(len(catalogue) + 1)} {
		if _, err := parseOptions([]string{"-token", "a", "-skus", bad}, noEnv, &bytes.Buffer{}); err == nil {
			t.Errorf("-skus %s accepted", bad)
		}
	}

	_, _, merchantOf := fakeMerchants()
	f := newFakePOS(t, merchantOf)
	srv := httptest.NewServer(f)
	defer srv.Close()
	o = fakeOptions(srv.URL, "closed")
	o.tokens, o.stockTokens, o.branches, o.skus = o.tokens[:1], o.stockTokens[:1], 1, 1
	var stderr bytes.Buffer
	d, err := prepare(context.Background(), o, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := attack(context.Background(), o, d)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sales == 0 || rep.SKUs != 1 {
		t.Fatalf("sales %d, SKUs %d: %+v", rep.Sales, rep.SKUs, rep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	hot := catalogue[0].sku
	if f.receipts != 1 || len(f.stock) != 1 {
		t.Errorf("%d receipts, ledgers %v: want one, of %s", f.receipts, f.stock, hot)
	}
	for key := range f.stock {
		if !strings.HasSuffix(key, "/"+hot) {
			t.Errorf("stock received as %s, want only %s", key, hot)
		}
	}
	if len(f.itemSKUs) != 1 || f.itemSKUs[hot] == 0 {
		t.Errorf("items sold by SKU: %v, want only %s", f.itemSKUs, hot)
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
