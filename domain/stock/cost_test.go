package stock_test

import (
	"errors"
	"reflect"
	"testing"

	"pos/domain/money"
	"pos/domain/stock"
)

// step is one command of a cost scenario and the ledger after it.
type step struct {
	cmd     command
	onHand  int64
	avg     int64
	cogs    int64 // for a sale, its cost of goods
	unit    int64 // for a sale, transfer or return, the unit cost its event carries
	checkCU bool  // whether cogs and unit are checked
}

// TestMovingAverage pins the moving-average rule of the package
// documentation to worked examples: avg' = round_half_even((on_hand × avg +
// qty × unit_cost) / (on_hand + qty)) on the rounded average before, reset
// to the unit cost when on hand is zero or negative, unchanged by outflows.
func TestMovingAverage(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"10 @ 100 then 5 @ 130 = 110", []step{
			{cmd: recv(rcpt1, 10, 100), onHand: 10, avg: 100},
			{cmd: recv(rcpt2, 5, 130), onHand: 15, avg: 110},
		}},
		{"tie 1.5 rounds up to the even 2", []step{
			{cmd: recv(rcpt1, 1, 1), onHand: 1, avg: 1},
			{cmd: recv(rcpt2, 1, 2), onHand: 2, avg: 2},
		}},
		{"tie 2.5 rounds down to the even 2", []step{
			{cmd: recv(rcpt1, 1, 2), onHand: 1, avg: 2},
			{cmd: recv(rcpt2, 1, 3), onHand: 2, avg: 2},
		}},
		{"tie 4.5 rounds down to 4, tie 5.5 up to 6", []step{
			{cmd: recv(rcpt1, 1, 4), onHand: 1, avg: 4},
			{cmd: recv(rcpt2, 1, 5), onHand: 2, avg: 4}, // 9/2 = 4.5
			{cmd: recv(rcpt3, 2, 7), onHand: 4, avg: 6}, // (8+14)/4 = 5.5
		}},
		{"tie 1.5 over 4 units (3 @ 1 + 1 @ 3) rounds to 2", []step{
			{cmd: recv(rcpt1, 3, 1), onHand: 3, avg: 1},
			{cmd: recv(rcpt2, 1, 3), onHand: 4, avg: 2},
		}},
		{"tie 100.5 rounds down to the even 100", []step{
			{cmd: recv(rcpt1, 1, 100), onHand: 1, avg: 100},
			{cmd: recv(rcpt2, 1, 101), onHand: 2, avg: 100},
		}},
		{"non-ties round to nearest: 100.33 → 100", []step{
			{cmd: recv(rcpt1, 2, 100), onHand: 2, avg: 100},
			{cmd: recv(rcpt2, 1, 101), onHand: 3, avg: 100},
		}},
		{"non-ties round to nearest: 100.67 → 101", []step{
			{cmd: recv(rcpt1, 1, 100), onHand: 1, avg: 100},
			{cmd: recv(rcpt2, 2, 101), onHand: 3, avg: 101},
		}},
		{"outflows and additions by adjustment leave the average", []step{
			{cmd: recv(rcpt1, 1, 100), onHand: 1, avg: 100},
			{cmd: recv(rcpt2, 3, 101), onHand: 4, avg: 101}, // 403/4 = 100.75
			{cmd: adj(adj1, -2, false), onHand: 2, avg: 101},
			{cmd: out(xfer1, 1, false), onHand: 1, avg: 101, unit: 101, checkCU: true},
			{cmd: sl(tx1, 1), onHand: 0, avg: 101, cogs: 101, unit: 101, checkCU: true},
			{cmd: adj(adj2, 3, false), onHand: 3, avg: 101}, // a found box at zero keeps it too
			{cmd: sl(tx2, 3), onHand: 0, avg: 101, cogs: 303, unit: 101, checkCU: true},
		}},
		{"the rounded average is what moves (1 @ 1, 1 @ 2, 1 @ 1 → 2, not 4/3 → 1)", []step{
			{cmd: recv(rcpt1, 1, 1), onHand: 1, avg: 1},
			{cmd: recv(rcpt2, 1, 2), onHand: 2, avg: 2}, // 1.5 → 2
			{cmd: recv(rcpt3, 1, 1), onHand: 3, avg: 2}, // (4+1)/3 = 1.67 → 2
		}},
		{"a receipt at zero on hand resets the average", []step{
			{cmd: recv(rcpt1, 10, 100), onHand: 10, avg: 100},
			{cmd: sl(tx1, 10), onHand: 0, avg: 100, cogs: 1000, unit: 100, checkCU: true},
			{cmd: recv(rcpt2, 5, 130), onHand: 5, avg: 130},
		}},
		{"a receipt at negative on hand resets the average", []step{
			{cmd: recv(rcpt1, 2, 100), onHand: 2, avg: 100},
			{cmd: sl(tx1, 5), onHand: -3, avg: 100, cogs: 500, unit: 100, checkCU: true},
			{cmd: recv(rcpt2, 5, 130), onHand: 2, avg: 130},
			{cmd: recv(rcpt3, 2, 70), onHand: 4, avg: 100},
		}},
		{"an adjustment to zero, then a receipt, resets the average", []step{
			{cmd: recv(rcpt1, 4, 100), onHand: 4, avg: 100},
			{cmd: adj(adj1, -4, false), onHand: 0, avg: 100},
			{cmd: recv(rcpt2, 1, 7), onHand: 1, avg: 7},
		}},
		{"a transfer in at zero on hand sets the source's cost", []step{
			{cmd: recv(rcpt1, 4, 100), onHand: 4, avg: 100},
			{cmd: out(xfer1, 4, false), onHand: 0, avg: 100, unit: 100, checkCU: true},
			{cmd: in(xfer2, 3, 250), onHand: 3, avg: 250},
		}},
		{"returns come back at the sale's unit cost and move the average", []step{
			{cmd: recv(rcpt1, 10, 100), onHand: 10, avg: 100},
			{cmd: sl(tx1, 4), onHand: 6, avg: 100, cogs: 400, unit: 100, checkCU: true},
			{cmd: recv(rcpt2, 4, 130), onHand: 10, avg: 112},                        // (600+520)/10
			{cmd: rt(tx1, ref1, 2), onHand: 12, avg: 110, unit: 100, checkCU: true}, // (1120+200)/12
			{cmd: sl(tx2, 2), onHand: 10, avg: 110, cogs: 220, unit: 110, checkCU: true},
			{cmd: rt(tx2, tx2, 0), onHand: 12, avg: 110, unit: 110, checkCU: true},  // (1100+220)/12
			{cmd: rt(tx1, ref2, 0), onHand: 14, avg: 109, unit: 100, checkCU: true}, // (1320+200)/14 = 108.57
		}},
		{"a return on zero on hand sets the sale's cost", []step{
			{cmd: recv(rcpt1, 5, 100), onHand: 5, avg: 100},
			{cmd: sl(tx1, 5), onHand: 0, avg: 100, cogs: 500, unit: 100, checkCU: true},
			{cmd: recv(rcpt2, 5, 200), onHand: 5, avg: 200},
			{cmd: sl(tx2, 5), onHand: 0, avg: 200, cogs: 1000, unit: 200, checkCU: true},
			{cmd: rt(tx1, ref1, 2), onHand: 2, avg: 100, unit: 100, checkCU: true},
		}},
		{"return ties round half to even, up and down", []step{
			{cmd: recv(rcpt1, 2, 3), onHand: 2, avg: 3},
			{cmd: sl(tx1, 2), onHand: 0, avg: 3, cogs: 6, unit: 3, checkCU: true},
			{cmd: recv(rcpt2, 1, 4), onHand: 1, avg: 4},
			{cmd: rt(tx1, ref1, 1), onHand: 2, avg: 4, unit: 3, checkCU: true}, // 7/2 = 3.5 → 4
			{cmd: adj(adj1, -1, false), onHand: 1, avg: 4},
			{cmd: recv(rcpt3, 1, 8), onHand: 2, avg: 6},
			{cmd: adj(adj2, -1, false), onHand: 1, avg: 6},
			{cmd: rt(tx1, ref2, 1), onHand: 2, avg: 4, unit: 3, checkCU: true}, // 9/2 = 4.5 → 4
		}},
		{"transfer-in ties round half to even, up and down", []step{
			{cmd: recv(rcpt1, 1, 157), onHand: 1, avg: 157},
			{cmd: in(xfer1, 1, 158), onHand: 2, avg: 158}, // 157.5 → 158
			{cmd: in(xfer2, 2, 157), onHand: 4, avg: 158}, // 630/4 = 157.5 → 158
			{cmd: adj(adj1, -3, false), onHand: 1, avg: 158},
			{cmd: in(nthID('x', 3), 1, 159), onHand: 2, avg: 158}, // 158.5 → 158
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := stock.New(key)
			var history []stock.Event
			for i, s := range tt.steps {
				events, err := s.cmd(l)
				if err != nil || len(events) != 1 {
					t.Fatalf("step %d: events %s, err %v; want one event", i, show(events), err)
				}
				e := events[0]
				applyAll(t, l, events)
				history = append(history, e)
				if l.OnHand() != s.onHand || int64(l.AvgCost()) != s.avg {
					t.Errorf("step %d (%s): on hand %d @ %d, want %d @ %d", i, e.EventType(), l.OnHand(), l.AvgCost(), s.onHand, s.avg)
				}
				switch e := e.(type) {
				case stock.StockReceived:
					if int64(e.AvgCost) != s.avg {
						t.Errorf("step %d: event AvgCost %d, want %d", i, e.AvgCost, s.avg)
					}
				case stock.StockSold:
					if e.CostOfGoods != e.UnitCost*money.Amount(e.Qty) {
						t.Errorf("step %d: cost of goods %d ≠ %d × %d", i, e.CostOfGoods, e.Qty, e.UnitCost)
					}
					if int64(e.CostOfGoods) != s.cogs {
						t.Errorf("step %d: cost of goods %d, want %d", i, e.CostOfGoods, s.cogs)
					}
					if s.checkCU && int64(e.UnitCost) != s.unit {
						t.Errorf("step %d: sale unit cost %d, want %d", i, e.UnitCost, s.unit)
					}
				case stock.StockReturned:
					if s.checkCU && int64(e.UnitCost) != s.unit {
						t.Errorf("step %d: return unit cost %d, want %d", i, e.UnitCost, s.unit)
					}
					if int64(e.AvgCost) != s.avg {
						t.Errorf("step %d: event AvgCost %d, want %d", i, e.AvgCost, s.avg)
					}
				case stock.StockTransferredOut:
					if s.checkCU && int64(e.UnitCost) != s.unit {
						t.Errorf("step %d: transfer unit cost %d, want %d", i, e.UnitCost, s.unit)
					}
				case stock.StockTransferredIn:
					if int64(e.AvgCost) != s.avg {
						t.Errorf("step %d: event AvgCost %d, want %d", i, e.AvgCost, s.avg)
					}
				}
			}
			replay := load(t, key, history)
			if stateOf(replay) != stateOf(l) || replay.Version() != l.Version() {
				t.Errorf("replay %+v v%d, live %+v v%d", stateOf(replay), replay.Version(), stateOf(l), l.Version())
			}
		})
	}
}

