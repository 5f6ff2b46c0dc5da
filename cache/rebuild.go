package cache

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Forget drops what the cache holds of tables, read-model tables a rebuild
// has just replaced (package rebuild): transaction details for
// rm_transactions, and the merchants' generations move for rm_daily_sales
// and rm_stock_levels, as after a projector's commit. It scans Redis's whole
// keyspace, and is meant for that rare event only.
//
// A rebuilt detail keeps its version, so a reader that read the old table
// just before the swap may still fill its entry after Forget has run;
// callers run Forget again a little later (ForgetAgainAfter), which no such
// fill outlasts (a fill is bounded by Options.Timeout).
func (c *Cache) Forget(ctx context.Context, tables []string) error {
	for _, t := range tables {
		var err error
		switch t {
		case "rm_transactions":
			err = c.scan(ctx, "pos:*:tx:*", func(key string) error {
				if strings.HasSuffix(key, ":v") {
					return nil // the marker stays: it only refuses older fills
				}
				ctx, cancel := context.WithTimeout(ctx, c.timeout)
				defer cancel()
				return c.rdb.Unlink(ctx, key).Err()
			})
		case "rm_daily_sales":
			err = c.scan(ctx, "pos:*:daily", func(key string) error {
				return c.forgetMerchant(ctx, key, c.InvalidateDailySales)
			})
		case "rm_stock_levels":
			err = c.scan(ctx, "pos:*:stock", func(key string) error {
				return c.forgetMerchant(ctx, key, c.InvalidateStock)
			})
		}
		if err != nil {
			return fmt.Errorf("cache: forget %s: %w", t, err)
		}
	}
	return nil
}

// RebuiltTables are the read-model tables whose reads are cached: Forget of
// them drops everything a rebuild may have changed.
var RebuiltTables = []string{"rm_transactions", "rm_daily_sales", "rm_stock_levels"}

// ForgetAgainAfter is how long after a swap Forget runs a second time.
const ForgetAgainAfter = 2 * time.Second

// forgetMerchant runs invalidate for the merchant of key ("pos:<merchant>:…").
func (c *Cache) forgetMerchant(ctx context.Context, key string, invalidate func(context.Context, uuid.UUID) error) error {
	parts := strings.Split(key, ":")
	if len(parts) < 3 {
		return nil
	}
	m, err := uuid.Parse(parts[1])
	if err != nil {
		return nil // not one of ours
	}
	return invalidate(ctx, m)
}

// scan calls fn for every key matching pattern.
func (c *Cache) scan(ctx context.Context, pattern string, fn func(key string) error) error {
	var cursor uint64
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		keys, next, err := c.rdb.Scan(sctx, cursor, pattern, 1000).Result()
		cancel()
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := fn(k); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}
