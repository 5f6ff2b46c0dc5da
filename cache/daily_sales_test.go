package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"pos/domain/money"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/queries"
)

// today is a world's sales of the current business day: sales at two
// branches of the world's merchant, rung up now, and a DailySalesReader.
type today struct {
	*world
	at               time.Time // when the sales happen
	day              time.Time // their business day (Asia/Jakarta), midnight UTC
	branch1, branch2 uuid.UUID
	daily            *DailySalesReader
	sales            int
}

func newToday(t *testing.T, rdb *redis.Client) *today {
	t.Helper()
	w := newWorld(t, rdb)
	jakarta, err := time.LoadLocation("Asia/Jakarta") // the default time zone
	if err != nil {
		t.Fatal(err)
	}
	d := &today{world: w, at: time.Now().UTC(), branch1: projtest.NewID(t), branch2: projtest.NewID(t)}
	local := d.at.In(jakarta)
	d.day = time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, time.UTC)
	d.daily = NewDailySalesReader(w.cache, w.pg)
	return d
}

// paidSale rings up and pays (in cash) a sale of price at branch; it is not
// projected yet.
func (d *today) paidSale(t *testing.T, branch uuid.UUID, price int64) *projtest.Sale {
	t.Helper()
	d.sales++
	s := d.env.OpenSale(t, d.sale.Merchant, branch, fmt.Sprintf("T-%03d", d.sales), d.at)
	s.AddItem("CAKE", 1, money.Amount(price), 1_100, d.at)
	s.Checkout(d.at)
	s.PayDue(d.at)
	return s
}

// filters are the branch filters every read check goes through.
func (d *today) filters() []*uuid.UUID { return []*uuid.UUID{nil, &d.branch1, &d.branch2} }

// want is what PostgreSQL answers for today with branch.
func (d *today) want(t *testing.T, branch *uuid.UUID) string {
	t.Helper()
	days, err := d.pg.DailySales(context.Background(), d.sale.Merchant, d.day, d.day, branch)
	if err != nil {
		t.Fatal(err)
	}
	return mustJSON(t, days)
}

// readMany reads today's sales n times concurrently for every branch filter
// and fails on any answer other than PostgreSQL's.
func (d *today) readMany(t *testing.T, n int) {
	t.Helper()
	for _, branch := range d.filters() {
		want := d.want(t, branch)
		concurrently(t, n, func() error {
			got, err := d.daily.DailySales(context.Background(), d.sale.Merchant, d.day, d.day, branch)
			if err != nil {
				return err
			}
			if g := mustJSON(t, got); g != want {
				return fmt.Errorf("branch %v: stale read %s, want %s", branch, g, want)
			}
			return nil
		})
	}
}

// snapshot is PostgreSQL's answer for every branch filter.
func (d *today) snapshot(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, b := range d.filters() {
		out = append(out, d.want(t, b))
	}
	return out
}

