package processes_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/commands"
	"pos/domain"
	"pos/domain/money"
	"pos/domain/stock"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/processes"
	"pos/projections"
	"pos/projections/projtest"
)

// fixture runs real commands against a fresh PostgreSQL event store and the
// stock process manager behind its own runner, on a clock the test moves.
type fixture struct {
	t      *testing.T
	env    *projtest.Env
	h      *commands.Handlers
	pm     *processes.Stock
	runner *projections.Runner
	meta   commands.Meta
	branch uuid.UUID

	mu  sync.Mutex
	now time.Time
	// reached is how far process has taken the runner along the feed.
	reached eventstore.Position
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := projtest.New(t)
	f := &fixture{t: t, env: env, branch: projtest.NewID(t), now: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	f.h = commands.New(env.Store, &commands.Deps{
		Now:       f.clock,
		NewID:     func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes:     commands.NewCodes(env.Pool),
		Snapshots: commands.NewSnapshots(0),
		Locks:     &commands.StreamLocks{},
		// As in production: the store is a pool's, never a transaction's.
		TrustSnapshots: true,
	})
	active, err := processes.Activate(context.Background(), env.Pool, processes.Name)
	if err != nil {
		t.Fatal(err)
	}
	f.pm = &processes.Stock{Handlers: f.h, Timeout: 30 * time.Minute, ActiveFrom: active, Now: f.clock}
	r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{MaxHandledPerRun: 1}, f.pm)
	if err != nil {
		t.Fatal(err)
	}
	f.runner = r
	f.meta = commands.Meta{MerchantID: projtest.NewID(t), Actor: "manager-1", Role: "MANAGER"}
	return f
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func (f *fixture) receive(sku string, qty int64, cost money.Amount) {
	f.t.Helper()
	if _, _, err := f.h.ReceiveStock(context.Background(), f.meta, commands.ReceiveStock{BranchID: f.branch, SKU: sku, Qty: qty, UnitCost: cost}); err != nil {
		f.t.Fatalf("receive %s: %v", sku, err)
	}
}

// sale opens a sale with one line per SKU and quantity, and checks it out.
func (f *fixture) sale(lines map[string]int64) (uuid.UUID, error) {
	f.t.Helper()
	ctx := context.Background()
	t, _, err := f.h.OpenTransaction(ctx, f.meta, commands.OpenTransaction{BranchID: f.branch})
	if err != nil {
		f.t.Fatalf("open: %v", err)
	}
	for sku, qty := range lines {
		if _, _, err := f.h.AddItem(ctx, f.meta, t.ID(), transaction.AddItem{SKU: sku, Name: sku, Qty: qty, UnitPrice: 1000}); err != nil {
			f.t.Fatalf("add item: %v", err)
		}
	}
	_, _, err = f.h.Checkout(ctx, f.meta, t.ID())
	return t.ID(), err
}

func (f *fixture) pay(id uuid.UUID) {
	f.t.Helper()
	t, _, err := f.h.Transaction(context.Background(), f.meta, id)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, _, err := f.h.AddPayment(context.Background(), f.meta, id, transaction.AddPayment{Method: transaction.MethodCash, Amount: t.Due()}); err != nil {
		f.t.Fatalf("pay: %v", err)
	}
}

// process runs the process manager over everything in the store.
func (f *fixture) process() {
	f.t.Helper()
	ctx := context.Background()
	if err := f.env.Store.Settle(ctx); err != nil {
		f.t.Fatal(err)
	}
	reached, err := f.runner.Catchup(ctx, f.reached)
	if err != nil {
		f.t.Fatalf("process: %v", err)
	}
	f.reached = reached
}

func (f *fixture) ledger(sku string) *stock.Ledger {
	f.t.Helper()
	l, _, err := f.h.Ledger(context.Background(), f.meta, f.branch, sku)
	if err != nil {
		f.t.Fatal(err)
	}
	return l
}

func (f *fixture) want(sku string, onHand, reserved int64) {
	f.t.Helper()
	l := f.ledger(sku)
	if l.OnHand() != onHand || l.Reserved() != reserved {
		f.t.Errorf("%s: on hand %d reserved %d, want %d and %d", sku, l.OnHand(), l.Reserved(), onHand, reserved)
	}
}

func (f *fixture) status(id uuid.UUID) transaction.Status {
	f.t.Helper()
	t, _, err := f.h.Transaction(context.Background(), f.meta, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return t.Status()
}

func (f *fixture) sweeper() *processes.Sweeper {
	return &processes.Sweeper{Pool: f.env.Pool, Handlers: f.h, Now: f.clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestPaymentSellsTheReservedUnits(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100)
	f.receive("CAKE", 4, 250)
	id, err := f.sale(map[string]int64{"TEA": 3, "CAKE": 4})
	if err != nil {
		t.Fatal(err)
	}
	f.want("TEA", 10, 3)
	f.want("CAKE", 4, 4)
	f.pay(id)
	f.process()
	f.want("TEA", 7, 0)
	f.want("CAKE", 0, 0)
	r, _ := f.ledger("CAKE").Reservation(id)
	if r.Sold != 4 || r.SoldCost != 250 {
		t.Errorf("CAKE sale record %+v, want 4 sold at 250", r)
	}
}

func TestCheckoutShortageReservesNothing(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100)
	f.receive("CAKE", 1, 250)
	_, err := f.sale(map[string]int64{"TEA": 3, "CAKE": 2, "NEVER": 1})
	var short *commands.ShortageError
	if !errors.As(err, &short) || !errors.Is(err, domain.ErrInsufficientStock) {
		t.Fatalf("checkout: %v, want a shortage", err)
	}
	if got := short.SKUs(); len(got) != 2 || got[0] != "CAKE" || got[1] != "NEVER" {
		t.Errorf("short SKUs %v, want [CAKE NEVER]", got)
	}
	f.want("TEA", 10, 0)
	f.want("CAKE", 1, 0)
	if v := f.ledger("TEA").Version(); v != 1 {
		t.Errorf("TEA ledger at version %d: a refused checkout wrote to it", v)
	}
}

func TestVoidReleasesOrReturns(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100)
	pending, err := f.sale(map[string]int64{"TEA": 2})
	if err != nil {
		t.Fatal(err)
	}
	paid, err := f.sale(map[string]int64{"TEA": 3})
	if err != nil {
		t.Fatal(err)
	}
	f.pay(paid)
	f.process()
	f.want("TEA", 7, 2)

	ctx := context.Background()
	for _, id := range []uuid.UUID{pending, paid} {
		if _, _, err := f.h.VoidTransaction(ctx, f.meta, id, transaction.Void{Reason: "customer left"}); err != nil {
			t.Fatalf("void: %v", err)
		}
	}
	f.process()
	f.want("TEA", 10, 0)
}

// A void's reason may be as long as a ledger's reason may be: the release
// the process manager derives from it must still fit, or the units of a
// paid sale would never come back.
func TestVoidWithTheLongestReasonReturnsUnits(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100)
	id, err := f.sale(map[string]int64{"TEA": 3})
	if err != nil {
		t.Fatal(err)
	}
	f.pay(id)
	f.process()
	f.want("TEA", 7, 0)
	reason := strings.Repeat("é", transaction.MaxReasonLen)
	if _, _, err := f.h.VoidTransaction(context.Background(), f.meta, id, transaction.Void{Reason: reason}); err != nil {
		t.Fatalf("void: %v", err)
	}
	f.process()
	f.want("TEA", 10, 0)
}

