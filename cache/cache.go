// Package cache keeps hot reads of the read models in Redis: a transaction's
// detail (GET /v1/transactions/{id}), per merchant; today's daily sales
// (see daily_sales.go for its keys and guard, a generation per merchant);
// and the first pages of stock levels (GET /v1/stock; see stock.go, the same
// guard with a generation of its own).
//
// # Keys
//
//	pos:<merchant>:tx:<id>     the entry: "<version>:<JSON of queries.Transaction>"
//	pos:<merchant>:tx:<id>:v   the invalidation marker: the newest version committed
//
// # Why no stale entry outlives an update
//
// Readers fill on a miss; the projector, after each commit (projections'
// Options.AfterCommit, wired to Cache.Invalidate), raises the marker to the
// version it committed and deletes the entry, in one script. Deleting alone
// would not do: a reader may read version v from PostgreSQL, the projector
// then commit v+1 and delete, and the reader's late fill put v back, stale
// until it expires. So the filler's script (also atomic in Redis) sets the
// entry only if its version is at least the marker and newer than any entry
// already there. Whatever the interleaving:
//
//   - a fill that runs before the projector's script is deleted by it;
//   - a fill that runs after it carries a version ≥ the marker only if the
//     reader read PostgreSQL after the commit, so it is not stale;
//   - an older version never replaces a newer entry.
//
// Markers are kept longer than entries (MarkerTTL > TTL), far longer than
// any read takes, so a marker cannot expire while a fill it must refuse is
// in flight. Between a commit and its invalidation (the time of one Redis
// round trip) a reader may still get the previous version from the cache;
// callers that need read-your-writes (X-Min-Position) should read
// PostgreSQL directly. If the invalidation itself fails (Redis unreachable
// at that moment), the old entry lives at most TTL: keep TTL short.
//
// # Failures
//
// Every Redis call has a short timeout (Options.Timeout, 50 ms by default)
// and any Redis error makes the read fall back to PostgreSQL, counted by
// pos.cache.fallbacks; hits and misses are counted too, for the hit rate.
// Both keys of one transaction must live on one Redis node (no Cluster).
package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"
	"github.com/sethvargo/go-retry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"pos/eventstore"
	"pos/projections"
	"pos/queries"
)

// Defaults of Options.
const (
	DefaultTimeout   = 50 * time.Millisecond
	DefaultTTL       = 5 * time.Minute
	DefaultMarkerTTL = time.Hour
)

// maxQueuedGets bounds the GETs waiting in the autopipeliner (see New).
const maxQueuedGets = 4096

// Options tune a Cache.
type Options struct {
	// Timeout bounds each Redis call; 0 means DefaultTimeout.
	Timeout time.Duration
	// TTL is how long an entry lives; 0 means DefaultTTL. It bounds how long
	// a stale entry can survive an invalidation that failed.
	TTL time.Duration
	// MarkerTTL is how long an invalidation marker lives; 0 means
	// DefaultMarkerTTL. It must exceed any read's duration by far.
	MarkerTTL time.Duration
	// Meter, when set, receives the hit, miss, fallback and invalidation
	// error counters.
	Meter metric.Meter
	// Log, when set, reports failed invalidations.
	Log *slog.Logger
}

// LogTo sends what go-redis logs (a pool that cannot dial, say) to log at
// WARN, as JSON like every other line, instead of its own plain text on
// stderr. It sets go-redis's process-wide logger: call it once, at start.
func LogTo(log *slog.Logger) { redis.SetLogger(slogPrintf{log}) }

type slogPrintf struct{ log *slog.Logger }

func (l slogPrintf) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

// NewClient returns a go-redis client for url (redis://…) tuned for a cache
// that must not slow reads down when Redis is away: timeout on dial, read,
// write and pool wait, no retries.
func NewClient(url string, timeout time.Duration) (*redis.Client, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("cache: REDIS_URL: %w", err)
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
	o.MaxRetries = -1   // no retries: a failed call falls back to PostgreSQL
	o.DialerRetries = 1 // one dial attempt, not five 100 ms apart
	o.ContextTimeoutEnabled = true
	return redis.NewClient(o), nil
}

