package projections_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
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

// applyStock applies, in one transaction with pos.merchant_id set as the
// Runner sets it, each of batches through Stock.ApplyBatch, or through
// Stock.Apply event by event when one is true.
func applyStock(t *testing.T, env *projtest.Env, merchant uuid.UUID, one bool, batches ...[]eventstore.RecordedEvent) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant.String()); err != nil {
			return err
		}
		for _, b := range batches {
			if !one {
				if err := (projections.Stock{}).ApplyBatch(ctx, tx, b); err != nil {
					return err
				}
				continue
			}
			for _, e := range b {
				if err := (projections.Stock{}).Apply(ctx, tx, e); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// stockRows returns every row of the stock read models as text, in key
// order.
func stockRows(t *testing.T, url string) []string {
	t.Helper()
	c := admin(t, url)
	var out []string
	for _, q := range []string{
		`SELECT 'level ' || to_jsonb(t)::text FROM rm_stock_levels t ORDER BY merchant_id, ledger_id`,
		`SELECT 'movement ' || to_jsonb(t)::text FROM rm_stock_movements t ORDER BY merchant_id, ledger_id, version`,
		`SELECT 'reservation ' || to_jsonb(t)::text FROM rm_stock_reservations t ORDER BY merchant_id, ledger_id, transaction_id`,
	} {
		rows, err := c.Query(context.Background(), q)
		if err != nil {
			t.Fatalf("read rows: %v", err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("read rows: %v", err)
		}
		out = append(out, lines...)
	}
	return out
}

// sameRows fails the test where got and want differ, showing the first few
// differences.
func sameRows(t *testing.T, name string, got, want []string) {
	t.Helper()
	g, w := map[string]bool{}, map[string]bool{}
	for _, s := range got {
		g[s] = true
	}
	for _, s := range want {
		w[s] = true
	}
	var diff []string
	for _, s := range want {
		if !g[s] {
			diff = append(diff, "- "+s)
		}
	}
	for _, s := range got {
		if !w[s] {
			diff = append(diff, "+ "+s)
		}
	}
	if len(got) != len(want) || len(diff) > 0 {
		t.Errorf("%s: %d rows, want %d (one by one); differences (%d):\n%s", name, len(got), len(want), len(diff),
			strings.Join(diff[:min(len(diff), 12)], "\n"))
	}
}

// checkLedgers compares the rows of every ledger that moved with its
// aggregate (checkLedger).
func checkLedgers(t *testing.T, url string, ledgers []*ledger) {
	t.Helper()
	db := admin(t, url)
	for _, l := range ledgers {
		if l.agg.Version() > 0 {
			checkLedger(t, db, l)
		}
	}
}

// TestStockBatchMatchesOneByOne builds random histories on several ledgers
// of one merchant and checks that ApplyBatch of the whole feed in one call,
// and of random chunks of a random interleaving of the streams, leaves
// exactly the rows that Apply of one event at a time leaves, each in a
// fresh database; every result is also checked against the aggregates. The history is steered so that one batch holds reservations
// replaced, opened and closed, closed and opened again, and sales with and
// without one.
func TestStockBatchMatchesOneByOne(t *testing.T) {
	env := projtest.New(t)
	rng := rand.New(rand.NewPCG(5, 23))
	merchant := projtest.NewID(t)
	var ledgers []*ledger
	for range 3 {
		branch := projtest.NewID(t)
		for _, sku := range []string{"TEA", "CAKE"} {
			ledgers = append(ledgers, newLedger(t, env, merchant, branch, sku))
		}
	}
	for _, l := range ledgers[:4] {
		l.receive(20, money.Amount(800+rng.IntN(400)), t0)
	}
	sales := make([]uuid.UUID, 5)
	for i := range sales {
		sales[i] = projtest.NewID(t)
	}
	reserve := func(l *ledger, tx uuid.UUID, qty int64, at time.Time) bool {
		return l.do(func(x *stock.Ledger) ([]stock.Event, error) {
			return x.Reserve(stock.Reserve{TransactionID: tx, Qty: qty, Attempt: uint64(rng.IntN(3)), AllowNegative: rng.IntN(4) == 0, At: at})
		}, true)
	}
	// open returns a transaction with an open reservation on l, if any.
	open := func(l *ledger) (uuid.UUID, bool) {
		for _, tx := range sales {
			if r, ok := l.agg.Reservation(tx); ok && r.Reserved > 0 {
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
			l.receive(qty, money.Amount(500+rng.IntN(1000)), at)
		case 2:
			delta := qty
			if rng.IntN(2) == 0 {
				delta = -qty
			}
			l.do(func(x *stock.Ledger) ([]stock.Event, error) {
				return x.Adjust(stock.Adjust{AdjustmentID: projtest.NewID(t), Delta: delta, Reason: "count", By: "m", AllowNegative: rng.IntN(4) == 0, At: at})
			}, true)
		case 3, 4:
			reserve(l, tx, qty, at) // a new reservation, or one replaced
		case 5:
			if tx, ok := open(l); ok {
				l.release(tx, at)
				if rng.IntN(2) == 0 {
					reserve(l, tx, qty, at) // reserved again after its release
				}
			}
		case 6:
			if tx, ok := open(l); ok {
				r, _ := l.agg.Reservation(tx)
				l.sell(tx, r.Reserved, at)
			}
		case 7:
			if r, ok := l.agg.Reservation(tx); !ok || r.Sold == 0 {
				l.sell(tx, qty, at) // with whatever it holds, often nothing
			}
		case 8, 9:
			var sold []uuid.UUID
			for tx, r := range l.agg.Reservations() {
				if r.Sold > r.Returned {
					sold = append(sold, tx)
				}
			}
			if len(sold) > 0 {
				slices.SortFunc(sold, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
				l.giveBack(sold[rng.IntN(len(sold))], int64(rng.IntN(3)), at)
			}
		case 10, 11:
			to := ledgers[rng.IntN(len(ledgers))]
			if to != l && to.agg.Key().SKU == l.agg.Key().SKU && l.agg.Available() >= qty {
				l.transfer(to, qty, at)
			}
		}
	}

	events := feed(t, env)
	kinds := map[string]int{}
	// The reservation cases a batch must get right, counted over the feed.
	type resKey struct{ ledger, tx string }
	state := map[resKey]bool{} // open?
	closedBefore := map[resKey]bool{}
	var replaced, openedClosed, reopened, soldReserved, soldBare int
	for _, e := range events {
		kinds[e.Type]++
		ev, err := stock.Decode(e.Type, e.Data)
		if err != nil {
			t.Fatal(err)
		}
		switch ev := ev.(type) {
		case stock.StockReserved:
			k := resKey{e.Stream, ev.TransactionID.String()}
			if state[k] {
				replaced++
			} else if closedBefore[k] {
				reopened++
			}
			state[k] = true
		case stock.ReservationReleased:
			k := resKey{e.Stream, ev.TransactionID.String()}
			if state[k] {
				openedClosed++
			}
			state[k], closedBefore[k] = false, true
		case stock.StockSold:
			k := resKey{e.Stream, ev.TransactionID.String()}
			if state[k] {
				openedClosed++
				soldReserved++
			} else {
				soldBare++
			}
			state[k], closedBefore[k] = false, true
		}
	}
	for _, k := range stock.EventTypes() {
		if kinds[k] < 5 {
			t.Fatalf("the history has %d %s events; the test needs a few of each: %v", kinds[k], k, kinds)
		}
	}
	stillOpen := 0
	for _, o := range state {
		if o {
			stillOpen++
		}
	}
	if replaced < 5 || openedClosed < 5 || reopened < 5 || soldReserved < 5 || soldBare < 5 || stillOpen < 2 {
		t.Fatalf("the history lacks reservation cases: %d replaced, %d opened and closed, %d reopened, %d sold reserved, %d sold bare, %d open at the end",
			replaced, openedClosed, reopened, soldReserved, soldBare, stillOpen)
	}
	t.Logf("%d events on %d ledgers: %v; reservations: %d replaced, %d opened and closed, %d reopened, %d sold reserved, %d sold bare, %d open",
		len(events), len(ledgers), kinds, replaced, openedClosed, reopened, soldReserved, soldBare, stillOpen)

	// One event at a time, each in its own transaction.
	single := projtest.New(t)
	for _, e := range events {
		applyStock(t, single, merchant, true, []eventstore.RecordedEvent{e})
	}
	want := stockRows(t, single.URL)
	checkLedgers(t, single.URL, ledgers)

	// The whole feed in one call.
	applyStock(t, env, merchant, false, events)
	sameRows(t, "one batch", stockRows(t, env.URL), want)
	checkLedgers(t, env.URL, ledgers)

	// Another interleaving of the streams (each still in version order),
	// cut into random chunks; consecutive chunks sometimes share a
	// transaction, as a Runner's segments do.
	byStream := map[string][]eventstore.RecordedEvent{}
	var streams []string
	for _, e := range events {
		if byStream[e.Stream] == nil {
			streams = append(streams, e.Stream)
		}
		byStream[e.Stream] = append(byStream[e.Stream], e)
	}
	mixed := make([]eventstore.RecordedEvent, 0, len(events))
	for len(streams) > 0 {
		i := rng.IntN(len(streams))
		s := streams[i]
		mixed = append(mixed, byStream[s][0])
		if byStream[s] = byStream[s][1:]; len(byStream[s]) == 0 {
			streams = append(streams[:i], streams[i+1:]...)
		}
	}
	chunked := projtest.New(t)
	calls := 0
	for len(mixed) > 0 {
		var tx [][]eventstore.RecordedEvent
		for range 1 + rng.IntN(3) {
			n := min(len(mixed), 1+rng.IntN(50))
			tx = append(tx, mixed[:n])
			mixed = mixed[n:]
			calls++
			if len(mixed) == 0 {
				break
			}
		}
		applyStock(t, chunked, merchant, false, tx...)
	}
	t.Logf("chunked: %d ApplyBatch calls", calls)
	sameRows(t, "random chunks", stockRows(t, chunked.URL), want)
	checkLedgers(t, chunked.URL, ledgers)
}

// TestStockBatchRefusesBadEvents: a batch with one event naming another
// ledger than its stream fails with ErrBadEvent before writing anything,
// and so does one mixing merchants.
func TestStockBatchRefusesBadEvents(t *testing.T) {
	env := projtest.New(t)
	ctx := context.Background()
	merchant, other, branch := projtest.NewID(t), projtest.NewID(t), projtest.NewID(t)
	tea := newLedger(t, env, merchant, branch, "TEA")
	tea.receive(3, 100, t0)
	cake := stock.NewKey(merchant, branch, "CAKE")
	bad := env.Append(t, tea.stream, merchant.String(),
		stock.StockReceived{Key: cake, ReceiptID: projtest.NewID(t), Qty: 1, UnitCost: 1, AvgCost: 1, By: "x", At: t0})
	theirs := newLedger(t, env, other, branch, "TEA")
	theirs.receive(1, 100, t0)

	for name, batch := range map[string][]eventstore.RecordedEvent{
		"another ledger":  {tea.Events[0], bad[0]},
		"other merchants": {tea.Events[0], theirs.Events[0]},
	} {
		err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant.String()); err != nil {
				return err
			}
			applyErr := projections.Stock{}.ApplyBatch(ctx, tx, batch)
			var n int
			if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM rm_stock_levels) + (SELECT count(*) FROM rm_stock_movements)`).Scan(&n); err != nil {
				t.Errorf("%s: a statement failed before the error (%v): the batch was not checked first", name, err)
			} else if n != 0 {
				t.Errorf("%s: %d rows written before the error", name, n)
			}
			return applyErr
		})
		if err == nil || (name == "another ledger" && !errors.Is(err, projections.ErrBadEvent)) {
			t.Errorf("%s: ApplyBatch: %v, want an error (ErrBadEvent for another ledger)", name, err)
		}
	}
}
