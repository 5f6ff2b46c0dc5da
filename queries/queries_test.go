package queries_test

import (
	"bytes"
	"context"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"pos/domain/money"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/queries"
)

var t0 = time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC) // 09:00 in Jakarta

// fixture is two merchants' sales, projected, and a reader on them.
type fixture struct {
	env              *projtest.Env
	reader           *queries.Reader
	a, b             uuid.UUID // merchants
	branch1, branch2 uuid.UUID // merchant a's branches
	salesA, salesB   []*projtest.Sale
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := projtest.New(t)
	f := &fixture{env: env, a: projtest.NewID(t), b: projtest.NewID(t), branch1: projtest.NewID(t), branch2: projtest.NewID(t)}
	// Merchant a: seven sales, one a minute, on two branches (2 and 5 on
	// branch 2); the fourth and fifth opened at the same instant (the id
	// breaks the tie). Sales 0, 2, 4 and 6 are paid, 6 also refunded the
	// next day; 1 is voided.
	for i := range 7 {
		branch := f.branch1
		if i%3 == 2 {
			branch = f.branch2
		}
		at := t0.Add(time.Duration(min(i, 3)) * time.Minute)
		if i > 4 {
			at = t0.Add(time.Duration(i) * time.Minute)
		}
		s := env.OpenSale(t, f.a, branch, "A-00"+string(rune('0'+i)), at)
		line := s.AddItem("TEA", int64(i+1), 10_000, 1_100, at)
		switch i {
		case 0, 2, 4, 6:
			s.Checkout(at)
			s.PayDue(at)
			if i == 6 {
				s.RefundLine(line, 1, at.Add(24*time.Hour))
			}
		case 1:
			s.Void(at)
		}
		f.salesA = append(f.salesA, s)
	}
	for i := range 3 {
		s := env.OpenSale(t, f.b, projtest.NewID(t), "B-00"+string(rune('0'+i)), t0)
		s.AddItem("COFFEE", 1, 20_000, 0, t0)
		s.Checkout(t0)
		s.PayDue(t0)
		f.salesB = append(f.salesB, s)
	}
	env.ChangeSettings(t, f.a, "Asia/Makassar", t0.Add(-time.Hour))
	env.ChangeSettings(t, f.b, "UTC", t0.Add(-time.Hour))

	r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Catchup(context.Background(), eventstore.Start); err != nil {
		t.Fatalf("Catchup: %v", err)
	}
	f.reader = newReader(t, env.URL, bytes.Repeat([]byte("k"), 32))
	return f
}

