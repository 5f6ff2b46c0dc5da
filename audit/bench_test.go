package audit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/eventstore/storetest"
	"pos/internal/pgtest"
)

// Seeding of the benchmarks: streams of benchStreamLen events, each stream
// one append, by benchSeeders concurrent writers, round-robin over
// benchMerchants merchants.
const (
	benchStreamLen = 50
	benchSeeders   = 8
	benchMerchants = 10
)

// seedEvents appends n events (a multiple of benchStreamLen) and returns
// the merchants.
func seedEvents(b *testing.B, store *pgstore.Store, n int) []string {
	b.Helper()
	merchants := make([]string, benchMerchants)
	for i := range merchants {
		merchants[i] = uuid.NewString()
	}
	start := time.Now()
	if err := storetest.Seed(context.Background(), store, merchants, n, benchStreamLen, benchSeeders); err != nil {
		b.Fatalf("seed: %v", err)
	}
	b.Logf("seeded %d events in %s", n, time.Since(start).Round(time.Millisecond))
	return merchants
}

// vacuum sets hint bits and statistics, as autovacuum would have on a table
// this size in production, so that reads are timed in steady state.
func vacuum(b *testing.B, url string) {
	b.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "VACUUM (ANALYZE) events"); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkVerify measures what `pos verify` does, for every merchant: read
// the whole feed in pages of 5,000, recompute every hash chain, and check
// each merchant's latest anchor (10 merchants, streams of 50 events). One op
// is one full verification; events/s is the rate. It also reports how long
// the first anchoring round (reading everything, anchoring 10 merchants)
// took. The seed is not timed.
//
// Run: go test -run '^$' -bench BenchmarkVerify -benchtime 3x ./audit/
func BenchmarkVerify(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("events=%dk", n/1000), func(b *testing.B) {
			url := pgtest.NewDatabase(b)
			ctx := context.Background()
			pool, err := pgstore.Connect(ctx, url)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(pool.Close)
			store := pgstore.New(pool)
			seedEvents(b, store, n)
			vacuum(b, url)
			key := DevKey()
			ledger := NewLedger(pool)
			start := time.Now()
			anchors, err := NewAnchorer(store, ledger, key, slog.New(slog.NewTextHandler(io.Discard, nil))).AnchorOnce(ctx)
			if err != nil || len(anchors) != benchMerchants {
				b.Fatalf("anchor: %d anchors, %v", len(anchors), err)
			}
			anchoring := time.Since(start)
			auditor := &Auditor{Store: store, Ledger: ledger, Key: key.Public()}
			for b.Loop() {
				rep, err := auditor.Verify(ctx, eventstore.VerifyOptions{BatchSize: 5000})
				if err != nil {
					b.Fatal(err)
				}
				if rep.EventsChecked != int64(n) || len(rep.Breaks) != 0 || len(rep.Anchors) != benchMerchants {
					b.Fatalf("verified %d events, %d breaks, %d anchors", rep.EventsChecked, len(rep.Breaks), len(rep.Anchors))
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(anchoring.Seconds(), "anchor-round-s")
		})
	}
}
