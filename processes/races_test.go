package processes_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/commands"
	"pos/domain/stock"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections/projtest"
)

// hookStore calls before once, just before the first append to a
// transaction stream: there, a checkout has reserved and not yet frozen
// its totals.
type hookStore struct {
	eventstore.Store
	before func()
	done   bool
}

func (s *hookStore) Append(ctx context.Context, stream string, exp eventstore.ExpectedVersion, ev ...eventstore.EventData) (eventstore.AppendResult, error) {
	if !s.done && strings.HasPrefix(stream, "transaction") {
		s.done = true
		s.before()
	}
	return s.Store.Append(ctx, stream, exp, ev...)
}

func openDraft(t *testing.T, f *fixture, lines map[string]int64) *transaction.Transaction {
	t.Helper()
	d, _, err := f.h.OpenTransaction(context.Background(), f.meta, commands.OpenTransaction{BranchID: f.branch})
	if err != nil {
		t.Fatal(err)
	}
	for sku, q := range lines {
		d = withLine(t, f, d.ID(), sku, q)
	}
	return d
}

// If-Match on a checkout names the draft's version, never a ledger's.
func TestCheckoutIfMatchIsTheDrafts(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100) // ledger at version 1
	d := openDraft(t, f, map[string]int64{"TEA": 2})
	v := d.Version()
	m := f.meta
	m.IfMatch = &v
	_, _, err := f.h.Checkout(context.Background(), m, d.ID())
	if err != nil {
		t.Errorf("checkout with the draft's version %d as If-Match: %v", v, err)
	}
}

// A ledger whose version happens to equal the draft's, beside one whose
// version does not: the checkout still succeeds, and no reservation leaks.
func TestCheckoutIfMatchIsTheDraftsNotALedgers(t *testing.T) {
	f := newFixture(t)
	f.receive("ZZZ", 10, 100)
	f.receive("ZZZ", 10, 100)
	f.receive("ZZZ", 10, 100)
	f.receive("ZZZ", 10, 100) // version 4
	m0 := f.meta
	d := openDraft(t, f, map[string]int64{"ZZZ": 1})
	// make AAA reservable: receive once (v1)
	f.receive("AAA", 5, 100)
	f.receive("AAA", 5, 100)
	f.receive("AAA", 5, 100) // v3 == the draft's version below
	d = withLine(t, f, d.ID(), "AAA", 1)
	v := d.Version()
	m := m0
	m.IfMatch = &v
	_, _, err := f.h.Checkout(context.Background(), m, d.ID())
	t.Logf("draft v%d, checkout err=%v", v, err)
	t.Logf("AAA reserved=%d ZZZ reserved=%d", f.ledger("AAA").Reserved(), f.ledger("ZZZ").Reserved())
	if err != nil {
		t.Errorf("checkout with the draft's version as If-Match: %v", err)
	}
	if f.ledger("AAA").Reserved() != 1 || f.ledger("ZZZ").Reserved() != 1 {
		t.Errorf("reserved AAA %d ZZZ %d, want 1 and 1", f.ledger("AAA").Reserved(), f.ledger("ZZZ").Reserved())
	}
}

// A transfer's If-Match names the source ledger's version; the target half
// never answers 412 after the source half committed.
func TestTransferIfMatchIsTheSources(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100) // source v1
	other := projtest.NewID(t)
	for range 3 {
		if _, _, err := f.h.ReceiveStock(context.Background(), f.meta, commands.ReceiveStock{BranchID: other, SKU: "TEA", Qty: 1, UnitCost: 100}); err != nil {
			t.Fatal(err)
		}
	}
	v := uint64(1)
	m := f.meta
	m.IfMatch = &v
	_, err := f.h.TransferStock(context.Background(), m, commands.TransferStock{FromBranchID: f.branch, ToBranchID: other, SKU: "TEA", Qty: 4})
	t.Logf("transfer err=%v; source on hand now %d", err, f.ledger("TEA").OnHand())
	if err != nil || f.ledger("TEA").OnHand() != 6 {
		t.Errorf("transfer with the source's version as If-Match: %v, source on hand %d", err, f.ledger("TEA").OnHand())
	}
}

