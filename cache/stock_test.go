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

	"pos/commands"
	"pos/domain"
	"pos/domain/money"
	"pos/domain/stock"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/processes"
	"pos/projections"
	"pos/projections/projtest"
	"pos/queries"
)

// shelf is a world's merchant moving stock through the real command
// handlers, with the stock process manager (payment sells, void releases,
// refund returns) behind a runner of its own, and a StockReader.
type shelf struct {
	*world
	h      *commands.Handlers
	pm     *projections.Runner
	pmPos  eventstore.Position
	meta   commands.Meta
	b1, b2 uuid.UUID
	levels *StockReader
}

func newShelf(t *testing.T, rdb *redis.Client) *shelf {
	t.Helper()
	w := newWorld(t, rdb)
	s := &shelf{world: w, b1: projtest.NewID(t), b2: projtest.NewID(t)}
	s.h = commands.New(w.env.Store, &commands.Deps{
		Now:       func() time.Time { return time.Now().UTC() },
		NewID:     func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes:     commands.NewCodes(w.env.Pool),
		Snapshots: commands.NewSnapshots(0),
	})
	var err error
	s.pm, err = projections.NewRunner(w.env.Pool, w.env.Store, projections.Options{}, &processes.Stock{Handlers: s.h, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.meta = commands.Meta{MerchantID: w.sale.Merchant, Actor: "manager-1", Role: "MANAGER"}
	s.levels = NewStockReader(w.cache, w.pg)
	return s
}

// step runs the process manager over the new events (it may append stock
// events), then projects everything (and so invalidates the cache).
func (s *shelf) step(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := s.env.Store.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	pos, err := s.pm.Catchup(ctx, s.pmPos)
	if err != nil {
		t.Fatalf("process managers: %v", err)
	}
	s.pmPos = pos
	if err := s.env.Store.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	s.project(t)
}

func (s *shelf) receive(t *testing.T, branch uuid.UUID, sku string, qty int64, cost money.Amount) {
	t.Helper()
	if _, _, err := s.h.ReceiveStock(context.Background(), s.meta, commands.ReceiveStock{BranchID: branch, SKU: sku, Qty: qty, UnitCost: cost}); err != nil {
		t.Fatalf("receive %s: %v", sku, err)
	}
}

// checkout opens a sale of qty sku at branch and checks it out (which
// reserves the units).
func (s *shelf) checkout(t *testing.T, branch uuid.UUID, sku string, qty int64) *transaction.Transaction {
	t.Helper()
	ctx := context.Background()
	tx, _, err := s.h.OpenTransaction(ctx, s.meta, commands.OpenTransaction{BranchID: branch})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if _, _, err := s.h.AddItem(ctx, s.meta, tx.ID(), transaction.AddItem{SKU: sku, Name: sku, Qty: qty, UnitPrice: 1_000}); err != nil {
		t.Fatalf("add item: %v", err)
	}
	tx, _, err = s.h.Checkout(ctx, s.meta, tx.ID())
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	return tx
}

// stockQuery is one GET /v1/stock first page.
type stockQuery struct {
	f     queries.StockFilter
	limit int
}

func (q stockQuery) String() string {
	b := "*"
	if q.f.BranchID != nil {
		b = q.f.BranchID.String()[:8]
	}
	return fmt.Sprintf("branch %s sku %q limit %d", b, q.f.SKU, q.limit)
}

// stockQueries are the first pages every read check goes through; the first
// holds every level of the merchant.
func (s *shelf) stockQueries() []stockQuery {
	return []stockQuery{
		{},
		{f: queries.StockFilter{BranchID: &s.b1}},
		{f: queries.StockFilter{BranchID: &s.b2}, limit: 10},
		{f: queries.StockFilter{SKU: "MILK"}},
		{f: queries.StockFilter{BranchID: &s.b1, SKU: "MILK"}},
		{limit: 1}, // a first page with a next cursor
	}
}

// want is what PostgreSQL answers for q.
func (s *shelf) want(t *testing.T, q stockQuery) string {
	t.Helper()
	page, err := s.pg.Stock(context.Background(), s.sale.Merchant, q.f, "", q.limit)
	if err != nil {
		t.Fatal(err)
	}
	return mustJSON(t, page)
}

// snapshot is PostgreSQL's answer for every query.
func (s *shelf) snapshot(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, q := range s.stockQueries() {
		out = append(out, s.want(t, q))
	}
	return out
}

// readMany reads every query n times concurrently through the cache and
// fails on any answer other than PostgreSQL's.
func (s *shelf) readMany(t *testing.T, n int) {
	t.Helper()
	for _, q := range s.stockQueries() {
		want := s.want(t, q)
		concurrently(t, n, func() error {
			got, err := s.levels.Stock(context.Background(), s.sale.Merchant, q.f, "", q.limit)
			if err != nil {
				return err
			}
			if g := mustJSON(t, got); g != want {
				return fmt.Errorf("%s: stale read %s, want %s", q, g, want)
			}
			return nil
		})
	}
}

// field returns the cached page of q, if any.
func (s *shelf) field(t *testing.T, q stockQuery) (string, bool) {
	t.Helper()
	v, err := s.cache.rdb.HGet(context.Background(), StockKey(s.sale.Merchant), stockField(q.f, q.limit)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

// gen returns the generation stored at key (0 when there is none).
func (c *Cache) gen(t *testing.T, key string) uint64 {
	t.Helper()
	g, err := c.rdb.Get(context.Background(), key).Result()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(g, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStockNoStaleReadAfterUpdates(t *testing.T) {
	rdb := redisClient(t)
	s := newShelf(t, rdb)
	ctx := context.Background()
	var paid, held *transaction.Transaction
	updates := []struct {
		name string
		do   func()
	}{
		{"receipt", func() { s.receive(t, s.b1, "MILK", 10, 100) }},
		{"receipt at the other branch", func() { s.receive(t, s.b2, "BREAD", 5, 200) }},
		{"second receipt (average cost)", func() { s.receive(t, s.b1, "MILK", 5, 130) }},
		{"checkout reserves", func() { paid = s.checkout(t, s.b1, "MILK", 3) }},
		{"payment sells (process manager)", func() {
			if _, _, err := s.h.AddPayment(ctx, s.meta, paid.ID(), transaction.AddPayment{Method: transaction.MethodCash, Amount: paid.Due()}); err != nil {
				t.Fatalf("pay: %v", err)
			}
		}},
		{"transfer", func() {
			if _, err := s.h.TransferStock(ctx, s.meta, commands.TransferStock{FromBranchID: s.b1, ToBranchID: s.b2, SKU: "MILK", Qty: 4}); err != nil {
				t.Fatalf("transfer: %v", err)
			}
		}},
		{"adjustment", func() {
			if _, _, err := s.h.AdjustStock(ctx, s.meta, commands.AdjustStock{BranchID: s.b2, SKU: "MILK", Delta: -1, Reason: "broken carton"}); err != nil {
				t.Fatalf("adjust: %v", err)
			}
		}},
		{"second checkout reserves", func() { held = s.checkout(t, s.b1, "MILK", 2) }},
		{"void releases (process manager)", func() {
			if _, _, err := s.h.VoidTransaction(ctx, s.meta, held.ID(), transaction.Void{Reason: "changed mind"}); err != nil {
				t.Fatalf("void: %v", err)
			}
		}},
		{"refund returns (process manager)", func() {
			line := paid.Lines()[0].LineID
			if _, _, err := s.h.IssueRefund(ctx, s.meta, paid.ID(), transaction.Refund{Reason: "spilled", Lines: []transaction.RefundLine{{LineID: line, Qty: 1}}}); err != nil {
				t.Fatalf("refund: %v", err)
			}
		}},
	}
	s.readMany(t, 100) // fills the cache (no stock yet: empty pages)
	seen := map[string]bool{}
	for i, u := range updates {
		before := s.snapshot(t)
		hits := s.kindCounter(t, "pos.cache.hits", "stock_levels")
		u.do()
		s.step(t)
		after := s.snapshot(t)
		if before[0] == after[0] {
			t.Fatalf("update %d (%s) changed no level; the test proves nothing", i, u.name)
		}
		s.readMany(t, 100) // concurrent misses fill it
		s.readMany(t, 1)
		if s.kindCounter(t, "pos.cache.hits", "stock_levels") == hits {
			t.Fatalf("update %d (%s): no cache hit after it was filled", i, u.name)
		}
		for _, q := range s.stockQueries() {
			if v, ok := s.field(t, q); !ok || v != s.want(t, q) {
				t.Fatalf("update %d (%s), %s: entry %q (present %v), want %s", i, u.name, q, v, ok, s.want(t, q))
			}
		}
	}
	// Every stock event type went through the cache's invalidation (read
	// once other tests' transactions no longer hold the feed's horizon).
	if err := s.env.Store.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	events, err := s.env.Store.ReadAll(ctx, eventstore.Start, eventstore.Filter{}, eventstore.MaxReadLimit)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if category, _, _, ok := eventstore.ParseStreamName(e.Stream); ok && category == projections.StockCategory {
			seen[e.Type] = true
		}
	}
	for _, typ := range stock.EventTypes() {
		if !seen[typ] {
			t.Errorf("no %s among the updates", typ)
		}
	}
	if n := s.counter(t, "pos.cache.fallbacks"); n != 0 {
		t.Fatalf("%d fallbacks with Redis up", n)
	}
	if n := s.counter(t, "pos.cache.invalidation.errors"); n != 0 {
		t.Fatalf("%d failed invalidations with Redis up", n)
	}
}

// lateStock reads PostgreSQL, then runs between (once) before answering:
// the reader's fill comes after whatever between does.
type lateStock struct {
	next    StockGetter
	between func()
	once    sync.Once
}

func (g *lateStock) Stock(ctx context.Context, merchant uuid.UUID, f queries.StockFilter, cursor string, limit int) (queries.StockPage, error) {
	page, err := g.next.Stock(ctx, merchant, f, cursor, limit)
	g.once.Do(g.between)
	return page, err
}

func TestStockLateFillNeverLeavesStaleEntry(t *testing.T) {
	rdb := redisClient(t)
	s := newShelf(t, rdb)
	ctx := context.Background()
	all := stockQuery{}
	s.receive(t, s.b1, "MILK", 10, 100)
	s.step(t)
	old := s.want(t, all)
	// The reader misses, reads the old levels from PostgreSQL; the projector
	// then commits a receipt and invalidates; only then does the reader
	// fill with the old levels.
	late := NewStockReader(s.cache, &lateStock{next: s.pg, between: func() {
		s.receive(t, s.b1, "MILK", 5, 130)
		s.step(t)
	}})
	got, err := late.Stock(ctx, s.sale.Merchant, all.f, "", all.limit)
	if err != nil || mustJSON(t, got) != old {
		t.Fatalf("late read: %s, %v; want %s (what PostgreSQL had)", mustJSON(t, got), err, old)
	}
	if v, ok := s.field(t, all); ok {
		t.Fatalf("late fill stored %s; the generation should refuse it", v)
	}
	if s.want(t, all) == old {
		t.Fatal("the receipt changed nothing; the test proves nothing")
	}
	s.readMany(t, 100)

	// A fill that lands before the invalidation is deleted by it.
	key, field := StockKey(s.sale.Merchant), stockField(all.f, all.limit)
	_, gen, _, err := s.cache.getDaily(ctx, key, field)
	if err != nil {
		t.Fatal(err)
	}
	before := s.want(t, all)
	s.checkout(t, s.b1, "MILK", 2) // a reservation, not projected yet
	if err := s.cache.rdb.HDel(ctx, key, field).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.cache.fillDaily(ctx, key, field, gen, []byte(before)); err != nil {
		t.Fatal(err)
	}
	if v, ok := s.field(t, all); !ok || v != before {
		t.Fatalf("fill with the current generation not stored: %q", v)
	}
	s.step(t)
	if v, ok := s.field(t, all); ok {
		t.Fatalf("entry %s survived the invalidation", v)
	}
	if s.want(t, all) == before {
		t.Fatal("the reservation changed nothing; the test proves nothing")
	}
	s.readMany(t, 100)

	// A fill with a generation from before an invalidation is refused even
	// when no entry is there.
	if err := s.cache.rdb.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.cache.fillDaily(ctx, key, field, gen, []byte(old)); err != nil {
		t.Fatal(err)
	}
	if v, ok := s.field(t, all); ok {
		t.Fatalf("a fill with an old generation was stored: %s", v)
	}
}

func TestStockRedisDownFallsBackToPostgres(t *testing.T) {
	rdb, err := NewClient("redis://127.0.0.1:1/0", 0) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	s := newShelf(t, rdb)
	reads := int64(20 * len(s.stockQueries()))
	for _, qty := range []int64{10, 20} {
		s.receive(t, s.b1, "MILK", qty, 100)
		s.step(t) // the invalidations fail, and are counted
		start := time.Now()
		s.readMany(t, 20)
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("%d reads took %s with Redis down", reads, el)
		}
	}
	got, err := s.levels.Stock(context.Background(), s.sale.Merchant, queries.StockFilter{}, "", 0)
	if err != nil || len(got.Items) != 1 || got.Items[0].OnHand != 30 || got.Items[0].SKU != "MILK" {
		t.Fatalf("got %+v, %v; want MILK at 30 on hand", got, err)
	}
	if n := s.kindCounter(t, "pos.cache.fallbacks", "stock_levels"); n < 2*reads+1 {
		t.Fatalf("fallback counter %d, want at least %d", n, 2*reads+1)
	}
	if n := s.kindCounter(t, "pos.cache.invalidation.errors", "stock_levels"); n < 2 {
		t.Fatalf("%d failed stock invalidations counted, want at least 2", n)
	}
	// Not distrusting (as another process would not): every read still
	// answers from PostgreSQL, each counted.
	s.cache.distrustUntil.Store(0)
	before := s.kindCounter(t, "pos.cache.fallbacks", "stock_levels")
	s.readMany(t, 10)
	if n := s.kindCounter(t, "pos.cache.fallbacks", "stock_levels") - before; n != int64(10*len(s.stockQueries())) {
		t.Fatalf("%d fallbacks for %d reads with Redis down", n, 10*len(s.stockQueries()))
	}
	var verr *domain.ValidationError
	if _, err := s.levels.Stock(context.Background(), s.sale.Merchant, queries.StockFilter{SKU: " MILK"}, "", 0); !errors.As(err, &verr) {
		t.Fatalf("malformed SKU: %v, want a validation error", err)
	}
}

// Only stock ledger events invalidate the stock levels, and they invalidate
// nothing else.
func TestStockInvalidatedByStockEventsOnly(t *testing.T) {
	rdb := redisClient(t)
	s := newShelf(t, rdb)
	ctx := context.Background()
	stockGen, dailyGen := StockKey(s.sale.Merchant)+":g", DailySalesKey(s.sale.Merchant)+":g"
	s.receive(t, s.b1, "MILK", 10, 100)
	s.step(t)
	s.readMany(t, 1)
	g0, d0 := s.cache.gen(t, stockGen), s.cache.gen(t, dailyGen)
	if g0 == 0 {
		t.Fatal("the receipt did not invalidate the stock levels")
	}

	// A sale rung up, paid, completed and refunded with transaction events
	// alone (no process manager here, so no stock moves), and a settings
	// change: the days' sales are invalidated, the stock levels are not.
	sale := s.env.OpenSale(t, s.sale.Merchant, s.b1, "T-001", time.Now().UTC())
	sale.AddItem("MILK", 1, 10_000, 1_100, time.Now().UTC())
	sale.Checkout(time.Now().UTC())
	sale.PayDue(time.Now().UTC())
	sale.Complete(time.Now().UTC())
	sale.RefundAmount(1_000, time.Now().UTC())
	s.env.ChangeSettings(t, s.sale.Merchant, "Asia/Jakarta", time.Now().UTC())
	s.project(t)
	if d := s.cache.gen(t, dailyGen); d == d0 {
		t.Fatal("the paid sale did not invalidate the daily sales; the test proves nothing")
	}
	if g := s.cache.gen(t, stockGen); g != g0 {
		t.Fatalf("stock generation %d after transaction and settings events, want %d", g, g0)
	}
	for _, q := range s.stockQueries() {
		if v, ok := s.field(t, q); !ok || v != s.want(t, q) {
			t.Fatalf("%s: entry %q (present %v) after transaction events, want %s", q, v, ok, s.want(t, q))
		}
	}

	// A stock event invalidates the stock levels, and neither a cached
	// transaction detail nor the daily sales.
	if _, err := s.reader.GetTransaction(ctx, s.sale.Merchant, sale.ID); err != nil {
		t.Fatal(err)
	}
	d1 := s.cache.gen(t, dailyGen)
	if _, _, err := s.h.AdjustStock(ctx, s.meta, commands.AdjustStock{BranchID: s.b1, SKU: "MILK", Delta: -1, Reason: "count"}); err != nil {
		t.Fatal(err)
	}
	s.project(t)
	if g := s.cache.gen(t, stockGen); g != g0+1 {
		t.Fatalf("stock generation %d after an adjustment, want %d", g, g0+1)
	}
	if _, ok := s.field(t, stockQuery{}); ok {
		t.Fatal("the adjustment left the stock levels cached")
	}
	if d := s.cache.gen(t, dailyGen); d != d1 {
		t.Fatalf("daily-sales generation %d after a stock event, want %d", d, d1)
	}
	if _, _, ok, err := s.cache.get(ctx, TransactionKey(s.sale.Merchant, sale.ID)); err != nil || !ok {
		t.Fatalf("a stock event dropped a transaction entry (present %v, err %v)", ok, err)
	}
	s.readMany(t, 20)
}

func TestStockMerchants(t *testing.T) {
	m1, m2 := projtest.NewID(t), projtest.NewID(t)
	ev := func(category string, merchant uuid.UUID, typ string) eventstore.RecordedEvent {
		return eventstore.RecordedEvent{Stream: eventstore.StreamName(category, merchant.String(), projtest.NewID(t).String()), Type: typ}
	}
	events := []eventstore.RecordedEvent{
		ev(projections.TransactionCategory, m1, "TransactionPaid"),
		ev("settings", m1, "SettingsChanged"),
		ev(projections.TransactionCategory, m2, "CheckedOut"),
	}
	if got := stockMerchants(events); len(got) != 0 {
		t.Fatalf("merchants %v for no stock event, want none", got)
	}
	// Every stock event type invalidates, and so would a later one.
	for _, typ := range append(stock.EventTypes(), "SomethingNew") {
		got := stockMerchants(append(slices.Clone(events), ev(projections.StockCategory, m2, typ)))
		if len(got) != 1 || got[0] != m2 {
			t.Errorf("%s: merchants %v, want [%s]", typ, got, m2)
		}
	}
	got := stockMerchants([]eventstore.RecordedEvent{
		ev(projections.StockCategory, m2, "StockSold"),
		ev(projections.TransactionCategory, m1, "TransactionPaid"),
		ev(projections.StockCategory, m1, "StockReserved"),
		ev(projections.StockCategory, m2, "StockReceived"),
		{Stream: "stock-not-a-merchant-x", Type: "StockReceived"},
	})
	if len(got) != 2 || got[0] != m2 || got[1] != m1 {
		t.Fatalf("merchants %v, want [%s %s]", got, m2, m1)
	}
}

func TestStockOnlyFirstPagesAreCached(t *testing.T) {
	rdb := redisClient(t)
	s := newShelf(t, rdb)
	ctx := context.Background()
	for _, sku := range []string{"BREAD", "EGGS", "MILK"} {
		s.receive(t, s.b1, sku, 5, 100)
	}
	s.step(t)
	key := StockKey(s.sale.Merchant)
	counts := func() (int64, int64) {
		return s.kindCounter(t, "pos.cache.hits", "stock_levels"), s.kindCounter(t, "pos.cache.misses", "stock_levels")
	}

	// A first page of one: a miss, then a hit, equal to PostgreSQL's answer.
	first, err := s.pg.Stock(ctx, s.sale.Merchant, queries.StockFilter{}, "", 1)
	if err != nil || first.NextCursor == "" {
		t.Fatalf("first page %+v, %v; want a next cursor", first, err)
	}
	for range 2 {
		got, err := s.levels.Stock(ctx, s.sale.Merchant, queries.StockFilter{}, "", 1)
		if err != nil || mustJSON(t, got) != mustJSON(t, first) {
			t.Fatalf("first page: %s, %v; want %s", mustJSON(t, got), err, mustJSON(t, first))
		}
	}
	if h, m := counts(); h != 1 || m != 1 {
		t.Fatalf("hits %d, misses %d; want 1 and 1", h, m)
	}
	// The next page goes to PostgreSQL, uncounted and not cached; so do an
	// altered cursor and a malformed SKU, whose errors come through.
	want, err := s.pg.Stock(ctx, s.sale.Merchant, queries.StockFilter{}, first.NextCursor, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.levels.Stock(ctx, s.sale.Merchant, queries.StockFilter{}, first.NextCursor, 1)
	if err != nil || mustJSON(t, got) != mustJSON(t, want) || got.Items[0].SKU != "EGGS" {
		t.Fatalf("second page: %s, %v; want %s", mustJSON(t, got), err, mustJSON(t, want))
	}
	if _, err := s.levels.Stock(ctx, s.sale.Merchant, queries.StockFilter{}, first.NextCursor+"x", 1); !errors.Is(err, queries.ErrBadCursor) {
		t.Fatalf("altered cursor: %v, want ErrBadCursor", err)
	}
	var verr *domain.ValidationError
	if _, err := s.levels.Stock(ctx, s.sale.Merchant, queries.StockFilter{SKU: "MILK\n"}, "", 0); !errors.As(err, &verr) {
		t.Fatalf("malformed SKU: %v, want a validation error", err)
	}
	if h, m := counts(); h != 1 || m != 1 {
		t.Fatalf("later pages or errors went through the cache: hits %d, misses %d", h, m)
	}
	if n, err := s.cache.rdb.HLen(ctx, key).Result(); err != nil || n != 1 {
		t.Fatalf("%d fields (err %v), want the first page's only", n, err)
	}

	// The limit is the one the query applies: none and DefaultLimit share a
	// field, and so do MaxLimit and more.
	for _, limit := range []int{0, queries.DefaultLimit, -3, queries.MaxLimit, queries.MaxLimit + 1} {
		if _, err := s.levels.Stock(ctx, s.sale.Merchant, queries.StockFilter{SKU: "MILK"}, "", limit); err != nil {
			t.Fatal(err)
		}
	}
	if h, m := counts(); h != 4 || m != 3 {
		t.Fatalf("hits %d, misses %d after five reads of two pages; want 4 and 3", h, m)
	}
	// A SKU filter holding the field's separator has its own field.
	odd := queries.StockFilter{SKU: "A|1"}
	if got, err := s.levels.Stock(ctx, s.sale.Merchant, odd, "", 0); err != nil || len(got.Items) != 0 {
		t.Fatalf("SKU %q: %+v, %v; want nothing", odd.SKU, got, err)
	}
	if n, err := s.cache.rdb.HLen(ctx, key).Result(); err != nil || n != 4 {
		t.Fatalf("%d fields (err %v), want 4", n, err)
	}

	// Fills never extend the hash's TTL; the generation outlives entries.
	first1, err := s.cache.rdb.PTTL(ctx, key).Result()
	if err != nil || first1 <= 0 || first1 > s.cache.ttl {
		t.Fatalf("TTL %s (err %v), want (0, %s]", first1, err, s.cache.ttl)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := s.levels.Stock(ctx, s.sale.Merchant, queries.StockFilter{BranchID: &s.b2}, "", 0); err != nil {
		t.Fatal(err)
	}
	if second, err := s.cache.rdb.PTTL(ctx, key).Result(); err != nil || second >= first1 {
		t.Fatalf("TTL %s (err %v) after another fill, want below %s", second, err, first1)
	}
	if g, err := s.cache.rdb.PTTL(ctx, key+":g").Result(); err != nil || g <= s.cache.ttl {
		t.Fatalf("generation TTL %s (err %v), want above the entries' %s", g, err, s.cache.ttl)
	}

	// Another merchant's key is another key.
	other, err := s.levels.Stock(ctx, projtest.NewID(t), queries.StockFilter{}, "", 1)
	if err != nil || len(other.Items) != 0 {
		t.Fatalf("another merchant: %+v, %v; want nothing", other, err)
	}
}
