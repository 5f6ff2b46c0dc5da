package queries_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/stock"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/queries"
)

// stockFixture is two merchants' ledgers, projected, and a reader on them.
type stockFixture struct {
	env              *projtest.Env
	reader           *queries.Reader
	a, b             uuid.UUID // merchants
	branch1, branch2 uuid.UUID // merchant a's branches
	// Merchant a: TEA in both branches, CAKE in branch 1; merchant b: TEA in
	// its own branch.
	tea1, tea2, cake1, teaB *projtest.Ledger
}

func newStockFixture(t *testing.T) *stockFixture {
	t.Helper()
	env := projtest.New(t)
	f := &stockFixture{env: env, a: projtest.NewID(t), b: projtest.NewID(t), branch1: projtest.NewID(t), branch2: projtest.NewID(t)}
	f.tea1 = env.OpenLedger(t, f.a, f.branch1, "TEA")
	f.tea2 = env.OpenLedger(t, f.a, f.branch2, "TEA")
	f.cake1 = env.OpenLedger(t, f.a, f.branch1, "CAKE")
	f.teaB = env.OpenLedger(t, f.b, projtest.NewID(t), "TEA")

	// TEA in branch 1: seven movements, the middle three at the same
	// instant (ledger and version break the tie).
	f.tea1.Receive(20, 1_000, t0)
	f.tea1.Receive(10, 1_300, t0.Add(time.Minute))
	sale := projtest.NewID(t)
	f.tea1.Reserve(sale, 4, t0.Add(2*time.Minute))
	f.tea1.Sell(sale, 4, t0.Add(2*time.Minute))
	f.tea1.Adjust(-2, t0.Add(2*time.Minute))
	f.tea1.Reserve(projtest.NewID(t), 3, t0.Add(3*time.Minute)) // still open
	f.tea1.Receive(1, 1_000, t0.Add(4*time.Minute))
	// TEA in branch 2: three, interleaved in time with branch 1's.
	f.tea2.Receive(5, 900, t0.Add(30*time.Second))
	f.tea2.Adjust(1, t0.Add(2*time.Minute))
	f.tea2.Adjust(-3, t0.Add(5*time.Minute))
	f.cake1.Receive(2, 25_000, t0)
	f.teaB.Receive(7, 800, t0)
	f.teaB.Adjust(-1, t0.Add(time.Minute))

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

func levelOf(l *projtest.Ledger) queries.StockLevel {
	k := l.Aggregate().Key()
	return queries.StockLevel{LedgerID: k.LedgerID, BranchID: k.BranchID, SKU: k.SKU, OnHand: l.Aggregate().OnHand(), Reserved: l.Aggregate().Reserved(),
		Available: l.Aggregate().Available(), AvgCost: int64(l.Aggregate().AvgCost()), Version: l.Aggregate().Version()}
}

func sameLevel(got, want queries.StockLevel) bool {
	return got.LedgerID == want.LedgerID && got.BranchID == want.BranchID && got.SKU == want.SKU && got.OnHand == want.OnHand &&
		got.Reserved == want.Reserved && got.Available == want.Available && got.AvgCost == want.AvgCost && got.Version == want.Version &&
		got.Position != (eventstore.Position{}) && !got.UpdatedAt.IsZero()
}

// allLevels pages through Stock with limit.
func allLevels(t *testing.T, r *queries.Reader, merchant uuid.UUID, f queries.StockFilter, limit int) ([]queries.StockLevel, int) {
	t.Helper()
	var out []queries.StockLevel
	cursor, pages := "", 0
	for {
		page, err := r.Stock(context.Background(), merchant, f, cursor, limit)
		if err != nil {
			t.Fatalf("Stock page %d: %v", pages+1, err)
		}
		pages++
		out = append(out, page.Items...)
		if page.NextCursor == "" {
			return out, pages
		}
		if len(page.Items) != limit {
			t.Fatalf("page %d holds %d items and a next cursor, limit %d", pages, len(page.Items), limit)
		}
		cursor = page.NextCursor
	}
}

func TestStockLevels(t *testing.T) {
	f := newStockFixture(t)
	b1, b2, other := f.branch1, f.branch2, projtest.NewID(t)
	// Ordered by branch id, then SKU.
	byBranch := func(ls ...*projtest.Ledger) []queries.StockLevel {
		out := make([]queries.StockLevel, len(ls))
		for i, l := range ls {
			out[i] = levelOf(l)
		}
		slices.SortFunc(out, func(x, y queries.StockLevel) int {
			if c := bytes.Compare(x.BranchID[:], y.BranchID[:]); c != 0 {
				return c
			}
			return strings.Compare(x.SKU, y.SKU)
		})
		return out
	}
	tests := []struct {
		name     string
		merchant uuid.UUID
		filter   queries.StockFilter
		want     []queries.StockLevel
	}{
		{"every ledger of a", f.a, queries.StockFilter{}, byBranch(f.tea1, f.tea2, f.cake1)},
		{"branch 1", f.a, queries.StockFilter{BranchID: &b1}, byBranch(f.tea1, f.cake1)},
		{"branch 2", f.a, queries.StockFilter{BranchID: &b2}, byBranch(f.tea2)},
		{"TEA across branches", f.a, queries.StockFilter{SKU: "TEA"}, byBranch(f.tea1, f.tea2)},
		{"TEA in branch 2", f.a, queries.StockFilter{BranchID: &b2, SKU: "TEA"}, byBranch(f.tea2)},
		{"CAKE in branch 2: never moved", f.a, queries.StockFilter{BranchID: &b2, SKU: "CAKE"}, nil},
		{"a SKU never received", f.a, queries.StockFilter{SKU: "COFFEE"}, nil},
		{"an unknown branch", f.a, queries.StockFilter{BranchID: &other}, nil},
		{"sku is case-sensitive", f.a, queries.StockFilter{SKU: "tea"}, nil},
		{"merchant b sees only its own", f.b, queries.StockFilter{}, byBranch(f.teaB)},
		{"merchant b's TEA", f.b, queries.StockFilter{SKU: "TEA"}, byBranch(f.teaB)},
		{"a's branch asked by b", f.b, queries.StockFilter{BranchID: &b1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, limit := range []int{1, 2, 50} {
				got, _ := allLevels(t, f.reader, tt.merchant, tt.filter, limit)
				if len(got) != len(tt.want) {
					t.Fatalf("limit %d: %d levels %+v, want %d %+v", limit, len(got), got, len(tt.want), tt.want)
				}
				for i := range got {
					if !sameLevel(got[i], tt.want[i]) {
						t.Errorf("limit %d: level %d = %+v, want %+v", limit, i, got[i], tt.want[i])
					}
				}
			}
		})
	}

	tea1 := levelOf(f.tea1)
	if tea1.OnHand != 25 || tea1.Reserved != 3 || tea1.Available != 22 || tea1.AvgCost != 1_096 {
		t.Errorf("the fixture's TEA in branch 1 is %+v, want 25 on hand, 3 reserved, 22 available at 1096", tea1)
	}

	var ve *domain.ValidationError
	for _, sku := range []string{" TEA", strings.Repeat("X", stock.MaxSKULen+1), "TE\x00A"} {
		if _, err := f.reader.Stock(context.Background(), f.a, queries.StockFilter{SKU: sku}, "", 0); !errors.As(err, &ve) || ve.Field != "sku" {
			t.Errorf("sku %q: %v, want a validation error of sku", sku, err)
		}
	}
	if _, err := f.reader.Stock(context.Background(), uuid.Nil, queries.StockFilter{}, "", 0); !errors.Is(err, queries.ErrNoMerchant) {
		t.Errorf("no merchant: %v", err)
	}
}

// allMovements pages through StockMovements with limit.
func allMovements(t *testing.T, r *queries.Reader, merchant uuid.UUID, sku string, branch *uuid.UUID, limit int) ([]queries.StockMovement, int) {
	t.Helper()
	var out []queries.StockMovement
	cursor, pages := "", 0
	for {
		page, err := r.StockMovements(context.Background(), merchant, sku, branch, cursor, limit)
		if err != nil {
			t.Fatalf("StockMovements page %d: %v", pages+1, err)
		}
		pages++
		out = append(out, page.Items...)
		if page.NextCursor == "" {
			return out, pages
		}
		if len(page.Items) != limit {
			t.Fatalf("page %d holds %d items and a next cursor, limit %d", pages, len(page.Items), limit)
		}
		cursor = page.NextCursor
	}
}

func TestStockMovementsPageNewestFirst(t *testing.T) {
	f := newStockFixture(t)
	b1, b2 := f.branch1, f.branch2
	whole, pages := allMovements(t, f.reader, f.a, "TEA", nil, 500)
	if len(whole) != 10 || pages != 1 {
		t.Fatalf("TEA of a: %d movements in %d pages, want 10 in 1", len(whole), pages)
	}
	// Newest first: at, then ledger id, then version, descending.
	for i := 1; i < len(whole); i++ {
		p, c := whole[i-1], whole[i]
		if c.At.After(p.At) || c.At.Equal(p.At) && (bytes.Compare(c.LedgerID[:], p.LedgerID[:]) > 0 ||
			c.LedgerID == p.LedgerID && c.Version >= p.Version) {
			t.Fatalf("movement %d (%v %s v%d) is not older than %d (%v %s v%d)", i, c.At, c.LedgerID, c.Version, i-1, p.At, p.LedgerID, p.Version)
		}
	}
	for _, limit := range []int{1, 3, 4, 9} {
		got, pages := allMovements(t, f.reader, f.a, "TEA", nil, limit)
		if len(got) != len(whole) || pages != (len(whole)+limit-1)/limit {
			t.Errorf("limit %d: %d movements in %d pages", limit, len(got), pages)
		}
		for i := range got {
			if got[i].LedgerID != whole[i].LedgerID || got[i].Version != whole[i].Version {
				t.Errorf("limit %d: movement %d is %s v%d, want %s v%d", limit, i, got[i].LedgerID, got[i].Version, whole[i].LedgerID, whole[i].Version)
			}
		}
	}

	// One branch: TEA of branch 1, versions 7 down to 1, with their kinds.
	got, _ := allMovements(t, f.reader, f.a, "TEA", &b1, 2)
	wantKinds := []string{"receipt", "reserve", "adjustment", "sale", "reserve", "receipt", "receipt"}
	wantQty := []int64{1, 3, -2, -4, 4, 10, 20}
	if len(got) != 7 {
		t.Fatalf("branch 1: %d movements, want 7", len(got))
	}
	for i, m := range got {
		if m.BranchID != b1 || m.SKU != "TEA" || m.Version != uint64(7-i) || m.Kind != wantKinds[i] || m.Qty != wantQty[i] {
			t.Errorf("branch 1 movement %d: %+v, want v%d %s %d", i, m, 7-i, wantKinds[i], wantQty[i])
		}
	}
	if c := got[len(got)-1]; c.UnitCost == nil || *c.UnitCost != 1_000 || !c.At.Equal(t0) || c.SourceID == uuid.Nil {
		t.Errorf("first receipt: %+v", c)
	}
	if adj := got[2]; adj.UnitCost != nil {
		t.Errorf("an adjustment has a unit cost: %+v", adj)
	}
	if sale := got[3]; sale.UnitCost == nil || *sale.UnitCost != 1_100 {
		t.Errorf("the sale's unit cost: %+v, want the average 1100", sale)
	}
	if got, _ := allMovements(t, f.reader, f.a, "TEA", &b2, 2); len(got) != 3 || got[0].Qty != -3 || got[2].Qty != 5 {
		t.Errorf("branch 2: %+v", got)
	}

	for _, tt := range []struct {
		name     string
		merchant uuid.UUID
		sku      string
		branch   *uuid.UUID
		want     int
	}{
		{"CAKE", f.a, "CAKE", nil, 1},
		{"CAKE in branch 2", f.a, "CAKE", &b2, 0},
		{"a SKU never moved", f.a, "COFFEE", nil, 0},
		{"merchant b's TEA", f.b, "TEA", nil, 2},
		{"a's branch asked by b", f.b, "TEA", &b1, 0},
	} {
		got, _ := allMovements(t, f.reader, tt.merchant, tt.sku, tt.branch, 50)
		if len(got) != tt.want {
			t.Errorf("%s: %d movements, want %d", tt.name, len(got), tt.want)
		}
		for _, m := range got {
			if m.SKU != tt.sku {
				t.Errorf("%s: a movement of %s", tt.name, m.SKU)
			}
		}
	}

	var ve *domain.ValidationError
	for _, sku := range []string{"", " TEA", strings.Repeat("X", stock.MaxSKULen+1)} {
		if _, err := f.reader.StockMovements(context.Background(), f.a, sku, nil, "", 0); !errors.As(err, &ve) || ve.Field != "sku" {
			t.Errorf("sku %q: %v, want a validation error of sku", sku, err)
		}
	}
}

func TestStockCursorsAreBoundToMerchantFilterAndList(t *testing.T) {
	f := newStockFixture(t)
	ctx := context.Background()
	b1, b2 := f.branch1, f.branch2
	levels, err := f.reader.Stock(ctx, f.a, queries.StockFilter{}, "", 1)
	if err != nil || levels.NextCursor == "" {
		t.Fatalf("levels: %q %v", levels.NextCursor, err)
	}
	moves, err := f.reader.StockMovements(ctx, f.a, "TEA", nil, "", 2)
	if err != nil || moves.NextCursor == "" {
		t.Fatalf("movements: %q %v", moves.NextCursor, err)
	}
	if _, err := f.reader.Stock(ctx, f.a, queries.StockFilter{}, levels.NextCursor, 1); err != nil {
		t.Fatalf("levels, second page: %v", err)
	}
	if _, err := f.reader.StockMovements(ctx, f.a, "TEA", nil, moves.NextCursor, 2); err != nil {
		t.Fatalf("movements, second page: %v", err)
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
	// spare changes the last character in a bit that carries no data (a
	// length not a multiple of three bytes leaves some): a decoder that is
	// not strict reads the same bytes, and the MAC would still match.
	spare := func(s string) string {
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		if len(s)%4 == 0 {
			t.Fatalf("cursor %q has no spare bits", s)
		}
		i := strings.IndexByte(alphabet, s[len(s)-1])
		return s[:len(s)-1] + string(alphabet[i^1])
	}
	otherKey := newReader(t, f.env.URL, bytes.Repeat([]byte("x"), 32))
	lc, mc := levels.NextCursor, moves.NextCursor
	levelCases := []struct {
		name     string
		reader   *queries.Reader
		merchant uuid.UUID
		filter   queries.StockFilter
		cursor   string
	}{
		{"a character of the keyset changed", f.reader, f.a, queries.StockFilter{}, flip(lc, 4)},
		{"a character of the MAC changed", f.reader, f.a, queries.StockFilter{}, flip(lc, len(lc)-3)},
		{"truncated", f.reader, f.a, queries.StockFilter{}, lc[:len(lc)-4]},
		{"extended", f.reader, f.a, queries.StockFilter{}, lc + "AAAA"},
		{"not base64url", f.reader, f.a, queries.StockFilter{}, "!!" + lc[2:]},
		{"empty payload", f.reader, f.a, queries.StockFilter{}, "AQ"},
		{"far too long", f.reader, f.a, queries.StockFilter{}, strings.Repeat("A", 4096)},
		{"another merchant's", f.reader, f.b, queries.StockFilter{}, lc},
		{"another branch filter's", f.reader, f.a, queries.StockFilter{BranchID: &b1}, lc},
		{"another SKU filter's", f.reader, f.a, queries.StockFilter{SKU: "TEA"}, lc},
		{"made with another key", otherKey, f.a, queries.StockFilter{}, lc},
		{"a movements cursor", f.reader, f.a, queries.StockFilter{}, mc},
	}
	for _, tt := range levelCases {
		t.Run("levels/"+tt.name, func(t *testing.T) {
			if _, err := tt.reader.Stock(ctx, tt.merchant, tt.filter, tt.cursor, 1); !errors.Is(err, queries.ErrBadCursor) {
				t.Errorf("Stock: %v, want ErrBadCursor", err)
			}
		})
	}
	moveCases := []struct {
		name     string
		reader   *queries.Reader
		merchant uuid.UUID
		sku      string
		branch   *uuid.UUID
		cursor   string
	}{
		{"a character of the time changed", f.reader, f.a, "TEA", nil, flip(mc, 5)},
		{"a character of the ledger changed", f.reader, f.a, "TEA", nil, flip(mc, 20)},
		{"a character of the MAC changed", f.reader, f.a, "TEA", nil, flip(mc, len(mc)-3)},
		{"a spare bit of the last character changed", f.reader, f.a, "TEA", nil, spare(mc)},
		{"truncated", f.reader, f.a, "TEA", nil, mc[:len(mc)-4]},
		{"another merchant's", f.reader, f.b, "TEA", nil, mc},
		{"another SKU's", f.reader, f.a, "CAKE", nil, mc},
		{"another branch filter's", f.reader, f.a, "TEA", &b2, mc},
		{"made with another key", otherKey, f.a, "TEA", nil, mc},
		{"a levels cursor", f.reader, f.a, "TEA", nil, lc},
	}
	for _, tt := range moveCases {
		t.Run("movements/"+tt.name, func(t *testing.T) {
			if _, err := tt.reader.StockMovements(ctx, tt.merchant, tt.sku, tt.branch, tt.cursor, 2); !errors.Is(err, queries.ErrBadCursor) {
				t.Errorf("StockMovements: %v, want ErrBadCursor", err)
			}
		})
	}
	for _, c := range []string{lc, mc} {
		if strings.Contains(c, f.a.String()) || strings.ContainsAny(c, "+/=") {
			t.Errorf("cursor %q shows the merchant or is not base64url", c)
		}
	}
}