func TestRefundByLinesReturnsUnits(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100)
	id, err := f.sale(map[string]int64{"TEA": 5})
	if err != nil {
		t.Fatal(err)
	}
	f.pay(id)
	f.process()
	f.want("TEA", 5, 0)
	t0, _, _ := f.h.Transaction(context.Background(), f.meta, id)
	line := t0.Lines()[0].LineID
	ctx := context.Background()
	if _, _, err := f.h.IssueRefund(ctx, f.meta, id, transaction.Refund{Reason: "broken", Lines: []transaction.RefundLine{{LineID: line, Qty: 2}}}); err != nil {
		t.Fatalf("refund: %v", err)
	}
	// A refund by amount gives money back, not units.
	if _, _, err := f.h.IssueRefund(ctx, f.meta, id, transaction.Refund{Reason: "goodwill", Amount: 100}); err != nil {
		t.Fatalf("refund: %v", err)
	}
	f.process()
	f.want("TEA", 7, 0)
}

// A refund id is the client's, unique within its sale only: two sales
// refunded under one id each get their units back. Before, the ledger
// refused the second as an id used for another movement, and the process
// manager retried it forever, holding its partition.
func TestOneRefundIDInTwoSalesReturnsUnitsToEach(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100)
	ctx := context.Background()
	refund := uuid.New()
	var sales []uuid.UUID
	for _, qty := range []int64{2, 3} {
		id, err := f.sale(map[string]int64{"TEA": qty})
		if err != nil {
			t.Fatal(err)
		}
		f.pay(id)
		sales = append(sales, id)
	}
	f.process()
	f.want("TEA", 5, 0)
	for _, id := range sales {
		t0, _, _ := f.h.Transaction(ctx, f.meta, id)
		lines := []transaction.RefundLine{{LineID: t0.Lines()[0].LineID, Qty: 1}}
		if _, _, err := f.h.IssueRefund(ctx, f.meta, id, transaction.Refund{RefundID: refund, Reason: "broken", Lines: lines}); err != nil {
			t.Fatalf("refund: %v", err)
		}
	}
	f.process()
	f.want("TEA", 7, 0)
}

