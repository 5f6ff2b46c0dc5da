package cache

// Today's daily sales (GET /v1/reports/daily-sales for one day that is
// today), per merchant.
//
// # Keys
//
//	pos:<merchant>:daily     a hash, one field per day and branch filter:
//	                         "2|<YYYY-MM-DD>|<branch id or *>" → JSON of []queries.DaySales
//	pos:<merchant>:daily:g   the merchant's invalidation generation
//
// # Which reads are cached
//
// A request for exactly one day (from = to) that is today somewhere on
// Earth (between the date at UTC−12 and the date at UTC+14): the merchant's
// current business day is always among those, whatever its time zone, and no
// time-zone lookup is needed on the hot path. Other ranges go to PostgreSQL.
// Correctness does not rest on which days are cached: an invalidation drops
// every day of the merchant.
//
// # Why no stale entry outlives an update
//
// A report has no version of its own to compare, as a transaction has, so
// the guard is a generation per merchant instead. The projector, after each
// commit that may have changed one of the merchant's days
// (Cache.Invalidate), increments the generation and deletes the merchant's
// hash, in one script: every day and branch filter goes at once, so the
// invalidation need not know which day the events fell on (that depends on
// the merchant's time zone, or for a void on the day the sale was counted).
// A reader reads the generation together with the entry, before it reads
// PostgreSQL, and its fill script (atomic in Redis) writes the entry only if
// the generation is still the one it read. Whatever the interleaving of a
// reader and a commit C:
//
//   - a fill that runs before C's invalidation is deleted by it;
//   - a fill that runs after it carries the generation read before C's
//     invalidation (refused) or after it, in which case the reader read
//     PostgreSQL after C committed, and its entry is not stale.
//
// The generation lives MarkerTTL (far longer than any read), so it cannot
// expire and come back to a value a reader in flight holds. The hash's TTL
// is set when it is created and not extended by later fills, so no field
// outlives TTL after the first fill, even one whose invalidation failed.
// As for transactions, the entry may trail a commit by one Redis round trip
// (callers needing read-your-writes read PostgreSQL directly), and an
// invalidation that fails makes this process read PostgreSQL for TTL.
//
// # Which commits invalidate
//
// The daily-sales projector changes a day's row only for TransactionPaid,
// TransactionVoided and RefundIssued. The runner, though, may apply earlier
// events of a stream that it read from the store to fill a gap, and those
// are not handed to AfterCommit: a lost TransactionPaid filled before a
// TransactionCompleted is seen as the TransactionCompleted alone. So every
// transaction event invalidates its merchant's days except those a sale can
// only have before it is paid (preSaleEvents), before which its stream holds
// nothing that changes a day either. An event type added later invalidates
// until it is listed there.

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"pos/eventstore"
	"pos/projections"
	"pos/queries"
)

// preSaleEvents are the transaction events that only a sale not yet paid
// (draft or pending payment) records: neither they nor anything before
// them in their stream changes a day's sales, so they do not invalidate.
var preSaleEvents = map[string]bool{
	"TransactionOpened": true, "ItemAdded": true, "ItemRemoved": true, "DiscountApplied": true,
	"CheckedOut": true, "PaymentAdded": true, "PaymentConfirmed": true, "PaymentDeclined": true,
}

// DailySalesKey is the hash of merchant's cached daily sales; its
// generation key is DailySalesKey + ":g".
func DailySalesKey(merchant uuid.UUID) string {
	return "pos:" + merchant.String() + ":daily"
}

// dailySalesField names one day and branch filter in the hash.
func dailySalesField(day time.Time, branch *uuid.UUID) string {
	b := "*"
	if branch != nil {
		b = branch.String()
	}
	// "2|": rows as the reader of 2026-12 answers them (wholly voided days
	// left out); fields of an older form are never read again, and go
	// with their key's TTL.
	return "2|" + day.Format(time.DateOnly) + "|" + b
}

// fillDailyScript sets field ARGV[2] of the hash KEYS[1] to ARGV[3] unless
// the generation KEYS[2] (absent: "0") differs from ARGV[1], the one the
// reader read before it read PostgreSQL. A hash it creates lives ARGV[4] ms;
// an existing hash keeps its expiry. Returns 1 when it set the field.
var fillDailyScript = redis.NewScript(`
local g = redis.call('GET', KEYS[2]) or '0'
if g ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
`)

// invalidateDailyScript increments the generation KEYS[2], gives it ARGV[1]
// ms to live, and deletes the hash KEYS[1].
var invalidateDailyScript = redis.NewScript(`
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
`)

var kindDailySales = metric.WithAttributes(attribute.String("kind", "daily_sales"))

// getDaily returns field of key and the merchant's generation, in one round
// trip; ok is false on a miss.
func (c *Cache) getDaily(ctx context.Context, key, field string) (data []byte, gen string, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	pipe := c.rdb.Pipeline()
	entry := pipe.HGet(ctx, key, field)
	g := pipe.Get(ctx, key+":g")
	_, _ = pipe.Exec(ctx) // each command's own error is read below
	gen, err = g.Result()
	if errors.Is(err, redis.Nil) {
		gen, err = "0", nil
	}
	if err != nil {
		return nil, "", false, err
	}
	data, err = entry.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, gen, false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	return data, gen, true, nil
}

