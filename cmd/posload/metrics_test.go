package main

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// exposition is what the server's /metrics looks like (trimmed): the read
// models' runner's histogram split over two label sets (escapes in the
// values), another runner's beside it, cache counters of two kinds, and a
// timestamp on one line.
const exposition = `# HELP pos_cache_hits_total reads answered from Redis
# TYPE pos_cache_hits_total counter
pos_cache_hits_total{kind="transaction"} 90
pos_cache_hits_total{kind="daily"} 5
pos_cache_misses_total{kind="transaction"} 5
pos_projection_events_total{projectors="merchant_settings+transactions"} 1000 1732540000000
pos_projection_events_total{projectors="stock_process"} 7

# TYPE pos_projection_lag_seconds histogram
pos_projection_lag_seconds_bucket{projectors="merchant_settings+transactions",worker="a",le="0.001"} 0
pos_projection_lag_seconds_bucket{projectors="merchant_settings+transactions",worker="a",le="0.01"} 40
pos_projection_lag_seconds_bucket{projectors="merchant_settings+transactions",worker="a",le="0.1"} 49
pos_projection_lag_seconds_bucket{projectors="merchant_settings+transactions",worker="a",le="+Inf"} 50
pos_projection_lag_seconds_bucket{worker="b \"x\", \\y",projectors="transactions",le="0.001"} 0
pos_projection_lag_seconds_bucket{worker="b \"x\", \\y",projectors="transactions",le="0.01"} 40
pos_projection_lag_seconds_bucket{worker="b \"x\", \\y",projectors="transactions",le="0.1"} 49
pos_projection_lag_seconds_bucket{worker="b \"x\", \\y",projectors="transactions",le="+Inf"} 50
pos_projection_lag_seconds_bucket{projectors="stock_process",le="0.001"} 3
pos_projection_lag_seconds_bucket{projectors="stock_process",le="0.01"} 3
pos_projection_lag_seconds_bucket{projectors="stock_process",le="0.1"} 3
pos_projection_lag_seconds_bucket{projectors="stock_process",le="+Inf"} 3
pos_projection_lag_seconds_sum 1.5
pos_projection_lag_seconds_count 100
`