// A checkout that reserved TEA and MILK died; MILK was removed, the sale
// checked out again and paid: MILK's reservation goes back.
func TestReservationOfARemovedLineIsReleased(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100)
	f.receive("MILK", 10, 100)
	ctx := context.Background()
	d := openDraft(t, f, map[string]int64{"TEA": 2})
	d = withLine(t, f, d.ID(), "MILK", 1)
	// A checkout that reserved both and died (client went away: ctx
	// cancelled, the release is skipped).
	for sku, q := range map[string]int64{"TEA": 2, "MILK": 1} {
		ev, err := f.ledger(sku).Reserve(stock.Reserve{TransactionID: d.ID(), Qty: q, At: f.clock()})
		if err != nil {
			t.Fatal(err)
		}
		f.env.Append(t, commands.StockStream(f.meta.MerchantID, f.branch, sku), f.meta.MerchantID.String(), ev[0])
	}
	var milkLine uuid.UUID
	for _, l := range d.Lines() {
		if l.SKU == "MILK" {
			milkLine = l.LineID
		}
	}
	if _, _, err := f.h.RemoveItem(ctx, f.meta, d.ID(), transaction.RemoveItem{LineID: milkLine, At: f.clock()}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.h.Checkout(ctx, f.meta, d.ID()); err != nil {
		t.Fatal(err)
	}
	f.pay(d.ID())
	f.process()
	f.advance(2 * time.Hour)
	n, err := f.sweeper().Sweep(ctx)
	f.process()
	t.Logf("sweep %d %v; MILK reserved %d, TEA reserved %d", n, err, f.ledger("MILK").Reserved(), f.ledger("TEA").Reserved())
	if f.ledger("MILK").Reserved() != 0 {
		t.Errorf("MILK stays reserved by a paid sale that has no MILK line")
	}
}

// The sweeper releases an abandoned draft's reservation while a new checkout
// of that draft is between reserving and freezing its totals, and another
// sale takes the unit: the checkout must then fail for the shortage (the
// draft moved under it, so it reserves again), never sell the unit twice.
func TestSweeperRacingACheckoutNeverOversells(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 1, 100)
	ctx := context.Background()
	d := openDraft(t, f, map[string]int64{"TEA": 1})
	ev, err := f.ledger("TEA").Reserve(stock.Reserve{TransactionID: d.ID(), Qty: 1, At: f.clock()})
	if err != nil {
		t.Fatal(err)
	}
	f.env.Append(t, commands.StockStream(f.meta.MerchantID, f.branch, "TEA"), f.meta.MerchantID.String(), ev[0])
	f.process() // deadline row for the abandoned reservation
	f.advance(31 * time.Minute)

	var other uuid.UUID
	hs := &hookStore{Store: f.env.Store}
	hs.before = func() {
		if _, err := f.sweeper().Sweep(ctx); err != nil {
			t.Errorf("sweep: %v", err)
		}
		var err error
		other, err = f.sale(map[string]int64{"TEA": 1})
		t.Logf("other sale checkout: %v", err)
	}
	hA := commands.New(hs, &commands.Deps{Now: f.clock, NewID: func() uuid.UUID { return uuid.Must(uuid.NewV7()) }, Codes: commands.NewCodes(f.env.Pool)})
	_, _, err = hA.Checkout(ctx, f.meta, d.ID())
	switch {
	case err == nil:
		f.process()
		f.pay(d.ID())
	case errors.Is(err, stock.ErrInsufficientStock):
	default:
		t.Fatalf("checkout: %v", err)
	}
	if other != uuid.Nil {
		f.pay(other)
	}
	f.process()
	l := f.ledger("TEA")
	t.Logf("TEA on hand %d reserved %d available %d", l.OnHand(), l.Reserved(), l.Available())
	if l.OnHand() < 0 {
		t.Errorf("one unit received, two sold (on hand %d) without negative stock allowed", l.OnHand())
	}
}
