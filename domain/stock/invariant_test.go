package stock_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"pos/domain/stock"
)

// model is the test's own account of one ledger, kept from the commands
// that succeeded, independently of the package's arithmetic.
type model struct {
	received, returned, transferredIn, adjustments, sold, transferredOut int64

	avg  int64
	open map[uuid.UUID]int64 // open reservations
	// per transaction: units sold, at what unit cost, and units returned
	soldQty, soldCost, returnedQty map[uuid.UUID]int64
	seen                           map[uuid.UUID]bool
	// returns applied, by transaction and source (a source id is unique
	// within its transaction only)
	returns map[[2]uuid.UUID]bool
}

func newModel() *model {
	return &model{
		open:    map[uuid.UUID]int64{},
		soldQty: map[uuid.UUID]int64{}, soldCost: map[uuid.UUID]int64{}, returnedQty: map[uuid.UUID]int64{},
		seen: map[uuid.UUID]bool{}, returns: map[[2]uuid.UUID]bool{},
	}
}

func (m *model) onHand() int64 {
	return m.received + m.returned + m.transferredIn + m.adjustments - m.sold - m.transferredOut
}

func (m *model) reserved() int64 {
	var sum int64
	for _, q := range m.open {
		sum += q
	}
	return sum
}

// avgWith is the documented rule computed the simple way (small figures,
// integer arithmetic, ties to even): the average after qty units come in at
// cost.
func (m *model) avgWith(qty, cost int64) int64 {
	oh := m.onHand()
	if oh <= 0 {
		return cost
	}
	num, den := oh*m.avg+qty*cost, oh+qty
	q, r := num/den, num%den
	if 2*r > den || (2*r == den && q%2 == 1) {
		q++
	}
	return q
}

// outcome is what the model predicts of a command.
type outcome int

const (
	decides  outcome = iota // one event
	nothing                 // no events
	short                   // ErrInsufficientStock
	badState                // ErrInvalidState
	badInput                // ErrInvalid
	repeat                  // an id already applied: nothing, or ErrAlreadyExists if it did something else
)

// TestInvariants drives one ledger with thousands of random commands,
// negative stock not allowed, and checks after every step that the ledger
// agrees with the model (each decision, on hand, reserved, average), that
// on hand = received + returned + transferred in + Σ adjustments − sold −
// transferred out, reserved = Σ open reservations, available ≥ 0, and that
// replaying the decoded history from New gives the live ledger's state.
func TestInvariants(t *testing.T) {
	seeds := []uint64{1, 2, 0x5eed}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			runInvariants(t, seed, 2500)
		})
	}
}