func newReader(t *testing.T, url string, key []byte) *queries.Reader {
	t.Helper()
	pool, err := queries.ConnectSized(context.Background(), url, 4)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(pool.Close)
	k, err := queries.NewCursorKey(key)
	if err != nil {
		t.Fatal(err)
	}
	r, err := queries.New(pool, k)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantOrder returns the ids of sales, newest opened first, ties by id
// descending.
func wantOrder(sales []*projtest.Sale, keep func(*projtest.Sale) bool) []uuid.UUID {
	var kept []*projtest.Sale
	for _, s := range sales {
		if keep == nil || keep(s) {
			kept = append(kept, s)
		}
	}
	slices.SortFunc(kept, func(x, y *projtest.Sale) int {
		if c := y.Aggregate().OpenedAt().Compare(x.Aggregate().OpenedAt()); c != 0 {
			return c
		}
		return bytes.Compare(y.ID[:], x.ID[:])
	})
	ids := make([]uuid.UUID, len(kept))
	for i, s := range kept {
		ids[i] = s.ID
	}
	return ids
}

// listAll pages through a listing with limit and returns the ids and the
// number of pages.
func listAll(t *testing.T, r *queries.Reader, merchant uuid.UUID, f queries.TransactionFilter, limit int) ([]uuid.UUID, int) {
	t.Helper()
	var ids []uuid.UUID
	cursor, pages := "", 0
	for {
		page, err := r.ListTransactions(context.Background(), merchant, f, cursor, limit)
		if err != nil {
			t.Fatalf("ListTransactions page %d: %v", pages+1, err)
		}
		pages++
		if len(page.Items) > limit {
			t.Fatalf("page of %d items with limit %d", len(page.Items), limit)
		}
		for _, it := range page.Items {
			ids = append(ids, it.ID)
		}
		if page.NextCursor == "" {
			return ids, pages
		}
		cursor = page.NextCursor
		if pages > 100 {
			t.Fatal("paging does not end")
		}
	}
}

func TestListTransactionsPagesThroughEverySale(t *testing.T) {
	f := newFixture(t)
	b2 := f.branch2
	tests := []struct {
		name   string
		filter queries.TransactionFilter
		keep   func(*projtest.Sale) bool
		limit  int
		pages  int
	}{
		{"all, 3 a page", queries.TransactionFilter{}, nil, 3, 3},
		{"all, 7 a page", queries.TransactionFilter{}, nil, 7, 1},
		{"all, 1 a page", queries.TransactionFilter{}, nil, 1, 7},
		{"one branch", queries.TransactionFilter{BranchID: &b2}, func(s *projtest.Sale) bool { return s.Branch == b2 }, 1, 2},
		{"paid", queries.TransactionFilter{Status: "paid"}, func(s *projtest.Sale) bool { return s.Aggregate().Status() == transaction.StatusPaid }, 2, 2},
		{"voided", queries.TransactionFilter{Status: "voided"}, func(s *projtest.Sale) bool { return s.Aggregate().Status() == transaction.StatusVoided }, 2, 1},
		{"opened in [t0+1m, t0+5m)", queries.TransactionFilter{From: t0.Add(time.Minute), To: t0.Add(5 * time.Minute)},
			func(s *projtest.Sale) bool {
				at := s.Aggregate().OpenedAt()
				return !at.Before(t0.Add(time.Minute)) && at.Before(t0.Add(5*time.Minute))
			}, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pages := listAll(t, f.reader, f.a, tt.filter, tt.limit)
			want := wantOrder(f.salesA, tt.keep)
			if !slices.Equal(got, want) {
				t.Errorf("ids %v, want %v", got, want)
			}
			if pages != tt.pages {
				t.Errorf("%d pages, want %d", pages, tt.pages)
			}
		})
	}

	t.Run("merchant b sees only its own", func(t *testing.T) {
		got, _ := listAll(t, f.reader, f.b, queries.TransactionFilter{}, 50)
		if want := wantOrder(f.salesB, nil); !slices.Equal(got, want) {
			t.Errorf("ids %v, want %v", got, want)
		}
	})
	t.Run("items carry the summary", func(t *testing.T) {
		page, err := f.reader.ListTransactions(context.Background(), f.a, queries.TransactionFilter{Status: "partially_refunded"}, "", 0)
		if err != nil || len(page.Items) != 1 {
			t.Fatalf("ListTransactions: %d items, %v", len(page.Items), err)
		}
		s, agg := page.Items[0], f.salesA[6].Aggregate()
		tot := agg.Totals()
		want := queries.TransactionSummary{
			ID: agg.ID(), Code: agg.Code(), BranchID: agg.BranchID(), Status: string(agg.Status()),
			Totals: queries.Totals{Currency: string(tot.Currency), Subtotal: int64(tot.Subtotal), Discount: int64(tot.Discount), Tax: int64(tot.Tax), GrandTotal: int64(tot.GrandTotal)},
			Paid:   int64(agg.Paid()), Refunded: int64(agg.Refunded()), OpenedAt: agg.OpenedAt(), UpdatedAt: s.UpdatedAt, Version: agg.Version(),
		}
		if s != want {
			t.Errorf("item\n%+v, want\n%+v", s, want)
		}
	})
	t.Run("unknown status", func(t *testing.T) {
		_, err := f.reader.ListTransactions(context.Background(), f.a, queries.TransactionFilter{Status: "lost"}, "", 0)
		if !errors.Is(err, queries.ErrInvalidFilter) {
			t.Errorf("ListTransactions: %v, want ErrInvalidFilter", err)
		}
	})
	t.Run("no merchant", func(t *testing.T) {
		_, err := f.reader.ListTransactions(context.Background(), uuid.Nil, queries.TransactionFilter{}, "", 0)
		if !errors.Is(err, queries.ErrNoMerchant) {
			t.Errorf("ListTransactions: %v, want ErrNoMerchant", err)
		}
	})
}

