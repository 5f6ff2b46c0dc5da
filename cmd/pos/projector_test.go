package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"pos/internal/pgtest"
	"pos/internal/testlog"
)

// `pos projector` serves its workers' metrics on POS_METRICS_ADDR, and
// stops cleanly with its context.
func TestProjectorServesItsMetrics(t *testing.T) {
	url := pgtest.NewEmptyDatabase(t)
	addr := freeAddr(t)
	vars := map[string]string{"DATABASE_URL": url, "NATS_URL": "nats://127.0.0.1:4222", "POS_METRICS_ADDR": addr, "REDIS_URL": "redis://127.0.0.1:6379/0"}
	logs := &testlog.Buffer{}
	if err := run(context.Background(), []string{"migrate"}, env(vars), logs, logs); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"projector"}, env(vars), logs, logs) }()
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(path string) (int, string) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := get("/healthz"); code == http.StatusOK {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("projector stopped: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /healthz on %s after 30s\n%s", addr, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics: %d %.200s", code, body)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("projector returned %v\n%s", err, logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("projector did not stop within 30s")
	}
}