// fillDaily stores data in field of key unless the merchant's generation is
// no longer gen (fillDailyScript).
func (c *Cache) fillDaily(ctx context.Context, key, field, gen string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return fillDailyScript.Run(ctx, c.rdb, []string{key, key + ":g"}, gen, field, data, c.ttl.Milliseconds()).Err()
}

// InvalidateDailySales increments merchant's generation and deletes every
// cached day of merchant.
func (c *Cache) InvalidateDailySales(ctx context.Context, merchant uuid.UUID) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	key := DailySalesKey(merchant)
	return invalidateDailyScript.Run(ctx, c.rdb, []string{key, key + ":g"}, c.markerTTL.Milliseconds()).Err()
}

// dailySalesMerchants returns, in order of first appearance, the merchants
// of the transaction events that may have changed a day's sales (see "Which
// commits invalidate").
func dailySalesMerchants(events []eventstore.RecordedEvent) []uuid.UUID {
	var out []uuid.UUID
	for _, e := range events {
		category, m, _, ok := eventstore.ParseStreamName(e.Stream)
		if !ok || category != projections.TransactionCategory || preSaleEvents[e.Type] {
			continue
		}
		merchant, err := uuid.Parse(m)
		if err != nil {
			continue
		}
		seen := false
		for _, o := range out {
			seen = seen || o == merchant
		}
		if !seen {
			out = append(out, merchant)
		}
	}
	return out
}

// invalidateDailySales is Invalidate's part for daily sales: failures are
// counted, logged and make this process bypass the cache for TTL.
func (c *Cache) invalidateDailySales(ctx context.Context, events []eventstore.RecordedEvent) {
	for _, merchant := range dailySalesMerchants(events) {
		err := c.retryInvalidation(ctx, func(ctx context.Context) error { return c.InvalidateDailySales(ctx, merchant) })
		if err != nil {
			c.distrustUntil.Store(time.Now().Add(c.ttl).UnixNano())
			c.invalidationErrors.Add(ctx, 1, kindDailySales)
			c.log.Warn("cache invalidation failed; reads here bypass the cache until the entry has expired",
				"merchant", merchant.String(), "report", "daily_sales", "err", err)
		}
	}
}

// Ping reports whether Redis answers, within the cache's timeout (for
// readiness: the cache is optional, reads fall back to PostgreSQL).
func (c *Cache) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.rdb.Ping(ctx).Err()
}

// DailySalesGetter is what DailySalesReader caches: queries.Reader's
// DailySales.
type DailySalesGetter interface {
	DailySales(ctx context.Context, merchant uuid.UUID, from, to time.Time, branch *uuid.UUID) ([]queries.DaySales, error)
}

// DailySalesReader serves today's DailySales from the cache, filling it from
// next on a miss, and from next alone for other ranges and whenever Redis
// fails. It is safe for concurrent use.
type DailySalesReader struct {
	cache *Cache
	next  DailySalesGetter
	now   func() time.Time
}

// NewDailySalesReader returns a DailySalesReader over next.
func NewDailySalesReader(c *Cache, next DailySalesGetter) *DailySalesReader {
	return &DailySalesReader{cache: c, next: next, now: time.Now}
}

// todaySomewhere returns the date of from (midnight UTC) and whether from
// and to are that one date and it is the current date in some time zone
// (UTC−12 to UTC+14) at now.
func todaySomewhere(from, to, now time.Time) (time.Time, bool) {
	day := time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, time.UTC)
	if to.Year() != from.Year() || to.YearDay() != from.YearDay() {
		return day, false
	}
	date := func(t time.Time) time.Time { return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC) }
	earliest, latest := date(now.UTC().Add(-12*time.Hour)), date(now.UTC().Add(14*time.Hour))
	return day, !day.Before(earliest) && !day.After(latest)
}

// DailySales is queries.Reader.DailySales, cached for a single day that is
// today. Errors of next (queries.ErrInvalidFilter…) are returned as they are
// and never cached.
func (r *DailySalesReader) DailySales(ctx context.Context, merchant uuid.UUID, from, to time.Time, branch *uuid.UUID) ([]queries.DaySales, error) {
	day, today := todaySomewhere(from, to, r.now())
	if merchant == uuid.Nil || !today {
		return r.next.DailySales(ctx, merchant, from, to, branch)
	}
	c := r.cache
	if time.Now().UnixNano() < c.distrustUntil.Load() {
		c.fallbacks.Add(ctx, 1, kindDailySales)
		return r.next.DailySales(ctx, merchant, from, to, branch)
	}
	key, field := DailySalesKey(merchant), dailySalesField(day, branch)
	data, gen, ok, err := c.getDaily(ctx, key, field)
	if err == nil && ok {
		var days []queries.DaySales
		if err = json.Unmarshal(data, &days); err == nil {
			c.hits.Add(ctx, 1, kindDailySales)
			return days, nil
		}
	}
	if err != nil {
		c.fallbacks.Add(ctx, 1, kindDailySales)
		return r.next.DailySales(ctx, merchant, from, to, branch)
	}
	c.misses.Add(ctx, 1, kindDailySales)
	days, err := r.next.DailySales(ctx, merchant, from, to, branch)
	if err != nil {
		return days, err
	}
	data, err = json.Marshal(days)
	if err == nil {
		err = c.fillDaily(ctx, key, field, gen, data)
	}
	if err != nil {
		c.fallbacks.Add(ctx, 1, kindDailySales)
	}
	return days, nil
}
