package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/queries"
)

var t0 = time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC)

// redisClient connects to REDIS_URL (default the local server) or skips.
func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	rdb, err := NewClient(url, 5*time.Second) // generous: the whole suite shares the machine
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Skipf("Redis at %s is not reachable (scripts/services.sh starts it): %v", url, err)
	}
	return rdb
}

// world is a sale, a projections runner that invalidates c after each
// commit, and a cached reader over PostgreSQL.
type world struct {
	env    *projtest.Env
	sale   *projtest.Sale
	runner *projections.Runner
	pg     *queries.Reader
	cache  *Cache
	reader *Reader
	pos    eventstore.Position
	meter  *sdkmetric.ManualReader
}

func newWorld(t *testing.T, rdb *redis.Client) *world {
	t.Helper()
	timeout := 5 * time.Second // generous with Redis up: the race detector and 100 readers are slow
	if rdb.Options().Addr == "127.0.0.1:1" {
		timeout = 0 // the default 50 ms, as in production
	}
	return newWorldTimeout(t, rdb, timeout)
}

// newWorldTimeout is newWorld with the cache's timeout (0: the default).
func newWorldTimeout(t *testing.T, rdb *redis.Client, timeout time.Duration) *world {
	t.Helper()
	env := projtest.New(t)
	w := &world{env: env, meter: sdkmetric.NewManualReader()}
	var err error
	w.cache, err = New(rdb, Options{Timeout: timeout, Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(w.meter)).Meter("test")})
	if err != nil {
		t.Fatal(err)
	}
	w.runner, err = projections.NewRunner(env.Pool, env.Store, projections.Options{AfterCommit: w.cache.Invalidate}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := queries.ConnectSized(context.Background(), env.URL, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	key, err := queries.NewCursorKey(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	if w.pg, err = queries.New(pool, key); err != nil {
		t.Fatal(err)
	}
	w.reader = NewReader(w.cache, w.pg)
	w.sale = env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "C-001", t0)
	w.project(t)
	return w
}

// project applies every new event (and so invalidates the cache).
func (w *world) project(t *testing.T) {
	t.Helper()
	pos, err := w.runner.Catchup(context.Background(), w.pos)
	if err != nil {
		t.Fatalf("Catchup: %v", err)
	}
	w.pos = pos
}

func (w *world) version() uint64 { return w.sale.Aggregate().Version() }

// counter returns the sum of a counter's points.
func (w *world) counter(t *testing.T, name string) int64 {
	t.Helper()
	return w.kindCounter(t, name, "")
}

// kindCounter returns the sum of a counter's points of one kind (every
// kind when kind is "").
func (w *world) kindCounter(t *testing.T, name, kind string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := w.meter.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if v, ok := p.Attributes.Value("kind"); kind == "" || ok && v.AsString() == kind {
					n += p.Value
				}
			}
		}
	}
	return n
}

