package processes_test

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/commands"
	"pos/domain"
	"pos/domain/money"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
)

// modelSale is what the test itself knows of a sale it drove.
type modelSale struct {
	id       uuid.UUID
	branch   uuid.UUID
	units    map[string]int64
	lines    map[string]uuid.UUID // SKU → line id (one line per SKU)
	status   transaction.Status
	paid     bool
	refunded map[string]int64
}

type ledgerKey struct {
	branch uuid.UUID
	sku    string
}

// TestStockProperty drives at least 1,000 random operations (receipts,
// sales, payments, voids, refunds by line, adjustments, transfers and
// reservation timeouts) through the real commands, process manager, sweeper
// and stock projection, and checks for every ledger, against the test's own
// account: on hand = received + returned ± adjusted + transferred in − sold −
// transferred out; reserved = the units of the sales pending payment (the
// open reservations); the read model equals the aggregate.
func TestStockProperty(t *testing.T) {
	ops := 1000
	if testing.Short() {
		ops = 300
	}
	f := newFixture(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(6, 42))
	reads, err := projections.NewRunner(f.env.Pool, f.env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	branches := []uuid.UUID{f.branch, projtest.NewID(t), projtest.NewID(t)}
	skus := []string{"TEA", "CAKE", "MILK"}
	// The test's account of every ledger's on hand, from the operations
	// that succeeded; sales are accounted when checked.
	stocked := map[ledgerKey]int64{}
	var sales []*modelSale
	at := func(b uuid.UUID) commands.Meta { return f.meta }
	pick := func() ledgerKey {
		return ledgerKey{branches[rng.IntN(len(branches))], skus[rng.IntN(len(skus))]}
	}
	counts := map[string]int{}

	for op := 0; op < ops; op++ {
		f.advance(time.Duration(rng.IntN(120)) * time.Second)
		switch k := rng.IntN(100); {
		case k < 15: // receipt
			l := pick()
			qty := int64(1 + rng.IntN(20))
			if _, _, err := f.h.ReceiveStock(ctx, at(l.branch), commands.ReceiveStock{BranchID: l.branch, SKU: l.sku, Qty: qty, UnitCost: money.Amount(50 + rng.IntN(500))}); err != nil {
				t.Fatalf("op %d receive: %v", op, err)
			}
			stocked[l] += qty
			counts["receipt"]++
		case k < 40: // a sale to checkout
			branch := branches[rng.IntN(len(branches))]
			s := &modelSale{branch: branch, units: map[string]int64{}, lines: map[string]uuid.UUID{}, refunded: map[string]int64{}}
			tx, _, err := f.h.OpenTransaction(ctx, f.meta, commands.OpenTransaction{BranchID: branch})
			if err != nil {
				t.Fatalf("op %d open: %v", op, err)
			}
			s.id = tx.ID()
			for _, sku := range skus[:1+rng.IntN(len(skus))] {
				qty := int64(1 + rng.IntN(4))
				line := uuid.New()
				if _, _, err := f.h.AddItem(ctx, f.meta, s.id, transaction.AddItem{LineID: line, SKU: sku, Name: sku, Qty: qty, UnitPrice: 1000}); err != nil {
					t.Fatalf("op %d add: %v", op, err)
				}
				s.units[sku], s.lines[sku] = qty, line
			}
			s.status = transaction.StatusDraft
			_, _, err = f.h.Checkout(ctx, f.meta, s.id)
			switch {
			case err == nil:
				s.status = transaction.StatusPendingPayment
				counts["checkout"]++
			case errors.Is(err, domain.ErrInsufficientStock):
				counts["checkout refused"]++
			default:
				t.Fatalf("op %d checkout: %v", op, err)
			}
			sales = append(sales, s)
		case k < 60: // pay a pending sale
			if s := randomSale(rng, sales, transaction.StatusPendingPayment); s != nil {
				f.pay(s.id)
				s.status, s.paid = transaction.StatusPaid, true
				counts["payment"]++
			}
		case k < 68: // void a draft, pending or paid sale
			if s := randomSale(rng, sales, transaction.StatusDraft, transaction.StatusPendingPayment, transaction.StatusPaid); s != nil {
				if _, _, err := f.h.VoidTransaction(ctx, f.meta, s.id, transaction.Void{Reason: "property"}); err != nil {
					t.Fatalf("op %d void from %s: %v", op, s.status, err)
				}
				s.status = transaction.StatusVoided
				counts["void"]++
			}
		case k < 76: // refund one unit of a line of a paid sale
			if s := randomSale(rng, sales, transaction.StatusPaid, transaction.StatusPartiallyRefunded); s != nil {
				sku := slices.Sorted(maps.Keys(s.units))[rng.IntN(len(s.units))]
				if s.refunded[sku] < s.units[sku] {
					tx, _, err := f.h.IssueRefund(ctx, f.meta, s.id, transaction.Refund{Reason: "property",
						Lines: []transaction.RefundLine{{LineID: s.lines[sku], Qty: 1}}})
					if err != nil {
						t.Fatalf("op %d refund: %v", op, err)
					}
					s.refunded[sku]++
					s.status = tx.Status()
					counts["refund"]++
				}
			}
		case k < 84: // adjustment
			l := pick()
			delta := int64(rng.IntN(11) - 6)
			if delta == 0 {
				delta = 1
			}
			_, _, err := f.h.AdjustStock(ctx, f.meta, commands.AdjustStock{BranchID: l.branch, SKU: l.sku, Delta: delta, Reason: "count"})
			switch {
			case err == nil:
				stocked[l] += delta
				counts["adjustment"]++
			case errors.Is(err, domain.ErrInsufficientStock):
				counts["adjustment refused"]++
			default:
				t.Fatalf("op %d adjust: %v", op, err)
			}
		case k < 92: // transfer
			from, to := pick(), branches[rng.IntN(len(branches))]
			if to == from.branch {
				continue
			}
			qty := int64(1 + rng.IntN(5))
			_, err := f.h.TransferStock(ctx, f.meta, commands.TransferStock{FromBranchID: from.branch, ToBranchID: to, SKU: from.sku, Qty: qty})
			switch {
			case err == nil:
				stocked[from] -= qty
				stocked[ledgerKey{to, from.sku}] += qty
				counts["transfer"]++
			case errors.Is(err, domain.ErrInsufficientStock):
				counts["transfer refused"]++
			default:
				t.Fatalf("op %d transfer: %v", op, err)
			}
		case k < 96: // the process manager catches up
			f.process()
		default: // time passes beyond the reservation timeout
			f.process()
			f.advance(31 * time.Minute)
			if _, err := f.sweeper().Sweep(ctx); err != nil {
				t.Fatalf("op %d sweep: %v", op, err)
			}
			for _, s := range sales {
				if s.status == transaction.StatusPendingPayment {
					s.status = transaction.StatusVoided
					counts["timeout"]++
				}
			}
		}
	}
	f.process()
	if err := f.env.Store.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := reads.Catchup(ctx, eventstore.Start); err != nil {
		t.Fatal(err)
	}
	t.Logf("operations: %v", counts)
	for _, kind := range []string{"receipt", "checkout", "checkout refused", "payment", "void", "refund", "adjustment", "transfer", "timeout"} {
		if counts[kind] == 0 {
			t.Errorf("no %s happened: the random mix does not cover it", kind)
		}
	}

	// The test's expectation per ledger.
	onHand := maps.Clone(stocked)
	reserved := map[ledgerKey]int64{}
	for _, s := range sales {
		if got := f.status(s.id); got != s.status {
			t.Errorf("sale %s is %s, the test expected %s", s.id, got, s.status)
		}
		for sku, qty := range s.units {
			l := ledgerKey{s.branch, sku}
			switch {
			case s.status == transaction.StatusPendingPayment:
				reserved[l] += qty
			case s.paid && s.status != transaction.StatusVoided:
				onHand[l] += s.refunded[sku] - qty
			}
		}
	}
	admin, err := pgx.Connect(ctx, f.env.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, b := range branches {
		for _, sku := range skus {
			l := ledgerKey{b, sku}
			agg, _, err := f.h.Ledger(ctx, f.meta, b, sku)
			if err != nil {
				t.Fatal(err)
			}
			if agg.OnHand() != onHand[l] || agg.Reserved() != reserved[l] {
				t.Errorf("%s@%s: on hand %d reserved %d, the account says %d and %d", sku, b, agg.OnHand(), agg.Reserved(), onHand[l], reserved[l])
			}
			var open int64
			for _, r := range agg.Reservations() {
				open += r.Reserved
			}
			if open != agg.Reserved() {
				t.Errorf("%s@%s: reserved %d ≠ Σ open reservations %d", sku, b, agg.Reserved(), open)
			}
			if agg.Version() == 0 {
				continue
			}
			var rmOnHand, rmReserved, rmAvg, rmVersion int64
			err = admin.QueryRow(ctx, `SELECT on_hand, reserved, avg_cost, version FROM rm_stock_levels
                WHERE merchant_id = $1 AND ledger_id = $2`, f.meta.MerchantID, agg.Key().LedgerID).Scan(&rmOnHand, &rmReserved, &rmAvg, &rmVersion)
			if err != nil {
				t.Fatalf("%s@%s read model: %v", sku, b, err)
			}
			if rmOnHand != agg.OnHand() || rmReserved != agg.Reserved() || rmAvg != int64(agg.AvgCost()) || uint64(rmVersion) != agg.Version() {
				t.Errorf("%s@%s: read model (%d, %d, %d, v%d) ≠ aggregate (%d, %d, %d, v%d)", sku, b,
					rmOnHand, rmReserved, rmAvg, rmVersion, agg.OnHand(), agg.Reserved(), agg.AvgCost(), agg.Version())
			}
		}
	}
}

func randomSale(rng *rand.Rand, sales []*modelSale, statuses ...transaction.Status) *modelSale {
	var matching []*modelSale
	for _, s := range sales {
		if slices.Contains(statuses, s.status) {
			matching = append(matching, s)
		}
	}
	if len(matching) == 0 {
		return nil
	}
	return matching[rng.IntN(len(matching))]
}