func TestListTransactionsRefusesForeignOrAlteredCursors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	page, err := f.reader.ListTransactions(ctx, f.a, queries.TransactionFilter{}, "", 2)
	if err != nil || page.NextCursor == "" {
		t.Fatalf("first page: next cursor %q, %v", page.NextCursor, err)
	}
	cursor := page.NextCursor
	if _, err := f.reader.ListTransactions(ctx, f.a, queries.TransactionFilter{}, cursor, 2); err != nil {
		t.Fatalf("second page with the genuine cursor: %v", err)
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	b1 := f.branch1
	otherKey := newReader(t, f.env.URL, bytes.Repeat([]byte("x"), 32))
	tests := []struct {
		name     string
		reader   *queries.Reader
		merchant uuid.UUID
		filter   queries.TransactionFilter
		cursor   string
	}{
		{"a character of the position changed", f.reader, f.a, queries.TransactionFilter{}, flip(cursor, 5)},
		{"a character of the id changed", f.reader, f.a, queries.TransactionFilter{}, flip(cursor, 20)},
		{"a character of the MAC changed", f.reader, f.a, queries.TransactionFilter{}, flip(cursor, len(cursor)-3)},
		{"truncated", f.reader, f.a, queries.TransactionFilter{}, cursor[:len(cursor)-4]},
		{"extended", f.reader, f.a, queries.TransactionFilter{}, cursor + "AAAA"},
		{"not base64url", f.reader, f.a, queries.TransactionFilter{}, "!!" + cursor[2:]},
		{"another merchant's", f.reader, f.b, queries.TransactionFilter{}, cursor},
		{"another filter's", f.reader, f.a, queries.TransactionFilter{BranchID: &b1}, cursor},
		{"another status filter's", f.reader, f.a, queries.TransactionFilter{Status: "paid"}, cursor},
		{"another date filter's", f.reader, f.a, queries.TransactionFilter{From: t0}, cursor},
		{"made with another key", otherKey, f.a, queries.TransactionFilter{}, cursor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.reader.ListTransactions(ctx, tt.merchant, tt.filter, tt.cursor, 2)
			if !errors.Is(err, queries.ErrBadCursor) {
				t.Errorf("ListTransactions: %v, want ErrBadCursor", err)
			}
		})
	}
	if strings.Contains(cursor, f.a.String()) || strings.ContainsAny(cursor, "+/=") {
		t.Errorf("cursor %q shows the merchant or is not base64url", cursor)
	}
}

