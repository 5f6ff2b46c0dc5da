package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/api"
	"pos/api/auth"
	"pos/queries"
)

// cannedDailySales answers one fixed row and counts its calls.
type cannedDailySales struct{ calls atomic.Int64 }

func (c *cannedDailySales) DailySales(_ context.Context, _ uuid.UUID, from, _ time.Time, branch *uuid.UUID) ([]queries.DaySales, error) {
	c.calls.Add(1)
	b := uuid.MustParse("0193a5c0-0000-7000-8000-0000000000b1")
	if branch != nil {
		b = *branch
	}
	return []queries.DaySales{{BranchID: b, Date: from, Currency: "IDR", Count: 7, ByMethod: map[string]int64{"CASH": 1}}}, nil
}

// withHotDailySales is a server on a fresh environment whose daily sales
// read through hot, and a client of it.
func withHotDailySales(t *testing.T, hot api.DailySalesGetter) *env {
	t.Helper()
	e := newEnv(t)
	reader, checkpoints := startReads(t, e.dbURL, e.pool, e.store)
	v, err := auth.NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Config{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: e.store, Verifier: v, Pool: e.pool,
		Reader: reader, Checkpoints: checkpoints, HotDailySales: hot,
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	c := e.sub(t)
	c.url = ts.URL
	return c
}

// The daily-sales report reads through Config.HotDailySales, except a read
// that asks for its own write (X-Min-Position, min_position), which goes to
// the read model.
func TestDailySalesThroughHotReads(t *testing.T) {
	hot := &cannedDailySales{}
	c := withHotDailySales(t, hot)

	manager := newUser(t, uuid.New(), "MANAGER")
	day := time.Now().UTC().Format(time.DateOnly)
	path := "/v1/reports/daily-sales?from=" + day + "&to=" + day
	items := func(r resp) []any { its, _ := r.json(t)["items"].([]any); return its }

	r := must(t, c.do(request{method: "GET", path: path, user: &manager}), 200)
	if its := items(r); len(its) != 1 || its[0].(map[string]any)["count"].(float64) != 7 || hot.calls.Load() != 1 {
		t.Fatalf("without X-Min-Position: %s (%d hot calls), want the hot reader's row", r.body, hot.calls.Load())
	}
	for _, req := range []request{
		{method: "GET", path: path, user: &manager, headers: map[string]string{"X-Min-Position": "0.0"}},
		{method: "GET", path: path + "&min_position=0.0", user: &manager},
	} {
		r := must(t, c.do(req), 200)
		if len(items(r)) != 0 || hot.calls.Load() != 1 {
			t.Fatalf("with a minimum position: %s (%d hot calls), want the read model's empty list", r.body, hot.calls.Load())
		}
	}
}

// threeBranches answers three rows of one day, in the report's order.
type threeBranches struct{}

func (threeBranches) DailySales(_ context.Context, _ uuid.UUID, from, _ time.Time, _ *uuid.UUID) ([]queries.DaySales, error) {
	var out []queries.DaySales
	for i := range 3 {
		out = append(out, queries.DaySales{BranchID: uuid.MustParse("0193a5c0-0000-7000-8000-00000000000" + string(rune('1'+i))), Date: from, Currency: "IDR", Count: int64(i + 1)})
	}
	return out, nil
}

// Today's report from the hot reader pages like the read model's: limit,
// then next_cursor to the rest, each row once.
func TestDailySalesPagesThroughHotReads(t *testing.T) {
	c := withHotDailySales(t, threeBranches{})
	manager := newUser(t, uuid.New(), "MANAGER")
	day := time.Now().UTC().Format(time.DateOnly)
	path := "/v1/reports/daily-sales?from=" + day + "&to=" + day + "&limit=2"
	first := must(t, c.do(request{method: "GET", path: path, user: &manager}), 200).json(t)
	cursor, _ := first["next_cursor"].(string)
	if its := first["items"].([]any); len(its) != 2 || cursor == "" {
		t.Fatalf("first page: %v, want two rows and a cursor", first)
	}
	second := must(t, c.do(request{method: "GET", path: path + "&cursor=" + cursor, user: &manager}), 200).json(t)
	its := second["items"].([]any)
	if _, more := second["next_cursor"]; len(its) != 1 || more || its[0].(map[string]any)["count"].(float64) != 3 {
		t.Fatalf("second page: %v, want the third row alone, and no cursor", second)
	}
}