func runInvariants(t *testing.T, seed uint64, steps int) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	l := stock.New(key)
	m := newModel()
	var history []stock.Event
	counts := map[string]int{}

	var used = map[byte][]uuid.UUID{} // ids that succeeded, by kind
	next := map[byte]int{}
	// id returns a fresh id of kind, or now and then one already applied.
	id := func(kind byte) uuid.UUID {
		if ids := used[kind]; len(ids) > 0 && r.IntN(8) == 0 {
			return ids[r.IntN(len(ids))]
		}
		next[kind]++
		return nthID(kind, next[kind])
	}
	var usedReturns [][2]uuid.UUID // (transaction, source) of returns applied
	txCount := 0
	pickTx := func() uuid.UUID {
		// Mostly recent transactions, sometimes a new one.
		i := txCount
		if txCount > 0 && r.IntN(3) != 0 {
			i = max(0, txCount-1-r.IntN(min(txCount, 12)))
		}
		if i == txCount {
			txCount++
		}
		return nthID('t', i)
	}

	for step, done := 0, 0; done < steps; step++ {
		var (
			name    string
			events  []stock.Event
			err     error
			predict outcome
			want    stock.Event // the predicted event, when one
			commit  func()      // updates the model on success
			applied uuid.UUID   // the id marked seen on success, if any
		)
		oh, rsv := m.onHand(), m.reserved()
		avail := oh - rsv
		switch op := r.IntN(9); op {
		case 0: // receipt
			rid, qty, cost := id('r'), 1+r.Int64N(20), r.Int64N(1000)
			name = "Receive"
			if r.IntN(40) == 0 {
				qty = 0
			}
			events, err = l.Receive(stock.Receive{ReceiptID: rid, Qty: qty, UnitCost: amt(cost), By: "clerk", At: at(step)})
			switch {
			case qty == 0:
				predict = badInput
			case m.seen[rid]:
				predict = repeat
			default:
				predict, applied = decides, rid
				avg := m.avgWith(qty, cost)
				commit = func() { m.avg, m.received = avg, m.received+qty }
				want = stock.StockReceived{Key: key, ReceiptID: rid, Qty: qty, UnitCost: amt(cost), AvgCost: amt(avg), By: "clerk", At: at(step)}
			}
		case 1: // adjustment
			aid, delta := id('a'), r.Int64N(61)-40
			name = "Adjust"
			events, err = l.Adjust(stock.Adjust{AdjustmentID: aid, Delta: delta, Reason: "count", By: "clerk", At: at(step)})
			switch {
			case delta == 0:
				predict = badInput
			case m.seen[aid]:
				predict = repeat
			case delta < 0 && avail+delta < 0:
				predict = short
				want = nil
			default:
				predict, applied = decides, aid
				commit = func() { m.adjustments += delta }
				want = stock.StockAdjusted{Key: key, AdjustmentID: aid, Delta: delta, Reason: "count", By: "clerk", At: at(step)}
			}
		case 2, 3: // reservation
			tid, qty := pickTx(), 1+r.Int64N(25)
			name = "Reserve"
			events, err = l.Reserve(stock.Reserve{TransactionID: tid, Qty: qty, At: at(step)})
			switch {
			case m.soldQty[tid] > 0:
				predict = badState
			case m.open[tid] == qty:
				predict = nothing
			case oh-(rsv-m.open[tid]+qty) < 0:
				predict = short
			default:
				predict = decides
				commit = func() { m.open[tid] = qty }
				want = stock.StockReserved{Key: key, TransactionID: tid, Qty: qty, At: at(step)}
			}
		case 4: // release
			tid := pickTx()
			name = "Release"
			events, err = l.Release(stock.Release{TransactionID: tid, Reason: "timeout", At: at(step)})
			if q := m.open[tid]; q > 0 {
				predict = decides
				commit = func() { delete(m.open, tid) }
				want = stock.ReservationReleased{Key: key, TransactionID: tid, Qty: q, Reason: "timeout", At: at(step)}
			} else {
				predict = nothing
			}
		case 5: // sale: of at most its reservation, or without one of at most what is available
			tid := pickTx()
			name = "Sell"
			q := m.open[tid]
			var qty int64
			switch {
			case m.soldQty[tid] > 0:
				qty = 1 + r.Int64N(30) // a repeat: any quantity decides nothing
			case q > 0:
				qty = 1 + r.Int64N(q)
			case avail > 0:
				qty = 1 + r.Int64N(min(avail, 20))
			default:
				continue // a sale now could take available below zero
			}
			events, err = l.Sell(stock.Sell{TransactionID: tid, Qty: qty, At: at(step)})
			if m.soldQty[tid] > 0 {
				predict = nothing
			} else {
				predict = decides
				avg := m.avg
				commit = func() {
					delete(m.open, tid)
					m.sold += qty
					m.soldQty[tid], m.soldCost[tid] = qty, avg
				}
				want = stock.StockSold{Key: key, TransactionID: tid, Qty: qty, Reserved: q, UnitCost: amt(avg), CostOfGoods: amt(qty * avg), At: at(step)}
			}
		case 6: // return
			tid, src := pickTx(), id('s')
			if len(usedReturns) > 0 && r.IntN(6) == 0 {
				// A return applied before, sent again.
				p := usedReturns[r.IntN(len(usedReturns))]
				tid, src = p[0], p[1]
			}
			left := m.soldQty[tid] - m.returnedQty[tid]
			qty := r.Int64N(max(left, 0) + 3)
			name = "Return"
			events, err = l.Return(stock.Return{TransactionID: tid, SourceID: src, Qty: qty, At: at(step)})
			if m.returns[[2]uuid.UUID{tid, src}] {
				predict = repeat
			} else if left <= 0 {
				predict = nothing
			} else {
				if qty == 0 || qty > left {
					qty = left
				}
				cost := m.soldCost[tid]
				predict = decides
				avg := m.avgWith(qty, cost)
				commit = func() {
					m.avg, m.returned = avg, m.returned+qty
					m.returnedQty[tid] += qty
					m.returns[[2]uuid.UUID{tid, src}] = true
					usedReturns = append(usedReturns, [2]uuid.UUID{tid, src})
					used['s'] = append(used['s'], src)
				}
				want = stock.StockReturned{Key: key, TransactionID: tid, SourceID: src, Qty: qty, UnitCost: amt(cost), AvgCost: amt(avg), At: at(step)}
			}
		case 7: // transfer out
			xid, qty := id('o'), 1+r.Int64N(40)
			name = "TransferOut"
			events, err = l.TransferOut(stock.TransferOut{TransferID: xid, ToBranchID: otherBranch, Qty: qty, By: "clerk", At: at(step)})
			switch {
			case m.seen[xid]:
				predict = repeat
			case avail-qty < 0:
				predict = short
			default:
				predict, applied = decides, xid
				commit = func() { m.transferredOut += qty }
				want = stock.StockTransferredOut{Key: key, TransferID: xid, ToBranchID: otherBranch, Qty: qty, UnitCost: amt(m.avg), By: "clerk", At: at(step)}
			}
		case 8: // transfer in
			xid, qty, cost := id('i'), 1+r.Int64N(10), r.Int64N(1000)
			name = "TransferIn"
			events, err = l.TransferIn(stock.TransferIn{TransferID: xid, FromBranchID: otherBranch, Qty: qty, UnitCost: amt(cost), At: at(step)})
			if m.seen[xid] {
				predict = repeat
			} else {
				predict, applied = decides, xid
				avg := m.avgWith(qty, cost)
				commit = func() { m.avg, m.transferredIn = avg, m.transferredIn+qty }
				want = stock.StockTransferredIn{Key: key, TransferID: xid, FromBranchID: otherBranch, Qty: qty, UnitCost: amt(cost), AvgCost: amt(avg), At: at(step)}
			}
		}

		done++
		where := fmt.Sprintf("seed %d step %d %s", seed, step, name)
		switch predict {
		case decides:
			if err != nil || len(events) != 1 {
				t.Fatalf("%s: events %s, err %v; want %s", where, show(events), err, show([]stock.Event{want}))
			}
			if !reflect.DeepEqual(events[0], want) {
				t.Fatalf("%s:\n got %s\nwant %s", where, show(events), show([]stock.Event{want}))
			}
			counts[name]++
		case nothing:
			if err != nil || len(events) != 0 {
				t.Fatalf("%s: events %s, err %v; want none", where, show(events), err)
			}
			counts[name+" (nothing)"]++
		case repeat:
			if len(events) != 0 || (err != nil && !errors.Is(err, stock.ErrAlreadyExists)) {
				t.Fatalf("%s: events %s, err %v; want none, or ErrAlreadyExists", where, show(events), err)
			}
			counts[name+" (repeat)"]++
		case short:
			var se *stock.ShortageError
			if !errors.Is(err, stock.ErrInsufficientStock) || !errors.As(err, &se) || events != nil {
				t.Fatalf("%s: events %s, err %v; want a shortage", where, show(events), err)
			}
			if se.Available != avail {
				t.Fatalf("%s: shortage reports %d available, want %d", where, se.Available, avail)
			}
			counts["shortage"]++
		case badState:
			if !errors.Is(err, stock.ErrInvalidState) || events != nil {
				t.Fatalf("%s: events %s, err %v; want ErrInvalidState", where, show(events), err)
			}
			counts["invalid state"]++
		case badInput:
			if !errors.Is(err, stock.ErrInvalid) || events != nil {
				t.Fatalf("%s: events %s, err %v; want ErrInvalid", where, show(events), err)
			}
			counts["invalid"]++
		}
		for _, e := range events {
			if err := l.Apply(e); err != nil {
				t.Fatalf("%s: apply: %v", where, err)
			}
			data, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("%s: marshal: %v", where, err)
			}
			back, err := stock.Decode(e.EventType(), data)
			if err != nil {
				t.Fatalf("%s: decode: %v", where, err)
			}
			history = append(history, back)
		}
		if commit != nil && len(events) > 0 {
			commit()
			if applied != uuid.Nil {
				m.seen[applied] = true
				used[applied[0]] = append(used[applied[0]], applied)
			}
		}

		// The invariants.
		identity := m.received + m.returned + m.transferredIn + m.adjustments - m.sold - m.transferredOut
		if l.OnHand() != identity {
			t.Fatalf("%s: on hand %d, want received %d + returned %d + in %d + adjusted %d − sold %d − out %d = %d",
				where, l.OnHand(), m.received, m.returned, m.transferredIn, m.adjustments, m.sold, m.transferredOut, identity)
		}
		var openSum int64
		for _, res := range l.Reservations() {
			openSum += res.Reserved
		}
		if l.Reserved() != m.reserved() || l.Reserved() != openSum {
			t.Fatalf("%s: reserved %d, model's open reservations %d, ledger's %d", where, l.Reserved(), m.reserved(), openSum)
		}
		if l.Available() < 0 || l.Available() != l.OnHand()-l.Reserved() {
			t.Fatalf("%s: available %d with on hand %d and reserved %d", where, l.Available(), l.OnHand(), l.Reserved())
		}
		if int64(l.AvgCost()) != m.avg || !l.AvgCost().Valid() {
			t.Fatalf("%s: avg %d, want %d", where, l.AvgCost(), m.avg)
		}
		if l.Version() != uint64(len(history)) {
			t.Fatalf("%s: version %d, want %d", where, l.Version(), len(history))
		}
		for tid, q := range m.soldQty {
			res, ok := l.Reservation(tid)
			if !ok || res.Sold != q || res.Returned != m.returnedQty[tid] || int64(res.SoldCost) != m.soldCost[tid] || res.Reserved != 0 {
				t.Fatalf("%s: reservation of %s = %+v, want sold %d @ %d, returned %d", where, tid, res, q, m.soldCost[tid], m.returnedQty[tid])
			}
		}
		for sid := range m.seen {
			if !l.SeenIn(uuid.Nil, sid) && !l.SeenIn(otherBranch, sid) {
				t.Fatalf("%s: %s applied but not seen", where, sid)
			}
		}
		for p := range m.returns {
			if !l.SeenIn(p[0], p[1]) {
				t.Fatalf("%s: return of %s by %s applied but not seen", where, p[0], p[1])
			}
		}

		replay := stock.New(key)
		for i, e := range history {
			if err := replay.Apply(e); err != nil {
				t.Fatalf("%s: replay event %d: %v", where, i, err)
			}
		}
		if replay.OnHand() != l.OnHand() || replay.Reserved() != l.Reserved() || replay.AvgCost() != l.AvgCost() ||
			replay.Version() != l.Version() || !reflect.DeepEqual(replay.Reservations(), l.Reservations()) {
			t.Fatalf("%s: replay %+v v%d differs from live %+v v%d", where, stateOf(replay), replay.Version(), stateOf(l), l.Version())
		}
	}

	// The walk must have visited every kind of outcome to mean anything.
	for _, k := range []string{
		"Receive", "Receive (repeat)", "Adjust", "Adjust (repeat)", "Reserve", "Reserve (nothing)",
		"Release", "Release (nothing)", "Sell", "Sell (nothing)", "Return", "Return (nothing)", "Return (repeat)",
		"TransferOut", "TransferOut (repeat)", "TransferIn", "TransferIn (repeat)",
		"shortage", "invalid state", "invalid",
	} {
		if counts[k] == 0 {
			t.Errorf("seed %d: no %q in %d commands: %v", seed, k, steps, counts)
		}
	}
	t.Logf("seed %d: %d commands, %d events, %v, on hand %d, reserved %d, avg %d", seed, steps, len(history), counts, l.OnHand(), l.Reserved(), l.AvgCost())
}
