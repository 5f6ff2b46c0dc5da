package pgstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/eventstore/storetest"
	"pos/internal/pgtest"
)

// appendsPerStream is how many appends a benchmark writer makes to one stream
// before it starts the next, so that streams keep a realistic length.
const appendsPerStream = 100

// BenchmarkAppend measures appends of 1 and 10 events by 1, 8 and 32
// concurrent writers. Each writer runs the load–decide–append cycle on its own
// streams: it appends with the exact version its previous append returned (a
// cached head, so one INSERT), and starts a new stream every appendsPerStream
// appends. One op is one append, so ns/op is wall time per append across all
// writers (1e9 / appends/s); appends/s and events/s are reported as well.
func BenchmarkAppend(b *testing.B) {
	url := pgtest.NewDatabase(b)
	store := pgstore.New(appPool(b, url))
	for _, events := range []int{1, 10} {
		for _, writers := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("events=%d/writers=%d", events, writers), func(b *testing.B) {
				benchAppend(b, store, events, writers)
			})
		}
	}
}

func benchAppend(b *testing.B, store *pgstore.Store, events, writers int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// Everything but the ids is built before the clock starts.
	templates := make([][]eventstore.EventData, writers)
	merchants := make([]string, writers)
	for w := range writers {
		merchants[w] = storetest.NewMerchant()
		templates[w] = storetest.Events(merchants[w], events)
	}

	var (
		next     atomic.Int64 // appends claimed so far, shared by all writers
		failed   atomic.Bool
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		failed.Store(true)
	}
	n := int64(b.N)

	b.ResetTimer()
	for w := range writers {
		wg.Add(1)
		go func(merchant string, evs []eventstore.EventData) {
			defer wg.Done()
			var stream string
			var version uint64
			appended := appendsPerStream // start a stream on the first append
			for !failed.Load() && next.Add(1) <= n {
				if appended == appendsPerStream {
					stream, version, appended = storetest.NewStream(merchant, "transaction"), 0, 0
				}
				for i := range evs {
					evs[i].ID = uuid.Must(uuid.NewV7())
				}
				res, err := store.Append(ctx, stream, eventstore.Exact(version), evs...)
				if err != nil {
					fail(fmt.Errorf("append to %s at %d: %w", stream, version, err))
					return
				}
				version = res.Version
				appended++
			}
		}(merchants[w], templates[w])
	}
	wg.Wait()
	b.StopTimer()

	if firstErr != nil {
		b.Fatal(firstErr)
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/secs, "appends/s")
	b.ReportMetric(float64(b.N*events)/secs, "events/s")
}

// readAllSeed is the size of the feed BenchmarkReadAll reads: readAllMerchants
// merchants' events, appended readAllBatch at a time by readAllSeeders
// concurrent writers.
const (
	readAllSeed      = 200_000
	readAllMerchants = 50
	readAllBatch     = 500
	readAllSeeders   = 8
	readAllPage      = 1000
)

// BenchmarkReadAll measures reading the global feed from the start in pages
// of readAllPage: one op is the whole feed (all merchants), or one merchant's
// whole feed. It reports events/s; ns/op is the time of one full read.
func BenchmarkReadAll(b *testing.B) {
	url := pgtest.NewDatabase(b)
	store := pgstore.New(appPool(b, url))
	ctx := context.Background()
	merchants := seedFeed(b, store)

	// Autovacuum would have visited a table this size in production: set the
	// hint bits and visibility map and gather statistics before timing reads.
	if _, err := superuser(b, url).Exec(ctx, "VACUUM (ANALYZE) events"); err != nil {
		b.Fatal(err)
	}

	b.Run("feed=all", func(b *testing.B) {
		benchReadAll(b, store, eventstore.Filter{}, readAllSeed)
	})
	b.Run("feed=merchant", func(b *testing.B) {
		benchReadAll(b, store, eventstore.Filter{MerchantID: merchants[0]}, readAllSeed/readAllMerchants)
	})
}

// seedFeed appends readAllSeed events across readAllMerchants merchants and
// returns the merchants. Seeders take merchants round-robin, so consecutive
// transactions in the feed belong to different merchants.
func seedFeed(b *testing.B, store *pgstore.Store) []string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	merchants := make([]string, readAllMerchants)
	for i := range merchants {
		merchants[i] = storetest.NewMerchant()
	}
	start := time.Now()
	if err := storetest.Seed(ctx, store, merchants, readAllSeed, readAllBatch, readAllSeeders); err != nil {
		b.Fatalf("seed: %v", err)
	}
	b.Logf("seeded %d events of %d merchants in %s", readAllSeed, readAllMerchants, time.Since(start).Round(time.Millisecond))
	return merchants
}

func benchReadAll(b *testing.B, store *pgstore.Store, filter eventstore.Filter, want int) {
	ctx := context.Background()
	total := 0
	b.ResetTimer()
	for range b.N {
		after, n := eventstore.Start, 0
		for {
			page, err := store.ReadAll(ctx, after, filter, readAllPage)
			if err != nil {
				b.Fatal(err)
			}
			n += len(page)
			if len(page) < readAllPage {
				break
			}
			after = page[len(page)-1].Position
		}
		if n != want {
			b.Fatalf("read %d events, want %d", n, want)
		}
		total += n
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}
