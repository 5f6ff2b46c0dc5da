package api_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"pos/api"
	"pos/api/auth"
	"pos/cache"
	"pos/queries"
)

// readyEnv is e's store and pool served by a second API with the given
// readiness checks; its responses are validated against the document too.
func readyEnv(t *testing.T, e *env, required, optional map[string]api.ReadyCheck) *env {
	t.Helper()
	v, err := auth.NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Config{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: e.store, Verifier: v, Pool: e.pool,
		ReadyChecks: required, OptionalChecks: optional,
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	c := e.sub(t)
	c.url = ts.URL
	return c
}

func ok(context.Context) error { return nil }

func down(context.Context) error { return errors.New("connection refused") }

func TestReadyzChecks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	qpool, err := queries.ConnectSized(ctx, e.dbURL, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(qpool.Close)
	redisDown, err := cache.NewClient("redis://127.0.0.1:1/0", 0) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = redisDown.Close() })
	hot, err := cache.New(redisDown, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		code   int
		status string
		checks map[string]string
	}
	for _, c := range []struct {
		name               string
		required, optional map[string]api.ReadyCheck
		want               want
	}{
		{"without extra checks", nil, nil,
			want{200, "ok", map[string]string{"event_store": "ok", "database": "ok"}}},
		{"everything answers",
			map[string]api.ReadyCheck{"broker": ok, "read_store": qpool.Ping}, map[string]api.ReadyCheck{"cache": ok},
			want{200, "ok", map[string]string{"event_store": "ok", "database": "ok", "broker": "ok", "read_store": "ok", "cache": "ok"}}},
		{"broker down",
			map[string]api.ReadyCheck{"broker": down, "read_store": qpool.Ping}, map[string]api.ReadyCheck{"cache": ok},
			want{503, "unavailable", map[string]string{"event_store": "ok", "database": "ok", "broker": "unreachable", "read_store": "ok", "cache": "ok"}}},
		{"read store down",
			map[string]api.ReadyCheck{"broker": ok, "read_store": down}, nil,
			want{503, "unavailable", map[string]string{"event_store": "ok", "database": "ok", "broker": "ok", "read_store": "unreachable"}}},
		{"Redis down",
			map[string]api.ReadyCheck{"broker": ok, "read_store": qpool.Ping}, map[string]api.ReadyCheck{"cache": hot.Ping},
			want{200, "degraded", map[string]string{"event_store": "ok", "database": "ok", "broker": "ok", "read_store": "ok", "cache": "degraded"}}},
		{"Redis and broker down",
			map[string]api.ReadyCheck{"broker": down}, map[string]api.ReadyCheck{"cache": down},
			want{503, "unavailable", map[string]string{"event_store": "ok", "database": "ok", "broker": "unreachable", "cache": "degraded"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := readyEnv(t, e, c.required, c.optional).do(request{method: "GET", path: "/readyz"})
			must(t, r, c.want.code)
			body := r.json(t)
			if body["status"] != c.want.status {
				t.Errorf("status %v, want %s", body["status"], c.want.status)
			}
			got, _ := body["checks"].(map[string]any)
			if len(got) != len(c.want.checks) {
				t.Errorf("checks %v, want %v", got, c.want.checks)
			}
			for name, v := range c.want.checks {
				if got[name] != v {
					t.Errorf("checks.%s = %v, want %s (all: %v)", name, got[name], v, got)
				}
			}
		})
	}
}

// A check that never returns fails readiness at the deadline, named, and
// does not hold the others' answers back.
func TestReadyzCheckThatHangs(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hang := func(context.Context) error { <-release; return nil } // ignores its context
	start := time.Now()
	r := must(t, readyEnv(t, e, map[string]api.ReadyCheck{"broker": hang, "read_store": ok}, nil).do(request{method: "GET", path: "/readyz"}), 503)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("/readyz took %s", d)
	}
	checks := r.json(t)["checks"].(map[string]any)
	if checks["broker"] != "unreachable" || checks["read_store"] != "ok" || checks["database"] != "ok" {
		t.Fatalf("checks %v", checks)
	}
}
