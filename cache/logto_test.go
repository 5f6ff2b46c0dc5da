package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"pos/cache"
	"pos/internal/testlog"
)

// What go-redis logs (here: a pool that cannot dial) comes out as JSON
// through slog, like every other line, not as its own plain text.
func TestRedisLogsGoThroughSlog(t *testing.T) {
	var out testlog.Buffer
	cache.LogTo(slog.New(slog.NewJSONHandler(&out, nil)))
	rdb, err := cache.NewClient("redis://127.0.0.1:1/0", 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	for range 3 {
		_ = rdb.Get(context.Background(), "k").Err()
	}
	deadline := time.Now().Add(5 * time.Second)
	for out.String() == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	lines := bytes.Split(bytes.TrimSpace([]byte(out.String())), []byte("\n"))
	if len(lines) == 0 || len(lines[0]) == 0 {
		t.Fatal("go-redis logged nothing through slog")
	}
	for _, l := range lines {
		var rec struct{ Level, Msg string }
		if err := json.Unmarshal(l, &rec); err != nil || rec.Level != "WARN" || len(rec.Msg) < 6 || rec.Msg[:6] != "redis:" {
			t.Errorf("log line %q: want a JSON WARN starting with redis: (%v)", l, err)
		}
	}
}
