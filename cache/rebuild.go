package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Forget drops what the cache holds of tables, read-model tables a rebuild
// has just replaced (package rebuild): transaction details for
// rm_transactions, and the merchants' generations move for rm_daily_sales
// and rm_stock_levels, as after a projector's commit. It scans Redis's whole
// keyspace, and is meant for that rare event only. It goes on after a
// failure and returns them all: what it could not drop expires within TTL.
//
// A rebuilt detail keeps its version, so a reader that read the old table
// just before the swap may still fill its entry after Forget has run;
// callers run Forget again a little later (ForgetAgainAfter), which no such
// fill outlasts (a fill is bounded by Options.Timeout).
func (c *Cache) Forget(ctx context.Context, tables []string) error {
	var errs []error
	for _, t := range tables {
		var err error
		switch t {
		case "rm_transactions":
			err = c.scan(ctx, "pos:*:tx:*", func(ctx context.Context, keys []string) error {
				entries := keys[:0]
				for _, k := range keys {
					if !strings.HasSuffix(k, ":v") { // the marker stays: it only refuses older fills
						entries = append(entries, k)
					}
				}
				if len(entries) == 0 {
					return nil
				}
				return c.rdb.Unlink(ctx, entries...).Err()
			})
		case "rm_daily_sales":
			err = c.scan(ctx, "pos:*:daily", func(ctx context.Context, keys []string) error {
				return c.forgetMerchants(ctx, keys, c.InvalidateDailySales)
			})
		case "rm_stock_levels":
			err = c.scan(ctx, "pos:*:stock", func(ctx context.Context, keys []string) error {
				return c.forgetMerchants(ctx, keys, c.InvalidateStock)
			})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cache: forget %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// CachedTables are the read-model tables whose reads are cached: Forget of
// them drops everything a rebuild may have changed.
var CachedTables = []string{"rm_transactions", "rm_daily_sales", "rm_stock_levels"}

// ForgetAgainAfter is how long after a swap Forget runs a second time.
const ForgetAgainAfter = 2 * time.Second

// forgetMerchants runs invalidate for the merchant of each key
// ("pos:<merchant>:…"), every one even when some fail.
func (c *Cache) forgetMerchants(ctx context.Context, keys []string, invalidate func(context.Context, uuid.UUID) error) error {
	var errs []error
	for _, key := range keys {
		parts := strings.Split(key, ":")
		if len(parts) < 3 {
			continue
		}
		m, err := uuid.Parse(parts[1])
		if err != nil {
			continue // not one of ours
		}
		if err := invalidate(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// scan calls fn with each page of the keys matching pattern, bounded by a
// second per call, and goes on after a page fn failed on; it returns every
// failure.
func (c *Cache) scan(ctx context.Context, pattern string, fn func(ctx context.Context, keys []string) error) error {
	var errs []error
	var cursor uint64
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		keys, next, err := c.rdb.Scan(sctx, cursor, pattern, 1000).Result()
		if err != nil {
			cancel()
			return errors.Join(append(errs, err)...)
		}
		if err := fn(sctx, keys); err != nil {
			errs = append(errs, err)
		}
		cancel()
		if next == 0 {
			return errors.Join(errs...)
		}
		cursor = next
	}
}
