// Package projtest appends real domain events to a fresh PostgreSQL event
// store for the tests of the read side (projections, queries, consume):
// sales are decided by domain/transaction's own commands and stock ledgers'
// moves by domain/stock's (Ledger), and appended as commands.Handlers would
// append them, so the events are exactly the ones the service writes.
package projtest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/domain/money"
	"pos/domain/settings"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/internal/pgtest"
)

// Env is a fresh migrated database with an event store on it.
type Env struct {
	// URL connects as the admin user that created the database.
	URL string
	// Pool works as pos_app (pgstore.Connect), the projectors' role.
	Pool  *pgxpool.Pool
	Store *pgstore.Store
}

// New returns an Env on a database dropped at the end of the test.
func New(t testing.TB) *Env {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool, err := pgstore.ConnectSized(context.Background(), url, 8)
	if err != nil {
		t.Fatalf("projtest: connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return &Env{URL: url, Pool: pool, Store: pgstore.New(pool)}
}

// NewID returns a fresh UUIDv7.
func NewID(t testing.TB) uuid.UUID {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatalf("projtest: uuid: %v", err)
	}
	return id
}

// Append appends domain events (any type with EventType and JSON) to stream
// at its current version and returns them as recorded.
func (env *Env) Append(t testing.TB, stream, merchant string, events ...interface{ EventType() string }) []eventstore.RecordedEvent {
	t.Helper()
	ctx := context.Background()
	if len(events) == 0 {
		return nil
	}
	data := make([]eventstore.EventData, len(events))
	for i, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("projtest: encode %s: %v", e.EventType(), err)
		}
		data[i] = eventstore.EventData{
			ID: NewID(t), Type: e.EventType(), SchemaVersion: 1, Data: b,
			Metadata: eventstore.Metadata{MerchantID: merchant, Actor: "projtest", Role: "MANAGER"},
		}
	}
	res, err := env.Store.Append(ctx, stream, eventstore.Any, data...)
	if err != nil {
		t.Fatalf("projtest: append to %s: %v", stream, err)
	}
	got, err := env.Store.ReadStream(ctx, stream, res.Version-uint64(len(events))+1, len(events))
	if err != nil || len(got) != len(events) {
		t.Fatalf("projtest: read back %s: %d events, %v", stream, len(got), err)
	}
	return got
}

// ChangeSettings appends the merchant's SettingsChanged (currency IDR, the
// given time zone) and returns it as recorded.
func (env *Env) ChangeSettings(t testing.TB, merchant uuid.UUID, timezone string, at time.Time) []eventstore.RecordedEvent {
	t.Helper()
	stream := eventstore.StreamName("settings", merchant.String(), merchant.String())
	cur, err := env.Store.ReadStream(context.Background(), stream, 1, 0)
	if err != nil {
		t.Fatalf("projtest: read settings: %v", err)
	}
	history := make([]settings.Event, len(cur))
	for i, re := range cur {
		if history[i], err = settings.Decode(re.Type, re.Data); err != nil {
			t.Fatalf("projtest: decode settings: %v", err)
		}
	}
	s, err := settings.Load(history)
	if err != nil {
		t.Fatalf("projtest: load settings: %v", err)
	}
	events, err := s.Change(settings.Change{Currency: "IDR", Timezone: timezone, By: "admin", At: at})
	if err != nil {
		t.Fatalf("projtest: change settings: %v", err)
	}
	out := make([]interface{ EventType() string }, len(events))
	for i, e := range events {
		out[i] = e
	}
	return env.Append(t, stream, merchant.String(), out...)
}

// Sale is one transaction being rung up: each method decides a command on
// the aggregate, appends the events and returns them as recorded (also
// collected in Events). A refused command fails the test.
type Sale struct {
	env      *Env
	t        testing.TB
	agg      *transaction.Transaction
	Merchant uuid.UUID
	Branch   uuid.UUID
	ID       uuid.UUID
	Stream   string
	// Events are every event of the sale so far, as recorded.
	Events []eventstore.RecordedEvent
}

// OpenSale opens a draft in IDR with tax-exclusive prices.
func (env *Env) OpenSale(t testing.TB, merchant, branch uuid.UUID, code string, at time.Time) *Sale {
	t.Helper()
	s := &Sale{env: env, t: t, agg: &transaction.Transaction{}, Merchant: merchant, Branch: branch, ID: NewID(t)}
	s.Stream = eventstore.StreamName("transaction", merchant.String(), s.ID.String())
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.Open(transaction.Open{TransactionID: s.ID, MerchantID: merchant, BranchID: branch, Code: code, Currency: "IDR", By: "cashier", At: at})
	})
	return s
}