// TestTransferCarriesSourceCost runs both halves of a transfer: the target
// receives the units at the average they left the source at.
func TestTransferCarriesSourceCost(t *testing.T) {
	src := do(t, key, nil, recv(rcpt1, 10, 100), recv(rcpt2, 10, 130)) // 20 @ 115
	source := load(t, key, src)
	outEvents, err := source.TransferOut(stock.TransferOut{TransferID: xfer1, ToBranchID: otherBranch, Qty: 5, By: "clerk-1", At: at(5)})
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, source, outEvents)
	o := outEvents[0].(stock.StockTransferredOut)
	if o.UnitCost != 115 || source.OnHand() != 15 || source.AvgCost() != 115 {
		t.Fatalf("source after: %d @ %d, event unit cost %d; want 15 @ 115, 115", source.OnHand(), source.AvgCost(), o.UnitCost)
	}

	target := load(t, otherKey, []stock.Event{
		stock.StockReceived{Key: otherKey, ReceiptID: rcpt3, Qty: 5, UnitCost: 200, AvgCost: 200, By: "clerk-2", At: at(1)},
	})
	inEvents, err := target.TransferIn(stock.TransferIn{TransferID: o.TransferID, FromBranchID: o.Key.BranchID, Qty: o.Qty, UnitCost: o.UnitCost, At: at(6)})
	if err != nil {
		t.Fatal(err)
	}
	want := []stock.Event{stock.StockTransferredIn{Key: otherKey, TransferID: xfer1, FromBranchID: branchID, Qty: 5, UnitCost: 115, AvgCost: 158, At: at(6)}}
	if !reflect.DeepEqual(inEvents, want) { // (1000 + 575) / 10 = 157.5 → 158 (even)
		t.Fatalf("transfer in:\n got %s\nwant %s", show(inEvents), show(want))
	}
	applyAll(t, target, inEvents)
	if target.OnHand() != 10 || target.AvgCost() != 158 {
		t.Errorf("target after: %d @ %d, want 10 @ 158", target.OnHand(), target.AvgCost())
	}
}