// Cache is the Redis side: entries, markers and counters. It is safe for
// concurrent use.
type Cache struct {
	rdb redis.UniversalClient
	// pipelined, when set, serves get (see New).
	pipelined *redis.AutoPipeliner
	timeout   time.Duration
	ttl       time.Duration
	markerTTL time.Duration
	log       *slog.Logger
	// distrustUntil (unix nanoseconds) is set when an invalidation fails:
	// until an entry written before the failure has surely expired, this
	// process reads PostgreSQL instead of the cache, so a stale entry that
	// missed its invalidation is never served from here.
	distrustUntil atomic.Int64

	hits, misses, fallbacks, invalidationErrors metric.Int64Counter
}

// New returns a cache on rdb.
func New(rdb redis.UniversalClient, opts Options) (*Cache, error) {
	c := &Cache{rdb: rdb, timeout: opts.Timeout, ttl: opts.TTL, markerTTL: opts.MarkerTTL, log: opts.Log}
	// A hot read is one GET, and many run at once: go-redis's autopipeliner
	// sends the GETs waiting at a moment in one write and reads their
	// replies in one read, where each GET alone cost a write and a read
	// system call and a wake-up of Redis (a fifth of a cached read's CPU).
	// Nothing else changes: every read still asks Redis. Its deferred face
	// is used because the pipeliner runs commands on its own context: the
	// caller's timeout bounds only the wait (WaitContext), and a bounded
	// queue refuses GETs at once when Redis stalls, so reads fall back to
	// PostgreSQL as they did with one GET per call. The autopipeliner is
	// marked experimental in go-redis v9.23 (its API may change in a minor
	// release; go.mod pins the version). Scripts keep the plain client.
	if cl, ok := rdb.(*redis.Client); ok {
		cfg := redis.DefaultAutoPipelineOptions()
		cfg.MaxQueuedCommands = maxQueuedGets
		ap, err := cl.AsyncAutoPipelineWithOptions(cfg)
		if err != nil {
			return nil, fmt.Errorf("cache: autopipeliner: %w", err)
		}
		c.pipelined = ap
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.ttl <= 0 {
		c.ttl = DefaultTTL
	}
	if c.markerTTL <= 0 {
		c.markerTTL = DefaultMarkerTTL
	}
	if c.markerTTL <= c.ttl {
		return nil, errors.New("cache: MarkerTTL must exceed TTL")
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	m := opts.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("pos/cache")
	}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var ctr metric.Int64Counter
		ctr, err = m.Int64Counter(name, metric.WithDescription(desc))
		return ctr
	}
	c.hits = counter("pos.cache.hits", "reads answered from Redis")
	c.misses = counter("pos.cache.misses", "reads not in Redis, answered from PostgreSQL and filled")
	c.fallbacks = counter("pos.cache.fallbacks", "reads answered from PostgreSQL because Redis failed")
	c.invalidationErrors = counter("pos.cache.invalidation.errors", "invalidations after a projection commit that failed")
	if err != nil {
		return nil, fmt.Errorf("cache: counters: %w", err)
	}
	return c, nil
}

// TransactionKey is the entry key of a transaction; its marker key is
// TransactionKey + ":v".
func TransactionKey(merchant, id uuid.UUID) string {
	return "pos:" + merchant.String() + ":tx:" + id.String()
}

// fillScript sets KEYS[1] to ARGV[1]..":"..ARGV[2] for ARGV[3] ms unless the
// marker KEYS[2] is above version ARGV[1] or the entry holds a version at
// least as new. Returns 1 when it set the entry.
var fillScript = redis.NewScript(`
local v = tonumber(ARGV[1])
local m = redis.call('GET', KEYS[2])
if m and tonumber(m) > v then return 0 end
local cur = redis.call('GET', KEYS[1])
if cur then
  local cv = tonumber(string.match(cur, '^(%d+):'))
  if cv and cv >= v then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
`)