func TestUnpaidSaleTimesOut(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 5, 100)
	id, err := f.sale(map[string]int64{"TEA": 5})
	if err != nil {
		t.Fatal(err)
	}
	f.process()
	ctx := context.Background()
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before the deadline: %d, %v", n, err)
	}
	if _, err := f.sale(map[string]int64{"TEA": 1}); !errors.Is(err, domain.ErrInsufficientStock) {
		t.Fatalf("second sale while the first holds every unit: %v", err)
	}
	f.advance(31 * time.Minute)
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the deadline: %d, %v", n, err)
	}
	if s := f.status(id); s != transaction.StatusVoided {
		t.Fatalf("status %s after the timeout, want voided", s)
	}
	f.want("TEA", 5, 0)
	f.process() // the void's own release finds nothing left to do
	f.want("TEA", 5, 0)
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep again: %d, %v", n, err)
	}
}

// A sale rung up offline hours ago and synced now gets the whole timeout
// from now: its payment, synced right after, must not find it voided.
func TestOfflineCheckoutGetsTheWholeTimeout(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 5, 100)
	ctx := context.Background()
	offline := f.meta
	offline.At = f.clock().Add(-3 * time.Hour)
	sale, _, err := f.h.OpenTransaction(ctx, offline, commands.OpenTransaction{BranchID: f.branch})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.h.AddItem(ctx, offline, sale.ID(), transaction.AddItem{SKU: "TEA", Name: "TEA", Qty: 2, UnitPrice: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.h.Checkout(ctx, offline, sale.ID()); err != nil {
		t.Fatal(err)
	}
	// The reservation alone (its CheckedOut not applied yet) arms the
	// deadline too: it must count from now as well.
	ledger, err := f.env.Store.ReadStream(ctx, commands.StockStream(f.meta.MerchantID, f.branch, "TEA"), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.runner.Handle(ctx, ledger[len(ledger)-1:]); err != nil {
		t.Fatal(err)
	}
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep with only the offline reservation applied: %d, %v", n, err)
	}
	f.process()
	f.advance(time.Minute)
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep a minute after the sync: %d, %v", n, err)
	}
	if s := f.status(sale.ID()); s != transaction.StatusPendingPayment {
		t.Fatalf("status %s a minute after an offline checkout was synced, want pending_payment", s)
	}
	f.advance(30 * time.Minute)
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the timeout: %d, %v", n, err)
	}
}

// payFirst is a store whose first append to the sale pays it first through
// other handlers (another process): the sweeper's void then meets a sale
// that was paid after the sweeper loaded it.
type payFirst struct {
	eventstore.Store
	sale string
	pay  func()
	once sync.Once
}

func (p *payFirst) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if stream == p.sale {
		p.once.Do(p.pay)
	}
	return p.Store.Append(ctx, stream, expected, events...)
}

// A payment landing while the sweeper voids the sale wins: the sale stays
// paid, its units sold, and nobody voided it.
func TestPaymentRacingTheTimeoutWins(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 5, 100)
	id, err := f.sale(map[string]int64{"TEA": 2})
	if err != nil {
		t.Fatal(err)
	}
	f.process()
	f.advance(31 * time.Minute)
	sw := f.sweeper()
	sw.Handlers = commands.New(&payFirst{Store: f.env.Store, sale: commands.TransactionStream(f.meta.MerchantID, id), pay: func() { f.pay(id) }},
		&commands.Deps{Now: f.clock, NewID: func() uuid.UUID { return uuid.Must(uuid.NewV7()) }, Snapshots: commands.NewSnapshots(0), TrustSnapshots: true})
	if n, err := sw.Sweep(context.Background()); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if s := f.status(id); s != transaction.StatusPaid {
		t.Fatalf("status %s after a payment raced the timeout, want paid", s)
	}
	f.process()
	f.want("TEA", 3, 0)
}