// TestValueOverflow checks that a movement whose value or quantity leaves
// the exact range is a validation error wrapping money.ErrOutOfRange (or
// naming qty), never a wrong number, and that the ledger is unchanged.
func TestValueOverflow(t *testing.T) {
	const maxUnits = 1<<53 - 1
	maxA := int64(money.MaxAmount)
	tests := []struct {
		name     string
		given    []stock.Event
		when     command
		wantErr  error
		field    string
		wantNone bool
	}{
		{
			name:    "receipt: on hand × avg + qty × cost above 2^53−1",
			given:   hist(received(rcpt1, 1, maxA, maxA)),
			when:    recv(rcpt2, 1, 1),
			wantErr: money.ErrOutOfRange, field: "qty",
		},
		{
			name:    "receipt: on hand × avg alone above 2^53−1",
			given:   hist(received(rcpt1, 3, maxA/2, maxA/2)),
			when:    recv(rcpt2, 1, 0),
			wantErr: money.ErrOutOfRange, field: "qty",
		},
		{
			name:    "receipt: qty × cost alone above 2^53−1",
			given:   histStocked,
			when:    recv(rcpt2, 2, maxA/2+1),
			wantErr: money.ErrOutOfRange, field: "qty",
		},
		{
			name:    "transfer in: the value above 2^53−1",
			given:   histStocked,
			when:    in(xfer1, 1000, maxA/1000),
			wantErr: money.ErrOutOfRange, field: "qty",
		},
		{
			name:    "return: the value above 2^53−1",
			given:   hist(received(rcpt1, 4, maxA/4, maxA/4), sold(tx1, 2, 0, maxA/4), received(rcpt2, 2, maxA/4, maxA/4), stock.StockReceived{Key: key, ReceiptID: rcpt3, Qty: 1, UnitCost: amt(maxA / 4), AvgCost: amt(maxA / 4), By: "x", At: at(1)}),
			when:    rt(tx1, ref1, 2),
			wantErr: money.ErrOutOfRange, field: "qty",
		},
		{
			name:    "sale: cost of goods above 2^53−1",
			given:   hist(received(rcpt1, 3, maxA/2, maxA/2)),
			when:    sl(tx1, 3),
			wantErr: money.ErrOutOfRange, field: "qty",
		},
		{
			name:  "receipt: on hand above 2^53−1 units",
			given: hist(received(rcpt1, maxUnits-1, 0, 0)),
			when:  recv(rcpt2, 2, 0),
			field: "qty",
		},
		{
			name:  "transfer in: on hand above 2^53−1 units",
			given: hist(received(rcpt1, maxUnits, 0, 0)),
			when:  in(xfer1, 1, 0),
			field: "qty",
		},
		{
			name:  "adjustment: on hand above 2^53−1 units",
			given: hist(received(rcpt1, maxUnits, 0, 0)),
			when:  adj(adj1, 1, false),
			field: "qty",
		},
		{
			name:  "adjustment: on hand below −(2^53−1) units",
			given: hist(sold(tx1, maxUnits, 0, 0)),
			when:  adj(adj1, -1, true),
			field: "qty",
		},
		{
			name:  "sale: on hand below −(2^53−1) units",
			given: hist(sold(tx1, maxUnits, 0, 0)),
			when:  sl(tx2, 1),
			field: "qty",
		},
		{
			name:  "transfer out: on hand below −(2^53−1) units",
			given: hist(sold(tx1, maxUnits, 0, 0)),
			when:  out(xfer1, 1, true),
			field: "qty",
		},
		{
			name:  "reservation: reserved above 2^53−1 units",
			given: hist(reserved(tx1, maxUnits)),
			when:  res(tx2, 1, true),
			field: "qty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, scenario{given: tt.given, when: tt.when, wantErr: tt.wantErr, wantField: tt.field})
		})
	}

	// Just inside the range, the exact average is still computed: on hand
	// × avg + qty × cost = 2^53−1 exactly.
	l := load(t, key, hist(received(rcpt1, 1, maxA-1, maxA-1)))
	events, err := l.Receive(stock.Receive{ReceiptID: rcpt2, Qty: 1, UnitCost: 1, By: "clerk-1", At: at(1)})
	if err != nil {
		t.Fatalf("receipt at the edge of the range: %v", err)
	}
	// (2^53 − 1) / 2 = 2^52 − 0.5: a tie between 2^52 − 1 (odd) and 2^52 (even).
	if got := events[0].(stock.StockReceived).AvgCost; got != 1<<52 {
		t.Errorf("avg = %d, want %d", got, int64(1<<52))
	}
	// An error is never accompanied by a partial result.
	_, err = load(t, key, hist(received(rcpt1, 1, maxA, maxA))).Receive(stock.Receive{ReceiptID: rcpt2, Qty: 1, UnitCost: 1, By: "c", At: at(1)})
	if !errors.Is(err, stock.ErrInvalid) {
		t.Errorf("err = %v, want ErrInvalid", err)
	}
}