// concurrently runs read n times at once and fails on the first error.
func concurrently(t *testing.T, n int, read func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if err := read(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// readMany reads the sale concurrently n times and fails on any version
// other than want.
func (w *world) readMany(t *testing.T, n int, want uint64) {
	t.Helper()
	concurrently(t, n, func() error {
		got, err := w.reader.GetTransaction(context.Background(), w.sale.Merchant, w.sale.ID)
		if err != nil {
			return err
		}
		if got.Version != want {
			return fmt.Errorf("stale read: version %d, want %d", got.Version, want)
		}
		return nil
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNoStaleReadAfterUpdates(t *testing.T) {
	rdb := redisClient(t)
	w := newWorld(t, rdb)
	updates := []func(){
		func() { w.sale.AddItem("TEA", 1, 10_000, 1_100, t0) },
		func() { w.sale.AddItem("CAKE", 2, 25_000, 1_100, t0) },
		func() { w.sale.DiscountPercent(1_000, t0) },
		func() { w.sale.Checkout(t0) },
		func() { w.sale.PayDue(t0) },
		func() { w.sale.Complete(t0) },
	}
	w.readMany(t, 100, w.version()) // fills the cache
	for i, update := range updates {
		before := w.counter(t, "pos.cache.hits")
		update()
		w.project(t)
		w.readMany(t, 100, w.version()) // concurrent misses fill it
		w.readMany(t, 1, w.version())
		w.readMany(t, 1, w.version())
		if w.counter(t, "pos.cache.hits") == before {
			t.Fatalf("update %d: no cache hit after it was filled", i)
		}
	}
	key := TransactionKey(w.sale.Merchant, w.sale.ID)
	if v, _, ok, err := w.cache.get(context.Background(), key); err != nil || !ok || v != w.version() {
		t.Fatalf("entry: version %d, present %v, err %v; want version %d", v, ok, err, w.version())
	}
	if n := w.counter(t, "pos.cache.fallbacks"); n != 0 {
		t.Fatalf("%d fallbacks with Redis up", n)
	}
}

// lateGetter reads PostgreSQL, then runs between (once) before answering:
// the reader's fill comes after whatever between does.
type lateGetter struct {
	next    TransactionGetter
	between func()
	once    sync.Once
}

func (g *lateGetter) GetTransaction(ctx context.Context, merchant, id uuid.UUID) (queries.Transaction, error) {
	t, err := g.next.GetTransaction(ctx, merchant, id)
	g.once.Do(g.between)
	return t, err
}

func TestLateFillNeverLeavesStaleEntry(t *testing.T) {
	rdb := redisClient(t)
	w := newWorld(t, rdb)
	w.sale.AddItem("TEA", 1, 10_000, 1_100, t0)
	w.project(t)
	v := w.version()
	// The reader misses, reads v from PostgreSQL; the projector then commits
	// v+1 and invalidates; only then does the reader fill with v.
	late := NewReader(w.cache, &lateGetter{next: w.pg, between: func() {
		w.sale.AddItem("CAKE", 1, 25_000, 1_100, t0)
		w.project(t)
	}})
	got, err := late.GetTransaction(context.Background(), w.sale.Merchant, w.sale.ID)
	if err != nil || got.Version != v {
		t.Fatalf("late read: version %d, err %v; want %d (what PostgreSQL had)", got.Version, err, v)
	}
	key := TransactionKey(w.sale.Merchant, w.sale.ID)
	if cv, _, ok, err := w.cache.get(context.Background(), key); err != nil || ok {
		t.Fatalf("late fill with version %d stored (entry version %d, err %v); the marker should refuse it", v, cv, err)
	}
	w.readMany(t, 100, v+1)

	// A fill older than the entry never replaces it either.
	stale, err := w.pg.GetTransaction(context.Background(), w.sale.Merchant, w.sale.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cache.fill(context.Background(), key, v, []byte(`{"Version":1}`)); err != nil {
		t.Fatal(err)
	}
	if cv, _, ok, err := w.cache.get(context.Background(), key); err != nil || !ok || cv != stale.Version {
		t.Fatalf("entry version %d (present %v, err %v) after an older fill; want %d", cv, ok, err, stale.Version)
	}

	// A fill that lands before the invalidation is deleted by it.
	w.sale.Checkout(t0)
	if err := w.cache.fill(context.Background(), key, w.version()-1, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	w.project(t)
	if _, _, ok, err := w.cache.get(context.Background(), key); err != nil || ok {
		t.Fatalf("entry survived the invalidation (present %v, err %v)", ok, err)
	}
	w.readMany(t, 100, w.version())
}

func TestRedisDownFallsBackToPostgres(t *testing.T) {
	rdb, err := NewClient("redis://127.0.0.1:1/0", 0) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	w := newWorld(t, rdb) // the runner's invalidations fail, and are counted
	for _, sku := range []string{"TEA", "CAKE"} {
		w.sale.AddItem(sku, 1, 10_000, 1_100, t0)
		w.project(t)
		start := time.Now()
		w.readMany(t, 20, w.version())
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("20 reads took %s with Redis down", d)
		}
	}
	want, err := w.pg.GetTransaction(context.Background(), w.sale.Merchant, w.sale.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.reader.GetTransaction(context.Background(), w.sale.Merchant, w.sale.ID)
	if err != nil || got.Version != want.Version || got.Totals != want.Totals || len(got.Lines) != 2 {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	if n := w.counter(t, "pos.cache.fallbacks"); n < 41 {
		t.Fatalf("fallback counter %d, want at least 41", n)
	}
	if n := w.counter(t, "pos.cache.invalidation.errors"); n == 0 {
		t.Fatal("failed invalidations were not counted")
	}
	if _, err := w.reader.GetTransaction(context.Background(), w.sale.Merchant, projtest.NewID(t)); !errors.Is(err, queries.ErrNotFound) {
		t.Fatalf("missing transaction: %v, want ErrNotFound", err)
	}
}

func TestHitReturnsWhatPostgresReturned(t *testing.T) {
	rdb := redisClient(t)
	w := newWorld(t, rdb)
	w.sale.AddItem("TEA", 3, 10_000, 1_100, t0)
	w.sale.Checkout(t0)
	w.sale.PayDue(t0)
	w.project(t)
	want, err := w.pg.GetTransaction(context.Background(), w.sale.Merchant, w.sale.ID)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a miss, then a hit
		got, err := w.reader.GetTransaction(context.Background(), w.sale.Merchant, w.sale.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.OpenedAt.Equal(want.OpenedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
			t.Fatalf("times: got %v/%v, want %v/%v", got.OpenedAt, got.UpdatedAt, want.OpenedAt, want.UpdatedAt)
		}
		got.OpenedAt, got.UpdatedAt = want.OpenedAt, want.UpdatedAt
		if g, wnt := mustJSON(t, got), mustJSON(t, want); g != wnt {
			t.Fatalf("got %s\nwant %s", g, wnt)
		}
	}
	if h, m := w.counter(t, "pos.cache.hits"), w.counter(t, "pos.cache.misses"); h != 1 || m != 1 {
		t.Fatalf("hits %d, misses %d; want 1 and 1", h, m)
	}
	// Another merchant's key is another key: the entry is never shared.
	if _, err := w.reader.GetTransaction(context.Background(), projtest.NewID(t), w.sale.ID); !errors.Is(err, queries.ErrNotFound) {
		t.Fatalf("another merchant: %v, want ErrNotFound", err)
	}
}

// freezer is a TCP proxy to the real Redis that can stop forwarding while
// keeping every connection open: a Redis that hangs, not one that is down.
type freezer struct {
	ln     net.Listener
	frozen atomic.Bool
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			t.Cleanup(func() { _ = in.Close(); _ = out.Close() })
			go f.pipe(out, in)
			go f.pipe(in, out)
		}
	}()
	return f
}

// frozenRedis returns a freezer in front of the real Redis (the test is
// skipped when Redis is not there) and a client through it, with the
// production defaults.
func frozenRedis(t *testing.T) (*freezer, *redis.Client) {
	t.Helper()
	direct := redisClient(t)
	f := newFreezer(t, direct.Options().Addr)
	rdb, err := NewClient("redis://"+f.ln.Addr().String()+"/0", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return f, rdb
}

// pipe copies src to dst until either closes; while frozen, what it reads
// is held back (and dropped): the other side waits for an answer.
func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if f.frozen.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// A Redis that stops answering must not hold reads past the cache's
// timeout: they fall back to PostgreSQL, and are right.
func TestHungRedisFallsBackWithinTheTimeout(t *testing.T) {
	f, rdb := frozenRedis(t)
	w := newWorld(t, rdb)
	w.sale.AddItem("TEA", 1, 10_000, 1_100, t0)
	w.project(t)
	w.readMany(t, 1, w.version()) // filled through the proxy
	w.readMany(t, 20, w.version())
	hits := w.counter(t, "pos.cache.hits")
	if hits == 0 {
		t.Fatalf("no hit before the freeze (misses %d, fallbacks %d): the test would prove nothing",
			w.counter(t, "pos.cache.misses"), w.counter(t, "pos.cache.fallbacks"))
	}

	f.frozen.Store(true)
	start := time.Now()
	w.readMany(t, 50, w.version()) // 50 at once, each must fall back
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("50 reads took %s with Redis hung; each should give up after %s", d, DefaultTimeout)
	}
	if n := w.counter(t, "pos.cache.fallbacks"); n < 50 {
		t.Fatalf("fallback counter %d, want at least 50", n)
	}
	if n := w.counter(t, "pos.cache.hits"); n != hits {
		t.Fatalf("hits went from %d to %d while Redis was hung", hits, n)
	}
}

// A Redis stalled for longer than the timeout but shorter than the
// invalidation's retries (a busy machine): the invalidation goes through,
// and this process goes on serving from the cache rather than bypassing it
// for a whole TTL.
func TestBriefRedisStallIsWaitedOutByTheInvalidation(t *testing.T) {
	f, rdb := frozenRedis(t)
	w := newWorldTimeout(t, rdb, 0) // the default 50 ms, as in production
	w.sale.AddItem("TEA", 1, 10_000, 1_100, t0)
	w.project(t)
	w.readMany(t, 1, w.version()) // filled through the proxy

	w.sale.AddItem("COF", 1, 20_000, 1_100, t0)
	f.frozen.Store(true)
	thaw := time.AfterFunc(80*time.Millisecond, func() { f.frozen.Store(false) })
	defer thaw.Stop()
	w.project(t) // invalidates while Redis is stalled
	if n := w.counter(t, "pos.cache.invalidation.errors"); n != 0 {
		t.Fatalf("%d invalidations failed over a stall of 80 ms", n)
	}
	if w.cache.distrustUntil.Load() != 0 {
		t.Fatal("the cache is distrusted after a stall the retries outlasted")
	}
	hits := w.counter(t, "pos.cache.hits")
	w.readMany(t, 1, w.version()) // refills
	w.readMany(t, 5, w.version())
	if n := w.counter(t, "pos.cache.hits"); n < hits+5 {
		t.Fatalf("hits went from %d to %d over 5 reads of a filled entry", hits, n)
	}
}
