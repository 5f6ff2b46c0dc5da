package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"pos/api"
	"pos/api/auth"
	"pos/queries"
)

// cannedStock answers one fixed level and counts its calls; it is also a
// TransactionGetter (as cmd/pos's HotReads is).
type cannedStock struct{ calls atomic.Int64 }

func (c *cannedStock) GetTransaction(context.Context, uuid.UUID, uuid.UUID) (queries.Transaction, error) {
	return queries.Transaction{}, queries.ErrNotFound
}

func (c *cannedStock) Stock(_ context.Context, _ uuid.UUID, f queries.StockFilter, _ string, _ int) (queries.StockPage, error) {
	c.calls.Add(1)
	return queries.StockPage{Items: []queries.StockLevel{{BranchID: uuid.New(), SKU: "CANNED", OnHand: 7, Available: 7, Version: 1, LedgerID: uuid.New()}}}, nil
}

// GET /v1/stock reads through Config.HotReads when it is a StockGetter,
// except a read that asks for its own write.
func TestStockThroughHotReads(t *testing.T) {
	e := newEnv(t)
	reader, checkpoints := startReads(t, e.dbURL, e.pool, e.store)
	v, err := auth.NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	hot := &cannedStock{}
	srv := api.New(api.Config{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: e.store, Verifier: v, Pool: e.pool,
		Reader: reader, Checkpoints: checkpoints, HotReads: hot,
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	c := e.sub(t)
	c.url = ts.URL

	manager := newUser(t, uuid.New(), "MANAGER")
	items := func(r resp) []any { its, _ := r.json(t)["items"].([]any); return its }
	r := must(t, c.do(request{method: "GET", path: "/v1/stock?sku=MILK", user: &manager}), 200)
	if its := items(r); len(its) != 1 || its[0].(map[string]any)["sku"] != "CANNED" || hot.calls.Load() != 1 {
		t.Fatalf("without X-Min-Position: %s (%d hot calls), want the hot reader's level", r.body, hot.calls.Load())
	}
	for _, req := range []request{
		{method: "GET", path: "/v1/stock", user: &manager, headers: map[string]string{"X-Min-Position": "0.0"}},
		{method: "GET", path: "/v1/stock?min_position=0.0", user: &manager},
	} {
		r := must(t, c.do(req), 200)
		if len(items(r)) != 0 || hot.calls.Load() != 1 {
			t.Fatalf("with a minimum position: %s (%d hot calls), want the read model's empty list", r.body, hot.calls.Load())
		}
	}
	// A bad SKU is refused before any read.
	must(t, c.do(request{method: "GET", path: "/v1/stock?sku=%20X", user: &manager}), 400)
	if hot.calls.Load() != 1 {
		t.Fatal("a refused request reached the hot reader")
	}
}