// TestValueOverflowAtZeroOnHand checks that a receipt or transfer in whose
// own value (qty × unit cost) exceeds 2^53−1 is refused whatever the on
// hand before it, as it is on a stocked ledger (TestValueOverflow): a
// ledger holding units whose value cannot be represented could not sell
// them (cost of goods out of range) nor take any further receipt.
func TestValueOverflowAtZeroOnHand(t *testing.T) {
	half := int64(money.MaxAmount)/2 + 1 // 2 × half = 2^53 > 2^53−1
	for _, tt := range []struct {
		name  string
		given []stock.Event
		when  command
	}{
		{"receipt into an empty ledger", nil, recv(rcpt2, 2, half)},
		{"receipt at negative on hand", hist(sold(tx2, 1, 0, 0)), recv(rcpt2, 2, half)},
		{"transfer in into an empty ledger", nil, in(xfer1, 2, half)},
		{"the same receipt into a stocked ledger (refused today)", histStocked, recv(rcpt2, 2, half)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := load(t, key, tt.given)
			events, err := tt.when(l)
			if errors.Is(err, stock.ErrInvalid) && errors.Is(err, money.ErrOutOfRange) {
				return
			}
			// Show what accepting it leads to: the units cannot be sold.
			applyAll(t, l, events)
			_, sellErr := l.Sell(stock.Sell{TransactionID: tx3, Qty: 2, At: at(9)})
			t.Errorf("err = %v, want ErrInvalid wrapping money.ErrOutOfRange; decided %s, after which selling the 2 units gives %v",
				err, show(events), sellErr)
		})
	}
}