func TestParseProm(t *testing.T) {
	p, err := parseProm(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.sum(metricCacheHits, nil); got != 95 {
		t.Errorf("hits summed over labels = %v, want 95", got)
	}
	if got := p.sum(metricProjEvents, readModels); got != 1000 {
		t.Errorf("read models' events (line with a timestamp) = %v, want 1000", got)
	}
	if got := p.sum(metricProjEvents, nil); got != 1007 {
		t.Errorf("every runner's events = %v, want 1007", got)
	}
	if got := p.sum(metricCacheFallbacks, nil); got != 0 {
		t.Errorf("absent series = %v, want 0", got)
	}
	if w := p[metricProjLag+"_bucket"][4].labels["worker"]; w != `b "x", \y` {
		t.Errorf("escaped label value = %q", w)
	}
	want := []bucket{{0.001, 0}, {0.01, 80}, {0.1, 98}, {math.Inf(1), 100}}
	got := p.histogram(metricProjLag, readModels) // not stock_process's
	if len(got) != len(want) {
		t.Fatalf("buckets %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("bucket %d = %v, want %v", i, got[i], want[i])
		}
	}
	if !readModels(map[string]string{"le": "0.1"}) || readModels(map[string]string{"projectors": "transactions_v2+stock"}) {
		t.Error("readModels: keeps series without projectors, and only runners with the transactions projector")
	}
	for _, bad := range []string{"novalue", `m{a="x} 1`, `m{a=x} 1`, "m one", "m 1 2 3"} {
		if _, err := parseProm(strings.NewReader(bad)); err == nil {
			t.Errorf("parseProm(%q) accepted it", bad)
		}
	}
}

func TestQuantile(t *testing.T) {
	bs := []bucket{{0.001, 0}, {0.01, 80}, {0.1, 98}, {math.Inf(1), 100}}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
	for _, c := range []struct{ q, want float64 }{
		{0.5, 0.001 + 0.009*50/80}, // rank 50: 50 of the 80 in (1ms, 10ms]
		{0.8, 0.01},                // exactly the bucket's top
		{0.9, 0.01 + 0.09*10/18},   // rank 90: 10 of the 18 in (10ms, 100ms]
		{0.99, 0.1},                // rank 99 is in +Inf: the highest finite bound
		{0.0, 0.001},               // rank 0: the first bucket's bound (it is empty)
	} {
		if got := quantile(c.q, bs); !near(got, c.want) {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	// The first bucket starts at 0.
	if got := quantile(0.5, []bucket{{0.002, 10}, {math.Inf(1), 10}}); !near(got, 0.001) {
		t.Errorf("quantile in the first bucket = %v, want 0.001", got)
	}
	for name, bs := range map[string][]bucket{
		"empty":          nil,
		"no observation": {{0.01, 0}, {math.Inf(1), 0}},
		"no +Inf":        {{0.01, 3}, {0.1, 5}},
	} {
		if got := quantile(0.5, bs); !math.IsNaN(got) {
			t.Errorf("%s: quantile = %v, want NaN", name, got)
		}
	}
}

func TestDiff(t *testing.T) {
	t0 := time.Now()
	before := readSnapshot{at: t0, hits: 100, misses: 10, events: 500,
		lag:      []bucket{{0.01, 10}, {0.1, 10}, {math.Inf(1), 10}},
		relayLag: []bucket{{0.01, 0}, {0.1, 40}, {math.Inf(1), 40}}}
	after := readSnapshot{at: t0.Add(2 * time.Second), hits: 1000, misses: 20, fallbacks: 0, events: 2500,
		relayLag: []bucket{{0.01, 70}, {0.1, 120}, {math.Inf(1), 120}}}
	drained := readSnapshot{at: t0.Add(3 * time.Second), events: 2600,
		// 100 new observations: 50 up to 10 ms, 50 in (10, 100] ms.
		lag: []bucket{{0.01, 60}, {0.1, 110}, {math.Inf(1), 110}},
		// The relay's since before: 100 new, all up to 10 ms (after, at the
		// load's end, is not the window's end).
		relayLag: []bucket{{0.01, 100}, {0.1, 140}, {math.Inf(1), 140}}}
	d := diff(before, after, drained)
	if d.Hits != 900 || d.Misses != 10 || math.Abs(d.HitRate-900.0/910) > 1e-12 {
		t.Errorf("cache %+v", d)
	}
	if d.Events != 2000 || d.EventsPerSec != 1000 {
		t.Errorf("events %v at %v/s, want 2000 at 1000/s (up to the load's end, not the drain)", d.Events, d.EventsPerSec)
	}
	if d.LagCount != 100 || math.Abs(d.LagP50-10) > 1e-9 || math.Abs(d.LagP99-(10+90*49.0/50)) > 1e-9 {
		t.Errorf("lag over %v: p50 %v ms, p99 %v ms", d.LagCount, d.LagP50, d.LagP99)
	}
	if d.LagTop != 100 {
		t.Errorf("top bucket %v ms, want 100", d.LagTop)
	}
	if math.Abs(d.RelayLagP50-5) > 1e-9 || math.Abs(d.RelayLagP99-9.9) > 1e-9 {
		t.Errorf("relay lag p50 %v ms, p99 %v ms, want 5 and 9.9", d.RelayLagP50, d.RelayLagP99)
	}
	empty := diff(before, before, before)
	if !math.IsNaN(empty.HitRate) || !math.IsNaN(empty.RelayLagP50) || !math.IsNaN(empty.RelayLagP99) {
		t.Errorf("without reads or a relay: hit rate %v, relay lag %v/%v, want NaN", empty.HitRate, empty.RelayLagP50, empty.RelayLagP99)
	}
	// A report holds -1 where there is nothing to say: JSON has no NaN.
	empty.reportable()
	if _, err := json.Marshal(empty); err != nil || empty.HitRate != -1 || empty.RelayLagP50 != -1 || empty.RelayLagP99 != -1 {
		t.Errorf("reportable: %v, hit rate %v, relay lag %v/%v, want -1", err, empty.HitRate, empty.RelayLagP50, empty.RelayLagP99)
	}
}

func TestReadTargetsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids.txt")
	want := []readTarget{{0, uuid.New()}, {3, uuid.New()}}
	if err := writeReadTargets(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readReadTargets(path, 4)
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("read back %v, %v; want %v", got, err, want)
	}
	if _, err := readReadTargets(path, 3); err == nil {
		t.Error("a token index beyond the tokens given was accepted")
	}
}