func (s *Sale) do(decide func(*transaction.Transaction) ([]transaction.Event, error)) []eventstore.RecordedEvent {
	s.t.Helper()
	events, err := decide(s.agg)
	if err != nil {
		s.t.Fatalf("projtest: sale %s: %v", s.ID, err)
	}
	for _, e := range events {
		if err := s.agg.Apply(e); err != nil {
			s.t.Fatalf("projtest: sale %s: apply: %v", s.ID, err)
		}
	}
	out := make([]interface{ EventType() string }, len(events))
	for i, e := range events {
		out[i] = e
	}
	recorded := s.env.Append(s.t, s.Stream, s.Merchant.String(), out...)
	s.Events = append(s.Events, recorded...)
	return recorded
}

// Aggregate returns the sale's aggregate as the command side sees it.
func (s *Sale) Aggregate() *transaction.Transaction { return s.agg }

// AddItem adds a line and returns its id.
func (s *Sale) AddItem(sku string, qty int64, price money.Amount, taxBps int64, at time.Time) uuid.UUID {
	s.t.Helper()
	id := NewID(s.t)
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.AddItem(transaction.AddItem{LineID: id, SKU: sku, Name: "item " + sku, Qty: qty, UnitPrice: price, TaxRateBps: taxBps, At: at})
	})
	return id
}

// RemoveItem removes a line.
func (s *Sale) RemoveItem(line uuid.UUID, at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.RemoveItem(transaction.RemoveItem{LineID: line, At: at})
	})
}

// DiscountPercent applies a percent discount.
func (s *Sale) DiscountPercent(bps int64, at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.ApplyDiscount(transaction.ApplyDiscount{DiscountID: NewID(s.t), Kind: transaction.DiscountPercent, Bps: bps, Reason: "promo", At: at})
	})
}

// Checkout freezes the totals.
func (s *Sale) Checkout(at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.Checkout(transaction.Checkout{At: at})
	})
}

// Pay adds a payment and returns its id.
func (s *Sale) Pay(method transaction.Method, amount money.Amount, at time.Time) uuid.UUID {
	s.t.Helper()
	id := NewID(s.t)
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.AddPayment(transaction.AddPayment{PaymentID: id, Method: method, Amount: amount, At: at})
	})
	return id
}

// PayDue pays what is due in cash.
func (s *Sale) PayDue(at time.Time) uuid.UUID {
	s.t.Helper()
	return s.Pay(transaction.MethodCash, s.agg.Due(), at)
}

// Confirm confirms a pending payment.
func (s *Sale) Confirm(payment uuid.UUID, at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.ConfirmPayment(transaction.ConfirmPayment{PaymentID: payment, GatewayRef: "gw-" + payment.String()[:8], At: at})
	})
}

// Decline declines a pending payment.
func (s *Sale) Decline(payment uuid.UUID, at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.DeclinePayment(transaction.DeclinePayment{PaymentID: payment, Reason: "insufficient funds", At: at})
	})
}

// Complete closes a paid sale.
func (s *Sale) Complete(at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.Complete(transaction.Complete{At: at})
	})
}

// Void voids the sale.
func (s *Sale) Void(at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.Void(transaction.Void{Reason: "mistake", At: at})
	})
}

// RefundAmount refunds a bare amount.
func (s *Sale) RefundAmount(amount money.Amount, at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.Refund(transaction.Refund{RefundID: NewID(s.t), Reason: "returned", Amount: amount, At: at})
	})
}

// RefundLine refunds qty units of a line.
func (s *Sale) RefundLine(line uuid.UUID, qty int64, at time.Time) {
	s.t.Helper()
	s.do(func(x *transaction.Transaction) ([]transaction.Event, error) {
		return x.Refund(transaction.Refund{RefundID: NewID(s.t), Reason: "returned", Lines: []transaction.RefundLine{{LineID: line, Qty: qty}}, At: at})
	})
}

// ReadModelTables lists the read-model tables (rm_*, partitioned ones by
// their parent), in name order, as c sees them.
func ReadModelTables(t testing.TB, c *pgx.Conn) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), `
        SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname LIKE 'rm\_%'
        ORDER BY 1`)
	if err != nil {
		t.Fatalf("projtest: list read models: %v", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) < 5 {
		t.Fatalf("projtest: list read models: %v (%d tables)", err, len(tables))
	}
	return tables
}

// ResetReadModels empties every read model, the projections' bookkeeping
// and the extra tables named, through c (the database's owner).
func ResetReadModels(t testing.TB, c *pgx.Conn, extra ...string) {
	t.Helper()
	tables := append(ReadModelTables(t, c), "projection_streams", "projection_checkpoints")
	q := "TRUNCATE " + strings.Join(append(tables, extra...), ", ")
	if _, err := c.Exec(context.Background(), q); err != nil {
		t.Fatalf("projtest: %s: %v", q, err)
	}
}