// field returns the cached field of today and branch, if any.
func (d *today) field(t *testing.T, branch *uuid.UUID) (string, bool) {
	t.Helper()
	v, err := d.cache.rdb.HGet(context.Background(), DailySalesKey(d.sale.Merchant), dailySalesField(d.day, branch)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

// generation returns merchant's current generation (0 when it has none).
func (c *Cache) generation(ctx context.Context, merchant uuid.UUID) (uint64, error) {
	g, err := c.rdb.Get(ctx, DailySalesKey(merchant)+":g").Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(g, 10, 64)
}

func TestDailySalesNoStaleReadAfterUpdates(t *testing.T) {
	rdb := redisClient(t)
	d := newToday(t, rdb)
	var a, b, c *projtest.Sale
	var pending uuid.UUID
	updates := []struct {
		name string
		do   func()
	}{
		{"first sale paid", func() { a = d.paidSale(t, d.branch1, 40_000) }},
		{"sale at the other branch", func() { b = d.paidSale(t, d.branch2, 25_000) }},
		{"refund", func() { a.Complete(d.at); a.RefundAmount(5_000, d.at) }},
		{"card sale confirmed", func() {
			c = d.env.OpenSale(t, d.sale.Merchant, d.branch1, "T-card", d.at)
			c.AddItem("CAKE", 2, 30_000, 1_100, d.at)
			c.Checkout(d.at)
			pending = c.Pay(transaction.MethodCard, c.Aggregate().Due(), d.at)
			d.project(t) // pre-sale events only: the cache holds
			c.Confirm(pending, d.at)
		}},
		{"paid sale voided", func() { b.Void(d.at) }},
		{"second refund", func() { a.RefundAmount(1_000, d.at) }},
	}
	d.readMany(t, 100) // fills the cache (no sales yet: empty lists)
	for i, u := range updates {
		before := d.snapshot(t)
		hits := d.counter(t, "pos.cache.hits")
		u.do()
		d.project(t)
		after := d.snapshot(t)
		changed := false
		for j := range before {
			changed = changed || before[j] != after[j]
		}
		if !changed {
			t.Fatalf("update %d (%s) changed no report; the test proves nothing", i, u.name)
		}
		d.readMany(t, 100) // concurrent misses fill it
		d.readMany(t, 1)
		if d.counter(t, "pos.cache.hits") == hits {
			t.Fatalf("update %d (%s): no cache hit after it was filled", i, u.name)
		}
		for _, br := range d.filters() {
			if v, ok := d.field(t, br); !ok || v != d.want(t, br) {
				t.Fatalf("update %d (%s): entry %q (present %v), want %s", i, u.name, v, ok, d.want(t, br))
			}
		}
	}
	if n := d.counter(t, "pos.cache.fallbacks"); n != 0 {
		t.Fatalf("%d fallbacks with Redis up", n)
	}
}

func TestDailySalesPreSaleEventsKeepTheCache(t *testing.T) {
	rdb := redisClient(t)
	d := newToday(t, rdb)
	d.paidSale(t, d.branch1, 10_000)
	d.project(t)
	d.readMany(t, 1)
	g0, err := d.cache.generation(context.Background(), d.sale.Merchant)
	if err != nil {
		t.Fatal(err)
	}
	s := d.env.OpenSale(t, d.sale.Merchant, d.branch1, "T-draft", d.at)
	line := s.AddItem("TEA", 1, 10_000, 1_100, d.at)
	s.RemoveItem(line, d.at)
	s.AddItem("CAKE", 1, 10_000, 1_100, d.at)
	s.DiscountPercent(1_000, d.at)
	s.Checkout(d.at)
	s.Decline(s.Pay(transaction.MethodQRIS, s.Aggregate().Due(), d.at), d.at)
	d.project(t)
	if g, err := d.cache.generation(context.Background(), d.sale.Merchant); err != nil || g != g0 {
		t.Fatalf("generation %d (err %v) after pre-sale events, want %d", g, err, g0)
	}
	if _, ok := d.field(t, nil); !ok {
		t.Fatal("pre-sale events dropped today's entry")
	}
	// Settings events of the merchant do not change a day either.
	d.env.ChangeSettings(t, d.sale.Merchant, "Asia/Jakarta", d.at)
	d.project(t)
	if g, err := d.cache.generation(context.Background(), d.sale.Merchant); err != nil || g != g0 {
		t.Fatalf("generation %d (err %v) after a settings change, want %d", g, err, g0)
	}
	d.readMany(t, 20)
}

// lateDaily reads PostgreSQL, then runs between (once) before answering:
// the reader's fill comes after whatever between does.
type lateDaily struct {
	next    DailySalesGetter
	between func()
	once    sync.Once
}

func (g *lateDaily) DailySales(ctx context.Context, merchant uuid.UUID, from, to time.Time, branch *uuid.UUID) ([]queries.DaySales, error) {
	days, err := g.next.DailySales(ctx, merchant, from, to, branch)
	g.once.Do(g.between)
	return days, err
}

func TestDailySalesLateFillNeverLeavesStaleEntry(t *testing.T) {
	rdb := redisClient(t)
	d := newToday(t, rdb)
	d.paidSale(t, d.branch1, 10_000)
	d.project(t)
	old := d.want(t, nil)
	// The reader misses, reads the old day from PostgreSQL; the projector
	// then commits a new sale and invalidates; only then does the reader
	// fill with the old day.
	late := NewDailySalesReader(d.cache, &lateDaily{next: d.pg, between: func() {
		d.paidSale(t, d.branch1, 20_000)
		d.project(t)
	}})
	got, err := late.DailySales(context.Background(), d.sale.Merchant, d.day, d.day, nil)
	if err != nil || mustJSON(t, got) != old {
		t.Fatalf("late read: %s, %v; want %s (what PostgreSQL had)", mustJSON(t, got), err, old)
	}
	if v, ok := d.field(t, nil); ok {
		t.Fatalf("late fill stored %s; the generation should refuse it", v)
	}
	if d.want(t, nil) == old {
		t.Fatal("the second sale changed nothing; the test proves nothing")
	}
	d.readMany(t, 100)

	// A fill that lands before the invalidation is deleted by it.
	ctx := context.Background()
	key, field := DailySalesKey(d.sale.Merchant), dailySalesField(d.day, nil)
	_, gen, _, err := d.cache.getDaily(ctx, key, field)
	if err != nil {
		t.Fatal(err)
	}
	d.paidSale(t, d.branch2, 30_000)
	if err := d.cache.rdb.HDel(ctx, key, field).Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.cache.fillDaily(ctx, key, field, gen, []byte(old)); err != nil {
		t.Fatal(err)
	}
	if v, ok := d.field(t, nil); !ok || v != old {
		t.Fatalf("fill with the current generation not stored: %q", v)
	}
	d.project(t)
	if v, ok := d.field(t, nil); ok {
		t.Fatalf("entry %s survived the invalidation", v)
	}
	d.readMany(t, 100)

	// A fill with a generation from before an invalidation is refused even
	// when no entry is there.
	if err := d.cache.fillDaily(ctx, key, field, gen, []byte(old)); err != nil {
		t.Fatal(err)
	}
	if v, ok := d.field(t, nil); ok && v == old {
		t.Fatal("a fill with an old generation was stored")
	}
}

// A TransactionPaid that the runner applies from the store to fill a gap is
// not handed to AfterCommit; the later event that revealed the gap still
// invalidates the day.
func TestDailySalesInvalidatedThroughAStreamGap(t *testing.T) {
	rdb := redisClient(t)
	d := newToday(t, rdb)
	d.readMany(t, 1) // today's empty lists, cached
	s := d.paidSale(t, d.branch1, 10_000)
	s.Complete(d.at)
	last := s.Events[len(s.Events)-1]
	if last.Type != "TransactionCompleted" {
		t.Fatalf("last event %s", last.Type)
	}
	// Deliver the sale's last event alone: the runner fills the sale's
	// earlier events (TransactionPaid among them) from the store.
	if err := d.runner.Handle(context.Background(), []eventstore.RecordedEvent{last}); err != nil {
		t.Fatal(err)
	}
	if v, ok := d.field(t, nil); ok {
		t.Fatalf("entry %s survived a commit that counted a sale", v)
	}
	d.readMany(t, 50)
	d.project(t) // redeliveries: nothing changes
	d.readMany(t, 50)
}

func TestDailySalesRedisDownFallsBackToPostgres(t *testing.T) {
	rdb, err := NewClient("redis://127.0.0.1:1/0", 0) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	d := newToday(t, rdb)
	for _, price := range []int64{10_000, 20_000} {
		d.paidSale(t, d.branch1, price)
		d.project(t) // the invalidations fail, and are counted
		start := time.Now()
		d.readMany(t, 20)
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("60 reads took %s with Redis down", el)
		}
	}
	got, err := d.daily.DailySales(context.Background(), d.sale.Merchant, d.day, d.day, nil)
	if err != nil || len(got) != 1 || got[0].Count != 2 {
		t.Fatalf("got %+v, %v; want one row of two sales", got, err)
	}
	if n := d.counter(t, "pos.cache.fallbacks"); n < 121 {
		t.Fatalf("fallback counter %d, want at least 121", n)
	}
	if n := d.counter(t, "pos.cache.invalidation.errors"); n == 0 {
		t.Fatal("failed invalidations were not counted")
	}
	// Not distrusting (as another process would not): every read still
	// answers from PostgreSQL, each counted.
	d.cache.distrustUntil.Store(0)
	before := d.counter(t, "pos.cache.fallbacks")
	d.readMany(t, 10)
	if n := d.counter(t, "pos.cache.fallbacks") - before; n != 30 {
		t.Fatalf("%d fallbacks for 30 reads with Redis down", n)
	}
	if _, err := d.daily.DailySales(context.Background(), d.sale.Merchant, d.day, d.day.AddDate(0, 0, -1), nil); !errors.Is(err, queries.ErrInvalidFilter) {
		t.Fatalf("range the wrong way round: %v, want ErrInvalidFilter", err)
	}
}

func TestDailySalesOnlyTodayIsCached(t *testing.T) {
	rdb := redisClient(t)
	d := newToday(t, rdb)
	d.paidSale(t, d.branch1, 10_000)
	d.project(t)
	ctx := context.Background()
	for _, r := range [][2]time.Time{
		{d.day.AddDate(0, 0, -1), d.day},                   // two days
		{d.day.AddDate(0, 0, -7), d.day.AddDate(0, 0, -7)}, // a past day
		{d.day.AddDate(0, 0, 3), d.day.AddDate(0, 0, 3)},   // a future day
	} {
		want, err := d.pg.DailySales(ctx, d.sale.Merchant, r[0], r[1], nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.daily.DailySales(ctx, d.sale.Merchant, r[0], r[1], nil)
		if err != nil || mustJSON(t, got) != mustJSON(t, want) {
			t.Fatalf("%v..%v: %s, %v; want %s", r[0], r[1], mustJSON(t, got), err, mustJSON(t, want))
		}
	}
	if h, m := d.counter(t, "pos.cache.hits"), d.counter(t, "pos.cache.misses"); h != 0 || m != 0 {
		t.Fatalf("other days went through the cache: hits %d, misses %d", h, m)
	}
	if n, err := d.cache.rdb.HLen(ctx, DailySalesKey(d.sale.Merchant)).Result(); err != nil || n != 0 {
		t.Fatalf("%d fields cached (err %v), want none", n, err)
	}
	// Today: a miss, then a hit, equal to PostgreSQL's answer.
	want := d.want(t, nil)
	for range 2 {
		got, err := d.daily.DailySales(ctx, d.sale.Merchant, d.day, d.day, nil)
		if err != nil || mustJSON(t, got) != want {
			t.Fatalf("today: %s, %v; want %s", mustJSON(t, got), err, want)
		}
	}
	if h, m := d.counter(t, "pos.cache.hits"), d.counter(t, "pos.cache.misses"); h != 1 || m != 1 {
		t.Fatalf("hits %d, misses %d; want 1 and 1", h, m)
	}
	// Another merchant's key is another key.
	other, err := d.daily.DailySales(ctx, projtest.NewID(t), d.day, d.day, nil)
	if err != nil || len(other) != 0 {
		t.Fatalf("another merchant: %+v, %v; want nothing", other, err)
	}
}

func TestDailySalesEntryTTLIsNotExtended(t *testing.T) {
	rdb := redisClient(t)
	d := newToday(t, rdb)
	ctx := context.Background()
	key := DailySalesKey(d.sale.Merchant)
	if _, err := d.daily.DailySales(ctx, d.sale.Merchant, d.day, d.day, nil); err != nil {
		t.Fatal(err)
	}
	first, err := d.cache.rdb.PTTL(ctx, key).Result()
	if err != nil || first <= 0 || first > d.cache.ttl {
		t.Fatalf("TTL %s (err %v) after the first fill, want (0, %s]", first, err, d.cache.ttl)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := d.daily.DailySales(ctx, d.sale.Merchant, d.day, d.day, &d.branch1); err != nil {
		t.Fatal(err)
	}
	if n, err := d.cache.rdb.HLen(ctx, key).Result(); err != nil || n != 2 {
		t.Fatalf("%d fields (err %v), want 2", n, err)
	}
	if second, err := d.cache.rdb.PTTL(ctx, key).Result(); err != nil || second >= first {
		t.Fatalf("TTL %s (err %v) after a second fill, want below %s: fills must not extend it", second, err, first)
	}
	if g, err := d.cache.rdb.PTTL(ctx, key+":g").Result(); err != nil || g != -2 {
		t.Fatalf("generation TTL %s (err %v) before any invalidation, want none (-2)", g, err)
	}
	if err := d.cache.InvalidateDailySales(ctx, d.sale.Merchant); err != nil {
		t.Fatal(err)
	}
	if g, err := d.cache.rdb.PTTL(ctx, key+":g").Result(); err != nil || g <= d.cache.ttl {
		t.Fatalf("generation TTL %s (err %v), want above the entries' %s", g, err, d.cache.ttl)
	}
}

func TestTodaySomewhere(t *testing.T) {
	day := func(s string) time.Time {
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, c := range []struct {
		now      string
		from, to string
		want     bool
	}{
		{"2025-03-10T12:00:00Z", "2025-03-10", "2025-03-10", true},
		{"2025-03-10T12:00:00Z", "2025-03-09", "2025-03-09", false}, // 00:00 of the 10th at UTC−12
		{"2025-03-10T11:59:00Z", "2025-03-09", "2025-03-09", true},  // 23:59 of the 9th at UTC−12
		{"2025-03-10T09:59:00Z", "2025-03-11", "2025-03-11", false}, // 23:59 of the 10th at UTC+14
		{"2025-03-10T10:00:00Z", "2025-03-11", "2025-03-11", true},  // 00:00 of the 11th at UTC+14
		{"2025-03-10T12:00:00Z", "2025-03-08", "2025-03-08", false},
		{"2025-03-10T12:00:00Z", "2025-03-10", "2025-03-11", false}, // two days
	} {
		now, err := time.Parse(time.RFC3339, c.now)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := todaySomewhere(day(c.from), day(c.to), now)
		if ok != c.want || !got.Equal(day(c.from)) {
			t.Errorf("now %s, %s..%s: %v (%s), want %v", c.now, c.from, c.to, ok, got, c.want)
		}
	}
}

func TestDailySalesMerchants(t *testing.T) {
	m1, m2 := projtest.NewID(t), projtest.NewID(t)
	ev := func(category string, merchant uuid.UUID, typ string) eventstore.RecordedEvent {
		return eventstore.RecordedEvent{Stream: eventstore.StreamName(category, merchant.String(), projtest.NewID(t).String()), Type: typ}
	}
	got := dailySalesMerchants([]eventstore.RecordedEvent{
		ev(projections.TransactionCategory, m1, "ItemAdded"),
		ev(projections.TransactionCategory, m2, "TransactionCompleted"),
		ev("settings", m1, "SettingsChanged"),
		ev(projections.TransactionCategory, m1, "TransactionPaid"),
		ev(projections.TransactionCategory, m2, "RefundIssued"),
		ev(projections.TransactionCategory, m1, "SomethingNew"),
	})
	if len(got) != 2 || got[0] != m2 || got[1] != m1 {
		t.Fatalf("merchants %v, want [%s %s]", got, m2, m1)
	}
	// The event types that change a day's row invalidate; every pre-sale
	// type is a transaction event type.
	for _, typ := range []string{"TransactionPaid", "TransactionVoided", "RefundIssued", "TransactionCompleted"} {
		if preSaleEvents[typ] {
			t.Errorf("%s may come with (or after) a change of a day but does not invalidate", typ)
		}
	}
	for typ := range preSaleEvents {
		if !slices.Contains(transaction.EventTypes(), typ) {
			t.Errorf("preSaleEvents lists %s, which is no transaction event", typ)
		}
	}
}
