package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The server's /metrics (Prometheus text, internal/telemetry), read before
// and after a run: the cache hit rate and the projection lag come from the
// difference of two snapshots, so earlier traffic does not count.

// Series the read-side report uses (OpenTelemetry names as the Prometheus
// exporter writes them).
const (
	metricCacheHits      = "pos_cache_hits_total"
	metricCacheMisses    = "pos_cache_misses_total"
	metricCacheFallbacks = "pos_cache_fallbacks_total"
	metricProjEvents     = "pos_projection_events_total"
	metricProjLag        = "pos_projection_lag_seconds"
	metricRelayLag       = "pos_relay_lag_seconds"
)

// promSample is one line of the text format: a series and its value.
type promSample struct {
	labels map[string]string
	value  float64
}

// promText is a parsed exposition: samples by metric name (a histogram's
// series are NAME_bucket, NAME_sum and NAME_count).
type promText map[string][]promSample

// parseProm reads the Prometheus text exposition format (version 0.0.4):
// comments and blank lines are skipped; each other line is a name, optional
// {labels} and a value, then an optional timestamp, which is ignored.
func parseProm(r io.Reader) (promText, error) {
	out := promText{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, s, err := parsePromLine(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", n, err)
		}
		out[name] = append(out[name], s)
	}
	return out, sc.Err()
}

func parsePromLine(line string) (string, promSample, error) {
	s := promSample{labels: map[string]string{}}
	end := strings.IndexAny(line, "{ \t")
	if end <= 0 {
		return "", s, fmt.Errorf("no value in %q", line)
	}
	name, rest := line[:end], line[end:]
	if rest[0] == '{' {
		var err error
		if rest, err = parseLabels(rest[1:], s.labels); err != nil {
			return "", s, fmt.Errorf("%s: %w", name, err)
		}
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || len(fields) > 2 {
		return "", s, fmt.Errorf("%s: want a value and an optional timestamp, got %q", name, rest)
	}
	v, err := strconv.ParseFloat(fields[0], 64) // also +Inf, -Inf, NaN
	if err != nil {
		return "", s, fmt.Errorf("%s: value %q: %w", name, fields[0], err)
	}
	s.value = v
	return name, s, nil
}

// parseLabels reads `a="x",b="y"}` into into and returns what follows the
// closing brace. Values may hold \\, \" and \n escapes.
func parseLabels(s string, into map[string]string) (string, error) {
	for {
		s = strings.TrimLeft(s, " \t")
		if strings.HasPrefix(s, "}") {
			return s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || len(s) < eq+2 || s[eq+1] != '"' {
			return "", fmt.Errorf("bad label at %q", s)
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var v strings.Builder
		closed := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(s[i])
				}
				continue
			}
			if c == '"' {
				s, closed = s[i+1:], true
				break
			}
			v.WriteByte(c)
		}
		if !closed {
			return "", fmt.Errorf("label %s: unterminated value", key)
		}
		into[key] = v.String()
		s = strings.TrimLeft(s, " \t")
		if strings.HasPrefix(s, ",") {
			s = s[1:]
		}
	}
}

// sum adds every series of name that keep accepts (nil: all); 0 when there
// is none.
func (p promText) sum(name string, keep func(labels map[string]string) bool) float64 {
	var t float64
	for _, s := range p[name] {
		if keep == nil || keep(s.labels) {
			t += s.value
		}
	}
	return t
}

// readModels keeps the series of the runner that applies the transactions
// read model (GET /v1/transactions/{id} reads it): the projection
// instruments carry the runner's projectors joined by "+", and a server may
// run other runners (process managers). Series without that label (an older
// server) are kept.
func readModels(labels map[string]string) bool {
	v, ok := labels["projectors"]
	return !ok || slices.Contains(strings.Split(v, "+"), "transactions")
}

// bucket is one cumulative histogram bucket: Count observations ≤ LE.
type bucket struct {
	LE    float64
	Count float64
}