// invalidateScript raises the marker KEYS[2] to version ARGV[1] (never
// lowers it), gives it ARGV[2] ms to live, and deletes the entry KEYS[1].
var invalidateScript = redis.NewScript(`
local v = tonumber(ARGV[1])
local m = redis.call('GET', KEYS[2])
if (not m) or tonumber(m) < v then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
`)

var kindTransaction = metric.WithAttributes(attribute.String("kind", "transaction"))

// get returns the entry of key, or ok false on a miss.
func (c *Cache) get(ctx context.Context, key string) (version uint64, data []byte, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var cmd *redis.StringCmd
	if c.pipelined != nil {
		cmd = redis.NewStringCmd(ctx, "get", key)
		if err := c.pipelined.Submit(ctx, cmd).WaitContext(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return 0, nil, false, err
		}
	} else {
		cmd = c.rdb.Get(ctx, key)
	}
	raw, err := cmd.Bytes()
	if errors.Is(err, redis.Nil) {
		return 0, nil, false, nil
	}
	if err != nil {
		return 0, nil, false, err
	}
	for i, b := range raw {
		if b == ':' {
			v, err := strconv.ParseUint(string(raw[:i]), 10, 64)
			if err != nil {
				break
			}
			return v, raw[i+1:], true, nil
		}
	}
	return 0, nil, false, fmt.Errorf("cache: malformed entry %q", key)
}

// fill stores data at version under key unless the marker or a newer entry
// says otherwise (fillScript).
func (c *Cache) fill(ctx context.Context, key string, version uint64, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return fillScript.Run(ctx, c.rdb, []string{key, key + ":v"},
		strconv.FormatUint(version, 10), data, c.ttl.Milliseconds()).Err()
}

// InvalidateTransaction raises merchant's transaction id's marker to version
// and deletes its entry.
func (c *Cache) InvalidateTransaction(ctx context.Context, merchant, id uuid.UUID, version uint64) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	key := TransactionKey(merchant, id)
	return invalidateScript.Run(ctx, c.rdb, []string{key, key + ":v"},
		strconv.FormatUint(version, 10), c.markerTTL.Milliseconds()).Err()
}

// Invalidate is a projections.Options.AfterCommit hook: for each
// transaction stream among events it invalidates the entry at the highest
// version committed, and for each merchant whose days' sales the events may
// have changed, every cached day of that merchant (invalidateDailySales),
// and for each merchant with stock ledger events among them, every cached
// stock page of that merchant (invalidateStock).
// Failures are counted and logged, not returned (the read models must not
// stall while Redis is down): the entry then lives at most TTL, and this
// process's readers bypass the cache for that long. Readers in other
// processes rely on the TTL alone.
func (c *Cache) Invalidate(ctx context.Context, events []eventstore.RecordedEvent) {
	type txKey struct{ merchant, id uuid.UUID }
	latest := map[txKey]uint64{}
	var order []txKey
	for _, e := range events {
		category, m, id, ok := eventstore.ParseStreamName(e.Stream)
		if !ok || category != projections.TransactionCategory {
			continue
		}
		merchant, err1 := uuid.Parse(m)
		tid, err2 := uuid.Parse(id)
		if err1 != nil || err2 != nil {
			continue
		}
		k := txKey{merchant, tid}
		v, seen := latest[k]
		if !seen {
			order = append(order, k)
		}
		if e.Version > v {
			latest[k] = e.Version
		}
	}
	for _, k := range order {
		err := c.retryInvalidation(ctx, func(ctx context.Context) error {
			return c.InvalidateTransaction(ctx, k.merchant, k.id, latest[k])
		})
		if err != nil {
			c.distrustUntil.Store(time.Now().Add(c.ttl).UnixNano())
			c.invalidationErrors.Add(ctx, 1, kindTransaction)
			c.log.Warn("cache invalidation failed; reads here bypass the cache until the entry has expired",
				"merchant", k.merchant.String(), "transaction", k.id.String(), "version", latest[k], "err", err)
		}
	}
	c.invalidateDailySales(ctx, events)
	c.invalidateStock(ctx, events)
}