func TestListTransactionsLimits(t *testing.T) {
	env := projtest.New(t)
	merchant := projtest.NewID(t)
	// 501 rows straight into the read model, as its owner: only the page
	// sizes are under test here.
	c, err := pgx.Connect(context.Background(), env.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	_, err = c.Exec(context.Background(), `
        INSERT INTO rm_transactions (merchant_id, transaction_id, code, branch_id, status, currency, prices_include_tax,
            opened_at, updated_at, version, pos_major, pos_minor)
        SELECT $1, gen_random_uuid(), 'X-' || i, gen_random_uuid(), 'draft', 'IDR', false,
            $2::timestamptz + i * interval '1 second', now(), 1, 1, i
        FROM generate_series(1, 501) AS i`, merchant, t0)
	if err != nil {
		t.Fatal(err)
	}
	r := newReader(t, env.URL, bytes.Repeat([]byte("k"), 32))
	for _, tt := range []struct{ limit, want int }{{0, 50}, {-1, 50}, {1, 1}, {500, 500}, {501, 500}, {10_000, 500}} {
		page, err := r.ListTransactions(context.Background(), merchant, queries.TransactionFilter{}, "", tt.limit)
		if err != nil || len(page.Items) != tt.want || page.NextCursor == "" {
			t.Errorf("limit %d: %d items, next %q, %v; want %d and a cursor", tt.limit, len(page.Items), page.NextCursor, err, tt.want)
		}
	}
}

func TestGetTransaction(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := f.salesA[6]
	got, err := f.reader.GetTransaction(ctx, f.a, s.ID)
	if err != nil {
		t.Fatalf("GetTransaction: %v", err)
	}
	agg := s.Aggregate()
	if got.ID != s.ID || got.Code != agg.Code() || got.Status != "partially_refunded" || got.Version != agg.Version() {
		t.Errorf("got %s %s %s v%d, want %s %s partially_refunded v%d", got.ID, got.Code, got.Status, got.Version, s.ID, agg.Code(), agg.Version())
	}
	if got.Position != s.Events[len(s.Events)-1].Position {
		t.Errorf("position %s, want %s", got.Position, s.Events[len(s.Events)-1].Position)
	}
	lines := agg.Lines()
	if len(got.Lines) != 1 || got.Lines[0].LineID != lines[0].LineID || got.Lines[0].Qty != 7 ||
		got.Lines[0].Total != int64(lines[0].Total) || got.Lines[0].RefundedQty != 1 {
		t.Errorf("lines %+v, want one of 7 units, 1 refunded, total %d", got.Lines, lines[0].Total)
	}
	if len(got.Payments) != 1 || got.Payments[0].Method != "CASH" || got.Payments[0].Status != "settled" ||
		got.Payments[0].Applied != int64(agg.Totals().GrandTotal) {
		t.Errorf("payments %+v, want one settled cash payment of the total", got.Payments)
	}
	if len(got.Refunds) != 1 || got.Refunded != int64(agg.Refunded()) || got.Refunds[0].Amount != int64(agg.Refunded()) {
		t.Errorf("refunds %+v (refunded %d), want one of %d", got.Refunds, got.Refunded, agg.Refunded())
	}

	for _, tt := range []struct {
		name         string
		merchant, id uuid.UUID
	}{
		{"another merchant's", f.b, s.ID},
		{"asked by its id from the other side", f.a, f.salesB[0].ID},
		{"missing", f.a, uuid.New()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.reader.GetTransaction(ctx, tt.merchant, tt.id); !errors.Is(err, queries.ErrNotFound) {
				t.Errorf("GetTransaction: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestDailySales(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	day := func(s string) time.Time {
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Merchant a (Asia/Makassar, UTC+8): paid sales 0, 4 and 6 on branch 1, 2 on
	// branch 2, all on the 10th; 6 refunded one unit on the 11th.
	total := func(i int) int64 { return int64(f.salesA[i].Aggregate().Totals().GrandTotal) }
	tax := func(i int) int64 { return int64(f.salesA[i].Aggregate().Totals().Tax) }
	refund := int64(f.salesA[6].Aggregate().Refunded())

	got, err := f.reader.DailySales(ctx, f.a, day("2025-03-01"), day("2025-03-31"), nil)
	if err != nil {
		t.Fatalf("DailySales: %v", err)
	}
	b1, b2 := f.branch1, f.branch2
	if bytes.Compare(b2[:], b1[:]) < 0 {
		b1, b2 = b2, b1
	}
	byBranch := func(b uuid.UUID) []int {
		if b == f.branch1 {
			return []int{0, 4, 6}
		}
		return []int{2}
	}
	var want []queries.DaySales
	for _, b := range []uuid.UUID{b1, b2} {
		d := queries.DaySales{BranchID: b, Date: day("2025-03-10"), Currency: "IDR", ByMethod: map[string]int64{}}
		for _, i := range byBranch(b) {
			d.Count++
			d.Gross += int64(i+1) * 10_000
			d.Tax += tax(i)
			d.Net += total(i) - tax(i)
			d.ByMethod["CASH"] += total(i)
		}
		want = append(want, d)
	}
	want = append(want, queries.DaySales{BranchID: f.branch1, Date: day("2025-03-11"), Currency: "IDR", Refunds: refund, ByMethod: map[string]int64{}})
	if !sameDays(got, want) {
		t.Errorf("daily sales\n%+v, want\n%+v", got, want)
	}

	t.Run("one branch, one day", func(t *testing.T) {
		b := f.branch1
		got, err := f.reader.DailySales(ctx, f.a, day("2025-03-11"), day("2025-03-11"), &b)
		if err != nil || !sameDays(got, want[2:]) {
			t.Errorf("DailySales: %+v, %v; want %+v", got, err, want[2:])
		}
	})
	t.Run("merchant b in UTC", func(t *testing.T) {
		got, err := f.reader.DailySales(ctx, f.b, day("2025-03-10"), day("2025-03-10"), nil)
		if err != nil || len(got) != 3 {
			t.Fatalf("DailySales: %d rows, %v; want 3 (one a branch)", len(got), err)
		}
	})
	t.Run("a range the wrong way round", func(t *testing.T) {
		if _, err := f.reader.DailySales(ctx, f.a, day("2025-03-11"), day("2025-03-10"), nil); !errors.Is(err, queries.ErrInvalidFilter) {
			t.Errorf("DailySales: %v, want ErrInvalidFilter", err)
		}
	})
	t.Run("pages", func(t *testing.T) {
		// Every page size, from the table and from a copy of the whole
		// report (the cache's): the same rows, in order, each once, and
		// the cursors of one path serve the other.
		from, to := day("2025-03-01"), day("2025-03-31")
		for limit := 1; limit <= len(want)+1; limit++ {
			var fromTable, fromCopy []queries.DaySales
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > len(want) {
					t.Fatalf("limit %d: more pages than rows", limit)
				}
				p, err := f.reader.DailySalesPage(ctx, f.a, from, to, nil, cursor, limit)
				if err != nil {
					t.Fatalf("limit %d: DailySalesPage: %v", limit, err)
				}
				c, err := f.reader.PageDays(f.a, from, to, nil, got, cursor, limit)
				if err != nil || !sameDays(c.Days, p.Days) || (c.NextCursor == "") != (p.NextCursor == "") {
					t.Fatalf("limit %d: PageDays %+v, %v; the table gave %+v", limit, c.Days, err, p.Days)
				}
				if len(p.Days) > limit {
					t.Fatalf("limit %d: %d rows", limit, len(p.Days))
				}
				fromTable, fromCopy = append(fromTable, p.Days...), append(fromCopy, c.Days...)
				if p.NextCursor == "" {
					break
				}
				cursor = c.NextCursor // one path's cursor, the other's next page
			}
			if !sameDays(fromTable, want) || !sameDays(fromCopy, want) {
				t.Errorf("limit %d: pages gave %+v, want %+v", limit, fromTable, want)
			}
		}
		p, err := f.reader.DailySalesPage(ctx, f.a, from, to, nil, "", 1)
		if err != nil || p.NextCursor == "" {
			t.Fatalf("first page: %+v, %v", p, err)
		}
		b1 := f.branch1
		altered := []byte(p.NextCursor)
		if altered[10] == 'x' {
			altered[10] = 'y'
		} else {
			altered[10] = 'x'
		}
		for name, try := range map[string]func() error{
			"another range": func() error {
				_, err := f.reader.DailySalesPage(ctx, f.a, from, day("2025-03-30"), nil, p.NextCursor, 1)
				return err
			},
			"another branch": func() error { _, err := f.reader.DailySalesPage(ctx, f.a, from, to, &b1, p.NextCursor, 1); return err },
			"another merchant": func() error {
				_, err := f.reader.DailySalesPage(ctx, f.b, from, to, nil, p.NextCursor, 1)
				return err
			},
			"altered": func() error {
				_, err := f.reader.DailySalesPage(ctx, f.a, from, to, nil, string(altered), 1)
				return err
			},
			"altered, on a copy": func() error {
				_, err := f.reader.PageDays(f.a, from, to, nil, got, string(altered), 1)
				return err
			},
		} {
			if err := try(); !errors.Is(err, queries.ErrBadCursor) {
				t.Errorf("a cursor used with %s: %v, want ErrBadCursor", name, err)
			}
		}
	})
	t.Run("a date in year 0", func(t *testing.T) {
		if _, err := f.reader.DailySales(ctx, f.a, day("0000-12-31"), day("0001-01-01"), nil); !errors.Is(err, queries.ErrInvalidFilter) {
			t.Errorf("DailySales: %v, want ErrInvalidFilter (PostgreSQL has no year 0)", err)
		}
	})
	t.Run("a range too long", func(t *testing.T) {
		if _, err := f.reader.DailySales(ctx, f.a, day("2024-01-01"), day("2025-03-10"), nil); !errors.Is(err, queries.ErrInvalidFilter) {
			t.Errorf("DailySales: %v, want ErrInvalidFilter", err)
		}
	})
}

func sameDays(a, b []queries.DaySales) bool {
	return slices.EqualFunc(a, b, func(x, y queries.DaySales) bool {
		if x.BranchID != y.BranchID || !x.Date.Equal(y.Date) || x.Currency != y.Currency || x.Count != y.Count ||
			x.Gross != y.Gross || x.Discounts != y.Discounts || x.Tax != y.Tax || x.Net != y.Net || x.Refunds != y.Refunds ||
			len(x.ByMethod) != len(y.ByMethod) {
			return false
		}
		for k, v := range x.ByMethod {
			if y.ByMethod[k] != v {
				return false
			}
		}
		return true
	})
}

func TestNewCursorKeyNeedsEnoughBytes(t *testing.T) {
	if _, err := queries.NewCursorKey(make([]byte, 31)); err == nil {
		t.Error("NewCursorKey(31 bytes): want an error")
	}
	if _, err := queries.New(nil, queries.CursorKey{}); err == nil {
		t.Error("New without a key: want an error")
	}
}

// sqlState returns err's PostgreSQL error code, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestDailySalesLeaveOutADayWhollyVoided: a day whose one sale was paid
// and then voided keeps a row at zero in the read model; the report leaves
// it out, as it does a day without sales, and keeps a day of refunds alone
// (TestDailySales).
func TestDailySalesLeaveOutADayWhollyVoided(t *testing.T) {
	env := projtest.New(t)
	ctx := context.Background()
	merchant, branch := projtest.NewID(t), projtest.NewID(t)
	env.ChangeSettings(t, merchant, "UTC", t0.Add(-time.Hour))
	voided := env.OpenSale(t, merchant, branch, "V-001", t0)
	voided.AddItem("TEA", 1, 10_000, 0, t0)
	voided.Checkout(t0)
	voided.PayDue(t0)
	voided.Void(t0.Add(time.Minute))
	kept := env.OpenSale(t, merchant, branch, "V-002", t0.Add(24*time.Hour))
	kept.AddItem("TEA", 2, 10_000, 0, t0.Add(24*time.Hour))
	kept.Checkout(t0.Add(24 * time.Hour))
	kept.PayDue(t0.Add(24 * time.Hour))

	r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Catchup(ctx, eventstore.Start); err != nil {
		t.Fatalf("Catchup: %v", err)
	}
	// The read model's row, read as its owner (row-level security is
	// forced on owners too, so the merchant is set).
	var rows int
	err = pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant.String()); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM rm_daily_sales WHERE merchant_id = $1 AND count = 0`, merchant).Scan(&rows)
	})
	if err != nil || rows != 1 {
		t.Fatalf("rows at zero in the read model: %d, %v; want the voided day's (else this test tests nothing)", rows, err)
	}
	reader := newReader(t, env.URL, bytes.Repeat([]byte("k"), 32))
	got, err := reader.DailySales(ctx, merchant, t0, t0.Add(24*time.Hour), nil)
	if err != nil {
		t.Fatalf("DailySales: %v", err)
	}
	day := time.Date(t0.Year(), t0.Month(), t0.Day()+1, 0, 0, 0, 0, time.UTC)
	if len(got) != 1 || !got[0].Date.Equal(day) || got[0].Count != 1 || got[0].Gross != 20_000 {
		t.Fatalf("DailySales: %+v; want one row, the day after, of one sale", got)
	}
}

// TestDailySalesBeyondTheMoneyRange: a day of sales each at the largest
// amount sums past 2^53−1 (and, at 1,024 of them, past bigint's range).
// The table keeps exact sums, so voids take off exactly what the sales
// added whatever the batches; the report holds each figure at 2^53−1.
func TestDailySalesBeyondTheMoneyRange(t *testing.T) {
	env := projtest.New(t)
	ctx := context.Background()
	merchant, branch := projtest.NewID(t), projtest.NewID(t)
	env.ChangeSettings(t, merchant, "UTC", t0.Add(-time.Hour))
	runner, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	catchup := func() {
		t.Helper()
		if _, err := runner.Catchup(ctx, eventstore.Start); err != nil {
			t.Fatalf("Catchup: %v", err)
		}
	}
	var sales []*projtest.Sale
	sell := func(n int) {
		for range n {
			s := env.OpenSale(t, merchant, branch, "G-001", t0)
			s.AddItem("GOLD", 1, money.MaxAmount, 0, t0)
			s.Checkout(t0)
			s.PayDue(t0)
			sales = append(sales, s)
		}
		catchup()
	}
	reader := newReader(t, env.URL, bytes.Repeat([]byte("k"), 32))
	report := func() []queries.DaySales {
		t.Helper()
		days, err := reader.DailySales(ctx, merchant, t0, t0, nil)
		if err != nil {
			t.Fatalf("DailySales: %v", err)
		}
		return days
	}
	exact := func() string {
		t.Helper()
		var gross string
		err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant.String()); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT gross::text || ' ' || (by_method->>'CASH') FROM rm_daily_sales WHERE merchant_id = $1`, merchant).Scan(&gross)
		})
		if err != nil {
			t.Fatal(err)
		}
		return gross
	}
	max := int64(money.MaxAmount)
	sell(3) // one batch
	sell(2) // onto the stored row
	if got, want := exact(), "45035996273704955 45035996273704955"; got != want {
		t.Errorf("the table's gross and cash: %s, want the exact %s", got, want)
	}
	d := report()
	if len(d) != 1 || d[0].Count != 5 || d[0].Gross != max || d[0].Net != max || d[0].ByMethod["CASH"] != max {
		t.Fatalf("report: %+v, want 5 sales, each figure held at 2^53−1", d)
	}
	for _, s := range sales[:4] {
		s.Void(t0.Add(time.Minute))
	}
	catchup()
	if d := report(); len(d) != 1 || d[0].Count != 1 || d[0].Gross != max || d[0].ByMethod["CASH"] != max {
		t.Fatalf("after four voids: %+v, want one sale of 2^53−1", d)
	}
	sales[4].Void(t0.Add(time.Minute))
	catchup()
	if d := report(); len(d) != 0 {
		t.Fatalf("every sale voided: %+v, want no row", d)
	}
}