// histogram returns name's cumulative buckets of the series keep accepts
// (nil: all), summed over every label but le, sorted by upper bound (the
// last is +Inf).
func (p promText) histogram(name string, keep func(labels map[string]string) bool) []bucket {
	byLE := map[float64]float64{}
	for _, s := range p[name+"_bucket"] {
		if keep != nil && !keep(s.labels) {
			continue
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			continue
		}
		byLE[le] += s.value
	}
	out := make([]bucket, 0, len(byLE))
	for le, c := range byLE {
		out = append(out, bucket{le, c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LE < out[j].LE })
	return out
}

// subBuckets returns after − before, bucket by bucket (before may be
// empty: the histogram did not exist yet).
func subBuckets(after, before []bucket) []bucket {
	prev := make(map[float64]float64, len(before))
	for _, b := range before {
		prev[b.LE] = b.Count
	}
	out := make([]bucket, len(after))
	for i, b := range after {
		out[i] = bucket{b.LE, b.Count - prev[b.LE]}
	}
	return out
}

// quantile estimates the q-quantile (0 ≤ q ≤ 1) of cumulative buckets the
// way PromQL's histogram_quantile does: find the bucket holding rank q×total
// and interpolate linearly within it, the first bucket starting at 0 (for a
// positive bound). A rank in the +Inf bucket answers the highest finite
// bound. NaN when there are no observations or no +Inf bucket.
func quantile(q float64, bs []bucket) float64 {
	if len(bs) == 0 || !math.IsInf(bs[len(bs)-1].LE, +1) || q < 0 || q > 1 {
		return math.NaN()
	}
	total := bs[len(bs)-1].Count
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	for i, b := range bs {
		if b.Count < rank {
			continue
		}
		if math.IsInf(b.LE, +1) {
			if i == 0 {
				return math.NaN()
			}
			return bs[i-1].LE
		}
		lower, below := 0.0, 0.0
		if i > 0 {
			lower, below = bs[i-1].LE, bs[i-1].Count
		} else if b.LE <= 0 {
			return b.LE
		}
		in := b.Count - below
		if in <= 0 {
			return b.LE
		}
		return lower + (b.LE-lower)*(rank-below)/in
	}
	return math.NaN() // not reached: the +Inf bucket holds every rank
}

// readSnapshot is what one /metrics read says about the read side.
type readSnapshot struct {
	at                              time.Time
	hits, misses, fallbacks, events float64
	lag                             []bucket
	relayLag                        []bucket // empty from a server without pos_relay_lag_seconds
}

// scrape reads base/metrics.
func scrape(ctx context.Context, client *http.Client, base string) (readSnapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return readSnapshot{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return readSnapshot{}, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readSnapshot{}, fmt.Errorf("metrics: %s", resp.Status)
	}
	p, err := parseProm(resp.Body)
	if err != nil {
		return readSnapshot{}, err
	}
	transactions := func(l map[string]string) bool { return l["kind"] == "" || l["kind"] == "transaction" }
	return readSnapshot{at: time.Now(), hits: p.sum(metricCacheHits, transactions), misses: p.sum(metricCacheMisses, transactions),
		fallbacks: p.sum(metricCacheFallbacks, transactions), events: p.sum(metricProjEvents, readModels),
		lag: p.histogram(metricProjLag, readModels), relayLag: p.histogram(metricRelayLag, nil)}, nil
}

// readSide is the difference between two snapshots.
type readSide struct {
	Seconds      float64 `json:"seconds"`
	Hits         float64 `json:"cache_hits"`
	Misses       float64 `json:"cache_misses"`
	Fallbacks    float64 `json:"cache_fallbacks"`
	HitRate      float64 `json:"cache_hit_rate"` // hits ÷ (hits + misses + fallbacks); NaN without reads
	Events       float64 `json:"projection_events"`
	EventsPerSec float64 `json:"projection_events_per_s"`
	LagCount     float64 `json:"lag_observations"`
	LagP50       float64 `json:"lag_p50_ms"`
	LagP99       float64 `json:"lag_p99_ms"`
	// LagTop is the histogram's highest finite bound (ms): a quantile
	// beyond it is reported as LagTop, so read it as "more than".
	LagTop float64 `json:"lag_top_bucket_ms"`
	// Drained is false when the projections were still applying events
	// when the watch gave up waiting (the lag then misses the slowest).
	Drained bool `json:"drained"`
	// RelayLagP50 and RelayLagP99 are the quantiles (ms) of the part of
	// the lag before the broker (append to JetStream's acknowledgement,
	// pos_relay_lag_seconds) over the same window as the lag's; NaN from
	// diff when the server reports none (it predates the metric, or its
	// relay runs in another process), -1 in a report (JSON has no NaN).
	// The relay's histogram has the projections' buckets
	// (projections.LagBuckets), so LagTop bounds both.
	RelayLagP50 float64 `json:"relay_lag_p50_ms"`
	RelayLagP99 float64 `json:"relay_lag_p99_ms"`
}

// reportable replaces what JSON cannot hold (NaN: no reads, no lag) by -1,
// in every field that can be NaN.
func (d *readSide) reportable() {
	d.HitRate, d.LagP50, d.LagP99 = jsonFloat(d.HitRate), jsonFloat(d.LagP50), jsonFloat(d.LagP99)
	d.RelayLagP50, d.RelayLagP99 = jsonFloat(d.RelayLagP50), jsonFloat(d.RelayLagP99)
}

// diff returns what happened between before and after. Events and lag may
// be taken from a later snapshot (drained) than the rate's end (after), so
// that events appended in the window but applied just after it count.
func diff(before, after, drained readSnapshot) readSide {
	d := readSide{
		Seconds:   after.at.Sub(before.at).Seconds(),
		Hits:      after.hits - before.hits,
		Misses:    after.misses - before.misses,
		Fallbacks: after.fallbacks - before.fallbacks,
		Events:    after.events - before.events,
	}
	d.HitRate = math.NaN()
	if reads := d.Hits + d.Misses + d.Fallbacks; reads > 0 {
		d.HitRate = d.Hits / reads
	}
	if d.Seconds > 0 {
		d.EventsPerSec = d.Events / d.Seconds
	}
	lag := subBuckets(drained.lag, before.lag)
	if len(lag) > 0 {
		d.LagCount = lag[len(lag)-1].Count
	}
	if len(lag) > 1 {
		d.LagTop = lag[len(lag)-2].LE * 1000
	}
	d.LagP50, d.LagP99 = quantile(0.50, lag)*1000, quantile(0.99, lag)*1000
	d.RelayLagP50, d.RelayLagP99 = math.NaN(), math.NaN()
	if relay := subBuckets(drained.relayLag, before.relayLag); len(relay) > 0 && relay[len(relay)-1].Count > 0 {
		d.RelayLagP50, d.RelayLagP99 = quantile(0.50, relay)*1000, quantile(0.99, relay)*1000
	}
	return d
}

// sideWatch follows the read side during a sales run (-read-side): a
// snapshot when the measured window starts, one when the load stops, and
// one when the projections have drained.
type sideWatch struct {
	client *http.Client
	base   string
	done   chan struct{}
	before readSnapshot
	err    error
}

// watchReadSide takes the first snapshot at from, in the background.
func watchReadSide(ctx context.Context, base string, from time.Time) *sideWatch {
	w := &sideWatch{client: &http.Client{Timeout: 10 * time.Second}, base: base, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		select {
		case <-ctx.Done():
			w.err = ctx.Err()
			return
		case <-time.After(time.Until(from)):
		}
		w.before, w.err = scrape(ctx, w.client, base)
	}()
	return w
}

// finish takes the load's end snapshot, waits until the projections have
// applied nothing new for a while (at most drainMax), and returns the
// difference: events/s over the window, lag over every event applied
// from its start to the drain (or to drainMax).
func (w *sideWatch) finish(ctx context.Context) (*readSide, error) {
	<-w.done
	if w.err != nil {
		return nil, w.err
	}
	after, err := scrape(ctx, w.client, w.base)
	if err != nil {
		return nil, err
	}
	const poll, quiet, drainMax = 200 * time.Millisecond, 3, 3 * time.Minute
	drained, still := after, 0
	for deadline := time.Now().Add(drainMax); still < quiet && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
		s, err := scrape(ctx, w.client, w.base)
		if err != nil {
			return nil, err
		}
		if s.events == drained.events {
			still++
		} else {
			still = 0
		}
		drained = s
	}
	d := diff(w.before, after, drained)
	d.Drained = still >= quiet
	d.reportable()
	return &d, nil
}
