package projections_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/money"
	"pos/domain/stock"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
)

// movement is one rm_stock_movements row.
type movement struct {
	Version  int64
	Kind     string
	Qty      int64
	UnitCost *int64
	Source   uuid.UUID
	At       time.Time
}

// checkLedger compares the ledger's rows with its aggregate: the level, the
// open reservations, and one movement per event whose on-hand kinds add up
// to on hand.
func checkLedger(t *testing.T, c *pgx.Conn, l *projtest.Ledger) []movement {
	t.Helper()
	ctx := context.Background()
	key := l.Aggregate().Key()
	var branch uuid.UUID
	var sku string
	var onHand, reserved, avgCost, version int64
	err := c.QueryRow(ctx, `SELECT branch_id, sku, on_hand, reserved, avg_cost, version FROM rm_stock_levels WHERE merchant_id = $1 AND ledger_id = $2`,
		key.MerchantID, key.LedgerID).Scan(&branch, &sku, &onHand, &reserved, &avgCost, &version)
	if err != nil {
		t.Fatalf("ledger %s/%s: read level: %v", key.BranchID, key.SKU, err)
	}
	if branch != key.BranchID || sku != key.SKU || onHand != l.Aggregate().OnHand() || reserved != l.Aggregate().Reserved() ||
		avgCost != int64(l.Aggregate().AvgCost()) || version != int64(l.Aggregate().Version()) {
		t.Errorf("level of %s: %s on hand %d reserved %d avg %d v%d; aggregate: on hand %d reserved %d avg %d v%d",
			key.SKU, branch, onHand, reserved, avgCost, version, l.Aggregate().OnHand(), l.Aggregate().Reserved(), l.Aggregate().AvgCost(), l.Aggregate().Version())
	}

	rows, err := c.Query(ctx, `SELECT transaction_id, qty FROM rm_stock_reservations WHERE merchant_id = $1 AND ledger_id = $2`, key.MerchantID, key.LedgerID)
	if err != nil {
		t.Fatal(err)
	}
	open := map[uuid.UUID]int64{}
	for rows.Next() {
		var tx uuid.UUID
		var qty int64
		if err := rows.Scan(&tx, &qty); err != nil {
			t.Fatal(err)
		}
		open[tx] = qty
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[uuid.UUID]int64{}
	for tx, r := range l.Aggregate().Reservations() {
		if r.Reserved > 0 {
			want[tx] = r.Reserved
		}
	}
	if len(open) != len(want) {
		t.Errorf("open reservations %v, want %v", open, want)
	}
	for tx, qty := range want {
		if open[tx] != qty {
			t.Errorf("reservation of %s: %d, want %d", tx, open[tx], qty)
		}
	}

	rows, err = c.Query(ctx, `SELECT version, kind, qty, unit_cost, source_id, at FROM rm_stock_movements
        WHERE merchant_id = $1 AND ledger_id = $2 ORDER BY version`, key.MerchantID, key.LedgerID)
	if err != nil {
		t.Fatal(err)
	}
	moves, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (movement, error) {
		var m movement
		err := r.Scan(&m.Version, &m.Kind, &m.Qty, &m.UnitCost, &m.Source, &m.At)
		return m, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(moves) != int(l.Aggregate().Version()) {
		t.Fatalf("%d movements, want one per event (%d)", len(moves), l.Aggregate().Version())
	}
	var sum, reservedSum int64
	for i, m := range moves {
		if m.Version != int64(i+1) {
			t.Fatalf("movement %d has version %d", i, m.Version)
		}
		switch m.Kind {
		case "reserve", "release":
			reservedSum += m.Qty
		default:
			sum += m.Qty
		}
	}
	if sum != l.Aggregate().OnHand() {
		t.Errorf("on-hand movements add up to %d, on hand is %d", sum, l.Aggregate().OnHand())
	}
	if reservedSum < l.Aggregate().Reserved() {
		t.Errorf("reserve and release movements add up to %d, below the %d reserved", reservedSum, l.Aggregate().Reserved())
	}
	return moves
}

func TestStockMirrorsTheLedger(t *testing.T) {
	env := projtest.New(t)
	r := newRunner(t, env)
	db := admin(t, env.URL)
	merchant, main, kiosk := projtest.NewID(t), projtest.NewID(t), projtest.NewID(t)
	tea := env.OpenLedger(t, merchant, main, "TEA")
	kioskTea := env.OpenLedger(t, merchant, kiosk, "TEA")
	step := func(name string) {
		t.Helper()
		handle(t, r, tea.Events...) // earlier events are redeliveries
		handle(t, r, kioskTea.Events...)
		t.Run(name, func(t *testing.T) {
			checkLedger(t, db, tea)
			if kioskTea.Aggregate().Version() > 0 {
				checkLedger(t, db, kioskTea)
			}
		})
	}
	sale1, sale2, sale3 := projtest.NewID(t), projtest.NewID(t), projtest.NewID(t)

	tea.Receive(10, 1_000, t0)
	step("received")
	tea.Receive(5, 1_301, t0.Add(time.Minute)) // avg (10×1000 + 5×1301) / 15 = 1100.33 → 1100
	step("received at another cost")
	tea.Reserve(sale1, 3, t0.Add(2*time.Minute))
	tea.Reserve(sale1, 4, t0.Add(3*time.Minute)) // a checkout retried with another quantity
	tea.Reserve(sale2, 2, t0.Add(3*time.Minute))
	step("reserved")
	tea.Release(sale2, t0.Add(4*time.Minute))
	step("released")
	tea.Sell(sale1, 4, t0.Add(5*time.Minute))
	tea.Sell(sale3, 1, t0.Add(5*time.Minute)) // no reservation
	step("sold")
	tea.GiveBack(sale1, 2, t0.Add(6*time.Minute))
	tea.Adjust(-1, t0.Add(7*time.Minute))
	step("returned and adjusted")
	tea.Transfer(kioskTea, 3, t0.Add(8*time.Minute))
	step("transferred")

	if tea.Aggregate().OnHand() != 15-4-1+2-1-3 || tea.Aggregate().Reserved() != 0 || tea.Aggregate().AvgCost() != 1_100 {
		t.Fatalf("the scenario went elsewhere: %d on hand, %d reserved, avg %d", tea.Aggregate().OnHand(), tea.Aggregate().Reserved(), tea.Aggregate().AvgCost())
	}
	cost := func(v int64) *int64 { return &v }
	want := []movement{
		{Kind: "receipt", Qty: 10, UnitCost: cost(1_000)},
		{Kind: "receipt", Qty: 5, UnitCost: cost(1_301)},
		{Kind: "reserve", Qty: 3, Source: sale1},
		{Kind: "reserve", Qty: 1, Source: sale1},
		{Kind: "reserve", Qty: 2, Source: sale2},
		{Kind: "release", Qty: -2, Source: sale2},
		{Kind: "sale", Qty: -4, UnitCost: cost(1_100), Source: sale1},
		{Kind: "sale", Qty: -1, UnitCost: cost(1_100), Source: sale3},
		{Kind: "return", Qty: 2, UnitCost: cost(1_100)},
		{Kind: "adjustment", Qty: -1},
		{Kind: "transfer_out", Qty: -3, UnitCost: cost(1_100)},
	}
	got := checkLedger(t, db, tea)
	for i, w := range want {
		g := got[i]
		if g.Kind != w.Kind || g.Qty != w.Qty || (g.UnitCost == nil) != (w.UnitCost == nil) || (w.UnitCost != nil && *g.UnitCost != *w.UnitCost) ||
			(w.Source != uuid.Nil && g.Source != w.Source) || g.Source == uuid.Nil {
			t.Errorf("movement %d: %s %d cost %v source %s, want %s %d cost %v", i+1, g.Kind, g.Qty, g.UnitCost, g.Source, w.Kind, w.Qty, w.UnitCost)
		}
	}
	in := checkLedger(t, db, kioskTea)
	if len(in) != 1 || in[0].Kind != "transfer_in" || in[0].Qty != 3 || in[0].UnitCost == nil || *in[0].UnitCost != 1_100 || in[0].Source != got[10].Source {
		t.Errorf("kiosk movements %+v, want one transfer_in of 3 at 1100 with the transfer's id", in)
	}
	if !got[0].At.Equal(t0) || !got[10].At.Equal(t0.Add(8*time.Minute)) {
		t.Errorf("movement times %v … %v, want the events' own times", got[0].At, got[10].At)
	}
}

// stockLedgers returns a TEA and a CAKE ledger in each of branches branches
// of each of merchants merchants, in that order.
func stockLedgers(t *testing.T, env *projtest.Env, merchants, branches int) []*projtest.Ledger {
	var ledgers []*projtest.Ledger
	for range merchants {
		merchant := projtest.NewID(t)
		for range branches {
			branch := projtest.NewID(t)
			for _, sku := range []string{"TEA", "CAKE"} {
				ledgers = append(ledgers, env.OpenLedger(t, merchant, branch, sku))
			}
		}
	}
	return ledgers
}

// randomStock decides a random history on ledgers and appends it: every
// ledger but the last two first receives 20 (the last two start empty, so
// their first event may be any), then come 700 random commands, a second
// apart from t0: receipts; adjustments, some allowed below zero;
// reservations new, replaced (another quantity or attempt), released,
// reserved again after their release; sales of what a transaction reserved
// and of what it did not; returns of what was sold; transfers between the
// branches of a merchant. Refused commands decide nothing. It fails the
// test unless the history holds at least five events of every stock event
// type, and returns how many it holds of each.
func randomStock(t *testing.T, rng *rand.Rand, ledgers []*projtest.Ledger) map[string]int {
	t.Helper()
	for _, l := range ledgers[:max(0, len(ledgers)-2)] {
		l.Receive(20, money.Amount(800+rng.IntN(400)), t0)
	}
	sales := make([]uuid.UUID, 5) // live transactions; one is replaced now and then
	for i := range sales {
		sales[i] = projtest.NewID(t)
	}
	reserve := func(l *projtest.Ledger, tx uuid.UUID, qty int64, at time.Time) bool {
		return l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
			return x.Reserve(stock.Reserve{TransactionID: tx, Qty: qty, Attempt: uint64(rng.IntN(3)), AllowNegative: rng.IntN(4) == 0, At: at})
		}, true)
	}
	// open returns a transaction with an open reservation on l, if any.
	open := func(l *projtest.Ledger) (uuid.UUID, bool) {
		for _, tx := range sales {
			if r, ok := l.Aggregate().Reservation(tx); ok && r.Reserved > 0 {
				return tx, true
			}
		}
		return uuid.Nil, false
	}
	at := t0
	for range 700 {
		at = at.Add(time.Second)
		if rng.IntN(10) == 0 {
			sales[rng.IntN(len(sales))] = projtest.NewID(t)
		}
		l := ledgers[rng.IntN(len(ledgers))]
		tx := sales[rng.IntN(len(sales))]
		qty := int64(1 + rng.IntN(5))
		switch rng.IntN(12) {
		case 0, 1:
			l.Receive(qty, money.Amount(500+rng.IntN(1000)), at)
		case 2:
			delta := qty
			if rng.IntN(2) == 0 {
				delta = -qty
			}
			l.Do(func(x *stock.Ledger) ([]stock.Event, error) {
				return x.Adjust(stock.Adjust{AdjustmentID: projtest.NewID(t), Delta: delta, Reason: "count", By: "m", AllowNegative: rng.IntN(4) == 0, At: at})
			}, true)
		case 3, 4:
			reserve(l, tx, qty, at) // a new reservation, or one replaced
		case 5:
			if tx, ok := open(l); ok {
				l.Release(tx, at)
				if rng.IntN(2) == 0 {
					reserve(l, tx, qty, at) // reserved again after its release
				}
			}
		case 6:
			if tx, ok := open(l); ok {
				r, _ := l.Aggregate().Reservation(tx)
				l.Sell(tx, r.Reserved, at)
			}
		case 7:
			if r, ok := l.Aggregate().Reservation(tx); !ok || r.Sold == 0 {
				l.Sell(tx, qty, at) // with whatever it holds, often nothing
			}
		case 8, 9:
			var sold []uuid.UUID
			for tx, r := range l.Aggregate().Reservations() {
				if r.Sold > r.Returned {
					sold = append(sold, tx)
				}
			}
			if len(sold) > 0 {
				slices.SortFunc(sold, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
				l.GiveBack(sold[rng.IntN(len(sold))], int64(rng.IntN(3)), at)
			}
		case 10, 11:
			var to []*projtest.Ledger // the SKU in the merchant's other branches
			for _, o := range ledgers {
				if o != l && o.Aggregate().Key().MerchantID == l.Aggregate().Key().MerchantID && o.Aggregate().Key().SKU == l.Aggregate().Key().SKU {
					to = append(to, o)
				}
			}
			if len(to) > 0 && l.Aggregate().Available() >= qty {
				l.Transfer(to[rng.IntN(len(to))], qty, at)
			}
		}
	}

	kinds := map[string]int{}
	for _, l := range ledgers {
		for _, e := range l.Events {
			kinds[e.Type]++
		}
	}
	for _, k := range stock.EventTypes() {
		if kinds[k] < 5 {
			t.Fatalf("the random history has %d %s events; the tests need a few of each: %v", kinds[k], k, kinds)
		}
	}
	return kinds
}

// TestStockRandomHistories decides random commands on a few ledgers of two
// merchants (randomStock), delivers the feed to the runner shuffled and
// with duplicates (gaps are filled from the store, redeliveries skipped),
// and compares each ledger's rows with its aggregate.
func TestStockRandomHistories(t *testing.T) {
	env := projtest.New(t)
	r := newRunner(t, env)
	db := admin(t, env.URL)
	rng := rand.New(rand.NewPCG(7, 11))
	ledgers := stockLedgers(t, env, 2, 2)
	randomStock(t, rng, ledgers)

	events := feed(t, env)
	deliveries := make([]eventstore.RecordedEvent, 0, 2*len(events))
	deliveries = append(deliveries, events...)
	for range len(events) / 2 {
		deliveries = append(deliveries, events[rng.IntN(len(events))])
	}
	rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	for len(deliveries) > 0 {
		n := min(len(deliveries), 1+rng.IntN(20))
		handle(t, r, deliveries[:n]...)
		deliveries = deliveries[n:]
	}
	moved := 0
	for _, l := range ledgers {
		if l.Aggregate().Version() == 0 {
			continue
		}
		moved++
		checkLedger(t, db, l)
	}
	if moved < len(ledgers)-1 {
		t.Fatalf("only %d of %d ledgers moved", moved, len(ledgers))
	}
}

// TestStockEventOfAnotherLedgerIsRefused: an event whose key names another
// ledger than its stream is refused, not projected onto the wrong row.
func TestStockEventOfAnotherLedgerIsRefused(t *testing.T) {
	env := projtest.New(t)
	r := newRunner(t, env)
	merchant, branch := projtest.NewID(t), projtest.NewID(t)
	key := stock.NewKey(merchant, branch, "TEA")
	other := stock.NewKey(merchant, branch, "CAKE")
	events := env.Append(t, eventstore.StreamName("stock", merchant.String(), key.LedgerID.String()), merchant.String(),
		stock.StockReceived{Key: other, ReceiptID: projtest.NewID(t), Qty: 1, UnitCost: 1, AvgCost: 1, By: "x", At: t0})
	if err := r.Handle(context.Background(), events); !errors.Is(err, projections.ErrBadEvent) {
		t.Fatalf("Handle: %v, want ErrBadEvent", err)
	}
}
