package projections_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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

// checkLedgers compares the rows of every ledger that moved with its
// aggregate (checkLedger).
func checkLedgers(t *testing.T, url string, ledgers []*projtest.Ledger) {
	t.Helper()
	db := admin(t, url)
	for _, l := range ledgers {
		if l.Aggregate().Version() > 0 {
			checkLedger(t, db, l)
		}
	}
}

// TestStockBatchMatchesOneByOne builds a random history (randomStock) on
// several ledgers of one merchant and checks that ApplyBatch of the whole
// feed in one call, and of random chunks of a random interleaving of the
// streams, leaves exactly the rows that Apply of one event at a time leaves,
// each in a fresh database; every result is also checked against the
// aggregates. The history must hold, in one batch, reservations replaced,
// opened and closed, closed and opened again, and sales with and without
// one.
func TestStockBatchMatchesOneByOne(t *testing.T) {
	env := projtest.New(t)
	rng := rand.New(rand.NewPCG(5, 23))
	ledgers := stockLedgers(t, env, 1, 3)
	merchant := ledgers[0].Aggregate().Key().MerchantID
	kinds := randomStock(t, rng, ledgers)

	events := feed(t, env)
	// The reservation cases a batch must get right, counted over the feed.
	type resKey struct{ ledger, tx string }
	state := map[resKey]bool{} // open?
	closedBefore := map[resKey]bool{}
	var replaced, openedClosed, reopened, soldReserved, soldBare int
	for _, e := range events {
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
	want := textRows(t, single.URL, stockQueries...)
	checkLedgers(t, single.URL, ledgers)

	// The whole feed in one call.
	applyStock(t, env, merchant, false, events)
	diffRows(t, "one batch against one by one", textRows(t, env.URL, stockQueries...), want)
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
	diffRows(t, "random chunks against one by one", textRows(t, chunked.URL, stockQueries...), want)
	checkLedgers(t, chunked.URL, ledgers)
}

// TestStockBatchRefusesBadEvents: a batch with one event naming another
// ledger than its stream fails with ErrBadEvent before writing anything,
// and so does one mixing merchants.
func TestStockBatchRefusesBadEvents(t *testing.T) {
	env := projtest.New(t)
	ctx := context.Background()
	merchant, other, branch := projtest.NewID(t), projtest.NewID(t), projtest.NewID(t)
	tea := env.OpenLedger(t, merchant, branch, "TEA")
	tea.Receive(3, 100, t0)
	cake := stock.NewKey(merchant, branch, "CAKE")
	bad := env.Append(t, tea.Stream(), merchant.String(),
		stock.StockReceived{Key: cake, ReceiptID: projtest.NewID(t), Qty: 1, UnitCost: 1, AvgCost: 1, By: "x", At: t0})
	theirs := env.OpenLedger(t, other, branch, "TEA")
	theirs.Receive(1, 100, t0)

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