// A sale past its deadline that holds money (a card awaiting its gateway)
// is not voided: a confirmation must still find it. It keeps its units and
// is looked at again later.
func TestSaleHoldingAPaymentOutlivesTheTimeout(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 5, 100)
	id, err := f.sale(map[string]int64{"TEA": 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	card := uuid.New()
	if _, _, err := f.h.AddPayment(ctx, f.meta, id, transaction.AddPayment{PaymentID: card, Method: transaction.MethodCard, Amount: 2000}); err != nil {
		t.Fatal(err)
	}
	f.process()
	f.advance(31 * time.Minute)
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if s := f.status(id); s != transaction.StatusPendingPayment {
		t.Fatalf("status %s, want pending_payment", s)
	}
	f.want("TEA", 5, 2)
	if _, _, err := f.h.ConfirmPayment(ctx, f.meta, id, transaction.ConfirmPayment{PaymentID: card, GatewayRef: "gw-1"}); err != nil {
		t.Fatalf("confirm after the deadline: %v", err)
	}
	f.advance(6 * time.Minute) // past the recheck
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the recheck: %d, %v", n, err)
	}
	f.process()
	f.want("TEA", 3, 0)
}

// A checkout that reserved and then died (here: the reservation is made
// directly, and CheckedOut never appended) leaves a draft holding units;
// the deadline releases them.
func TestAbandonedCheckoutIsReleased(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 5, 100)
	ctx := context.Background()
	draft, _, err := f.h.OpenTransaction(ctx, f.meta, commands.OpenTransaction{BranchID: f.branch})
	if err != nil {
		t.Fatal(err)
	}
	withLine(t, f, draft.ID(), "TEA", 4)
	reserved, err := f.ledger("TEA").Reserve(stock.Reserve{TransactionID: draft.ID(), Qty: 4, At: f.clock()})
	if err != nil {
		t.Fatal(err)
	}
	f.env.Append(t, commands.StockStream(f.meta.MerchantID, f.branch, "TEA"), f.meta.MerchantID.String(), reserved[0])
	f.want("TEA", 5, 4)
	f.process()
	f.advance(31 * time.Minute)
	if n, err := f.sweeper().Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	f.want("TEA", 5, 0)
	if s := f.status(draft.ID()); s != transaction.StatusDraft {
		t.Errorf("status %s, want the draft left as it was", s)
	}
}

func withLine(t *testing.T, f *fixture, id uuid.UUID, sku string, qty int64) *transaction.Transaction {
	t.Helper()
	tx, _, err := f.h.AddItem(context.Background(), f.meta, id, transaction.AddItem{SKU: sku, Name: sku, Qty: qty, UnitPrice: 10})
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// A transfer whose process died between its two halves: only the source's
// StockTransferredOut is stored. The process manager completes it.
func TestInterruptedTransferCompletes(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 120)
	other := projtest.NewID(t)
	src := f.ledger("TEA")
	events, err := src.TransferOut(stock.TransferOut{TransferID: uuid.New(), ToBranchID: other, Qty: 4, By: "manager-1", At: f.clock()})
	if err != nil {
		t.Fatal(err)
	}
	f.env.Append(t, commands.StockStream(f.meta.MerchantID, f.branch, "TEA"), f.meta.MerchantID.String(), events[0])
	f.want("TEA", 6, 0)
	f.process()
	target, _, err := f.h.Ledger(context.Background(), f.meta, other, "TEA")
	if err != nil {
		t.Fatal(err)
	}
	if target.OnHand() != 4 || target.AvgCost() != 120 {
		t.Errorf("target on hand %d at %d, want 4 at 120", target.OnHand(), target.AvgCost())
	}
}

// Every input of the process manager delivered twice more, past the
// runner's own deduplication, changes no ledger.
func TestRedeliveryChangesNothing(t *testing.T) {
	f := newFixture(t)
	f.receive("TEA", 10, 100)
	ctx := context.Background()
	a, _ := f.sale(map[string]int64{"TEA": 2})
	b, _ := f.sale(map[string]int64{"TEA": 3})
	c, _ := f.sale(map[string]int64{"TEA": 1})
	f.pay(a)
	f.pay(b)
	if _, _, err := f.h.VoidTransaction(ctx, f.meta, b, transaction.Void{Reason: "mistake"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.h.VoidTransaction(ctx, f.meta, c, transaction.Void{Reason: "left"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.TransferStock(ctx, f.meta, commands.TransferStock{FromBranchID: f.branch, ToBranchID: projtest.NewID(t), SKU: "TEA", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	f.process()
	before := f.ledger("TEA").Version()
	f.want("TEA", 7, 0)

	if err := f.env.Store.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	feed, err := f.env.Store.ReadAll(ctx, eventstore.Start, eventstore.Filter{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, e := range feed {
			if !f.pm.Handles(e.Type) {
				continue
			}
			tx, err := f.env.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.pm.Apply(ctx, tx, e); err != nil {
				t.Fatalf("redeliver %s: %v", e.Type, err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if after := f.ledger("TEA").Version(); after != before {
		t.Errorf("ledger went from version %d to %d on redelivery", before, after)
	}
	f.want("TEA", 7, 0)
}
