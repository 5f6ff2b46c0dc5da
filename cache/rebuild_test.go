package cache

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// A rebuild may change a detail without changing its version, which no fill
// or invalidation would ever replace; Forget drops it, and moves the
// generations of the merchants' cached days and stock pages. The test works
// in a Redis database of its own: Forget scans the whole keyspace, and the
// other tests' entries are not its to drop.
func TestForgetDropsWhatARebuildReplaced(t *testing.T) {
	shared := redisClient(t)
	o := *shared.Options()
	o.DB = 15
	rdb := redis.NewClient(&o)
	t.Cleanup(func() { _ = rdb.Close() })
	w := newWorld(t, rdb)
	ctx := context.Background()

	if _, err := w.reader.GetTransaction(ctx, w.sale.Merchant, w.sale.ID); err != nil { // fills
		t.Fatal(err)
	}
	// What a rebuild that fixed a projector's bug leaves: other content at
	// the same version.
	c, err := pgx.Connect(ctx, w.env.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `UPDATE rm_transactions SET code = 'FIXED'`); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		t.Helper()
		tx, err := w.reader.GetTransaction(ctx, w.sale.Merchant, w.sale.ID)
		if err != nil {
			t.Fatal(err)
		}
		return tx.Code
	}
	if got := read(); got != "C-001" {
		t.Fatalf("before Forget the cache answered %q, want the cached C-001 (the test proves nothing)", got)
	}
	daily, stock := DailySalesKey(w.sale.Merchant), StockKey(w.sale.Merchant)
	for _, k := range []string{daily, stock} {
		if err := rdb.HSet(ctx, k, "f", "v").Err(); err != nil {
			t.Fatal(err)
		}
	}
	gen := func(k string) string { v, _ := rdb.Get(ctx, k+":g").Result(); return v }
	dailyGen, stockGen := gen(daily), gen(stock)

	if err := w.cache.Forget(ctx, []string{"rm_transactions", "rm_daily_sales", "rm_stock_levels"}); err != nil {
		t.Fatal(err)
	}
	// Twice: the first read fills Redis anew, the second is a hit, which
	// the reader's memory of decoded entries must not answer from the old
	// content at the same version.
	for i := range 2 {
		if got := read(); got != "FIXED" {
			t.Fatalf("read %d after Forget: %q, want FIXED", i+1, got)
		}
	}
	for _, k := range []string{daily, stock} {
		if n := rdb.Exists(ctx, k).Val(); n != 0 {
			t.Fatalf("%s still cached after Forget", k)
		}
	}
	if gen(daily) == dailyGen || gen(stock) == stockGen {
		t.Fatalf("generations did not move: daily %q→%q, stock %q→%q", dailyGen, gen(daily), stockGen, gen(stock))
	}
}