// retryInvalidation runs invalidate, retried three times over about
// 175 ms: a failed invalidation makes this process bypass the cache for a
// whole TTL, so a Redis (or a process) stalled for longer than the timeout
// by a busy machine is worth waiting out. While the cache is distrusted
// anyway, one attempt: with Redis down, every invalidation of a batch
// would otherwise wait out the retries. invalidate must be idempotent.
func (c *Cache) retryInvalidation(ctx context.Context, invalidate func(context.Context) error) error {
	if time.Now().UnixNano() < c.distrustUntil.Load() {
		return invalidate(ctx)
	}
	backoff := retry.WithMaxRetries(3, retry.NewExponential(25*time.Millisecond))
	return retry.Do(ctx, backoff, func(ctx context.Context) error {
		return retry.RetryableError(invalidate(ctx))
	})
}

// TransactionGetter is what Reader caches: queries.Reader's GetTransaction.
type TransactionGetter interface {
	GetTransaction(ctx context.Context, merchant, id uuid.UUID) (queries.Transaction, error)
}

// Reader serves GetTransaction from the cache, filling it from next on a
// miss, and from next alone whenever Redis fails. It is safe for concurrent
// use.
//
// Decoding an entry's JSON costs more than the Redis round trip, so the
// Reader also keeps the last decoded transactions in memory (decoded), by
// key, with the entry they were decoded from. Redis is still asked on every
// read, since only its entry says which version is current (and that there
// is one): the memory only spares decoding an entry identical to one already
// decoded. Identical bytes, not only the version: a projection rebuild may
// change a detail without changing its version. The transactions it returns
// share their slices with that memory: callers must not modify them.
type Reader struct {
	cache   *Cache
	next    TransactionGetter
	decoded *lru.Cache[string, decodedEntry]
}

// decodedEntry is a Redis entry and what it decodes to.
type decodedEntry struct {
	raw []byte
	t   queries.Transaction
}

// decodedEntries bounds Reader's memory of decoded entries (a few KiB each).
const decodedEntries = 4096

// NewReader returns a Reader over next.
func NewReader(c *Cache, next TransactionGetter) *Reader {
	decoded, err := lru.New[string, decodedEntry](decodedEntries)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &Reader{cache: c, next: next, decoded: decoded}
}

// GetTransaction is queries.Reader.GetTransaction, cached. Errors of next
// (queries.ErrNotFound…) are returned as they are and never cached.
func (r *Reader) GetTransaction(ctx context.Context, merchant, id uuid.UUID) (queries.Transaction, error) {
	if merchant == uuid.Nil {
		return r.next.GetTransaction(ctx, merchant, id)
	}
	c := r.cache
	if time.Now().UnixNano() < c.distrustUntil.Load() {
		c.fallbacks.Add(ctx, 1, kindTransaction)
		return r.next.GetTransaction(ctx, merchant, id)
	}
	key := TransactionKey(merchant, id)
	version, data, ok, err := c.get(ctx, key)
	if err == nil && ok {
		if e, seen := r.decoded.Get(key); seen && e.t.Version == version && bytes.Equal(e.raw, data) {
			c.hits.Add(ctx, 1, kindTransaction)
			return e.t, nil
		}
		var t queries.Transaction
		if err = json.Unmarshal(data, &t); err == nil && t.Version == version {
			r.decoded.Add(key, decodedEntry{raw: data, t: t})
			c.hits.Add(ctx, 1, kindTransaction)
			return t, nil
		}
	}
	if err != nil {
		c.fallbacks.Add(ctx, 1, kindTransaction)
		return r.next.GetTransaction(ctx, merchant, id)
	}
	c.misses.Add(ctx, 1, kindTransaction)
	t, err := r.next.GetTransaction(ctx, merchant, id)
	if err != nil {
		return t, err
	}
	data, err = json.Marshal(t)
	if err == nil {
		err = c.fill(ctx, key, t.Version, data)
	}
	if err != nil {
		c.fallbacks.Add(ctx, 1, kindTransaction)
	}
	return t, nil
}
