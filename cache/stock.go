package cache

// Stock levels (GET /v1/stock), per merchant.
//
// # Keys
//
//	pos:<merchant>:stock     a hash, one field per first page asked for:
//	                         "<branch id or *>|<limit>|<sku or nothing>" →
//	                         JSON of queries.StockPage
//	pos:<merchant>:stock:g   the merchant's invalidation generation
//
// The SKU comes last, so a SKU holding "|" cannot make two filters share a
// field; an empty SKU is no SKU filter (queries.StockFilter reads it so
// too). The limit is the one queries.Reader.Stock applies (≤ 0 is
// queries.DefaultLimit, above queries.MaxLimit is MaxLimit), so two
// requests that get the same page share its field.
//
// # Which reads are cached
//
// First pages only (cursor ""), for every branch filter, SKU filter and
// limit: that is what tills and back offices poll. A later page is read
// once on a walk through the list, not polled, and would add a field per
// cursor for little gain; it goes to PostgreSQL, which also checks its
// cursor's signature every time. A malformed SKU filter goes to PostgreSQL
// too (which refuses it); errors are never cached.
//
// # Why no stale entry outlives an update
//
// As for today's daily sales (daily_sales.go), and with its generation-
// guarded hash helpers (getDaily, fillDaily and the invalidation script,
// which depend only on the key and field they are given): a page has no
// version of its own, since it spans ledgers, so each merchant has a
// generation. The projector, after each commit that applied a stock event
// of the merchant (Cache.Invalidate), increments the generation and
// deletes the merchant's hash in one script; a reader reads the generation
// with the entry, before it reads PostgreSQL, and its fill is refused if the
// generation has moved since. A fill before an invalidation is deleted by
// it; one after it either carries the old generation (refused) or read
// PostgreSQL after the commit (not stale). The generation lives MarkerTTL,
// the hash at most TTL from its first fill (later fills do not extend it).
// The entry may trail a commit by one Redis round trip, so a read that asks
// for its own write (X-Min-Position) goes to PostgreSQL (the API's
// choice); an invalidation that fails makes this process read PostgreSQL
// for TTL, and other processes rely on TTL alone.
//
// # Which commits invalidate
//
// Every event of a stock ledger stream (category projections.StockCategory),
// whatever its type: each one moves a level (on hand, reserved, average
// cost or version), and an event type added later invalidates without
// being listed. An invalidation drops every cached page of the merchant at
// once, whichever ledger moved (a page without filters holds them all).
// A stock event that the runner applies from the store to fill a stream's
// gap is not handed to AfterCommit, but the delivered event that revealed
// the gap is, and it invalidates the same merchant. No other event touches
// rm_stock_levels, so no other event invalidates these entries (and stock
// events invalidate no transaction detail and no daily sales).

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"pos/domain/stock"
	"pos/eventstore"
	"pos/projections"
	"pos/queries"
)

var kindStock = metric.WithAttributes(attribute.String("kind", "stock_levels"))

// StockKey is the hash of merchant's cached stock levels; its generation
// key is StockKey + ":g".
func StockKey(merchant uuid.UUID) string {
	return "pos:" + merchant.String() + ":stock"
}

// stockField names one first page in the hash (see Keys).
func stockField(f queries.StockFilter, limit int) string {
	b := "*"
	if f.BranchID != nil {
		b = f.BranchID.String()
	}
	return b + "|" + strconv.Itoa(stockPageLimit(limit)) + "|" + f.SKU
}

// stockPageLimit is the page size queries.Reader.Stock applies to limit.
func stockPageLimit(limit int) int {
	if limit <= 0 {
		return queries.DefaultLimit
	}
	return min(limit, queries.MaxLimit)
}

// InvalidateStock increments merchant's stock generation and deletes every
// cached stock page of merchant.
func (c *Cache) InvalidateStock(ctx context.Context, merchant uuid.UUID) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	key := StockKey(merchant)
	return invalidateDailyScript.Run(ctx, c.rdb, []string{key, key + ":g"}, c.markerTTL.Milliseconds()).Err()
}

// stockMerchants returns, in order of first appearance, the merchants of
// the stock ledger events among events (see "Which commits invalidate").
func stockMerchants(events []eventstore.RecordedEvent) []uuid.UUID {
	var out []uuid.UUID
	for _, e := range events {
		category, m, _, ok := eventstore.ParseStreamName(e.Stream)
		if !ok || category != projections.StockCategory {
			continue
		}
		merchant, err := uuid.Parse(m)
		if err != nil || slices.Contains(out, merchant) {
			continue
		}
		out = append(out, merchant)
	}
	return out
}

// invalidateStock is Invalidate's part for stock levels: failures are
// counted, logged and make this process bypass the cache for TTL.
func (c *Cache) invalidateStock(ctx context.Context, events []eventstore.RecordedEvent) {
	for _, merchant := range stockMerchants(events) {
		err := c.retryInvalidation(ctx, func(ctx context.Context) error { return c.InvalidateStock(ctx, merchant) })
		if err != nil {
			c.distrustUntil.Store(time.Now().Add(c.ttl).UnixNano())
			c.invalidationErrors.Add(ctx, 1, kindStock)
			c.log.Warn("cache invalidation failed; reads here bypass the cache until the entry has expired",
				"merchant", merchant.String(), "report", "stock_levels", "err", err)
		}
	}
}

// StockGetter is what StockReader caches: queries.Reader's Stock.
type StockGetter interface {
	Stock(ctx context.Context, merchant uuid.UUID, f queries.StockFilter, cursor string, limit int) (queries.StockPage, error)
}

// StockReader serves the first pages of Stock from the cache, filling it
// from next on a miss, and from next alone for later pages and whenever
// Redis fails. It is safe for concurrent use.
type StockReader struct {
	cache *Cache
	next  StockGetter
}

// NewStockReader returns a StockReader over next.
func NewStockReader(c *Cache, next StockGetter) *StockReader {
	return &StockReader{cache: c, next: next}
}

// Stock is queries.Reader.Stock, cached for first pages. Errors of next
// (a *domain.ValidationError, queries.ErrBadCursor…) are returned as they
// are and never cached.
func (r *StockReader) Stock(ctx context.Context, merchant uuid.UUID, f queries.StockFilter, cursor string, limit int) (queries.StockPage, error) {
	if merchant == uuid.Nil || cursor != "" || (f.SKU != "" && stock.CheckSKU(f.SKU) != nil) {
		return r.next.Stock(ctx, merchant, f, cursor, limit)
	}
	c := r.cache
	if time.Now().UnixNano() < c.distrustUntil.Load() {
		c.fallbacks.Add(ctx, 1, kindStock)
		return r.next.Stock(ctx, merchant, f, cursor, limit)
	}
	key, field := StockKey(merchant), stockField(f, limit)
	data, gen, ok, err := c.getDaily(ctx, key, field)
	if err == nil && ok {
		var page queries.StockPage
		if err = json.Unmarshal(data, &page); err == nil {
			c.hits.Add(ctx, 1, kindStock)
			return page, nil
		}
	}
	if err != nil {
		c.fallbacks.Add(ctx, 1, kindStock)
		return r.next.Stock(ctx, merchant, f, cursor, limit)
	}
	c.misses.Add(ctx, 1, kindStock)
	page, err := r.next.Stock(ctx, merchant, f, cursor, limit)
	if err != nil {
		return page, err
	}
	data, err = json.Marshal(page)
	if err == nil {
		err = c.fillDaily(ctx, key, field, gen, data)
	}
	if err != nil {
		c.fallbacks.Add(ctx, 1, kindStock)
	}
	return page, nil
}