// TestDailySalesExactOverLongBatches: handed more events at once than it
// sums in int64 (1,100 sales of 2^53−1, whose sum passes 2^63; runners
// page their feeds more finely, so this is the projector alone), the
// daily-sales projector applies them a chunk at a time, and the table's
// sum is exact.
func TestDailySalesExactOverLongBatches(t *testing.T) {
	env := projtest.New(t)
	ctx := context.Background()
	merchant, branch := projtest.NewID(t), projtest.NewID(t)
	const sales = 1100
	for range sales {
		s := env.OpenSale(t, merchant, branch, "G-001", t0)
		s.AddItem("GOLD", 1, money.MaxAmount, 0, t0)
		s.Checkout(t0)
		s.PayDue(t0)
	}
	// The feed's horizon is the whole server's: other tests' transactions
	// hold it back for moments, and a read before they end stops short.
	if err := env.Store.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	var events []eventstore.RecordedEvent
	for from := eventstore.Start; ; {
		page, err := env.Store.ReadAll(ctx, from, eventstore.Filter{MerchantID: merchant.String()}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		events, from = append(events, page...), page[len(page)-1].Position
	}
	var gross string
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant.String()); err != nil {
			return err
		}
		if err := projections.NewDailySales().ApplyBatch(ctx, tx, events); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT gross::text FROM rm_daily_sales WHERE merchant_id = $1`, merchant).Scan(&gross)
	})
	if want := new(big.Int).Mul(big.NewInt(sales), big.NewInt(int64(money.MaxAmount))).String(); err != nil || gross != want {
		t.Fatalf("%d events in one batch: the table's gross %s, %v; want the exact %s", len(events), gross, err, want)
	}
}
