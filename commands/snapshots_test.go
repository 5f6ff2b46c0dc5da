package commands_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/commands"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/projections/projtest"
)

// sale is a transaction written through handlers that trust their
// snapshots, as the server's do, beside another process's handlers.
type sale struct {
	t     *testing.T
	env   *projtest.Env
	deps  *commands.Deps
	h     *commands.Handlers // this process, on the pool
	other *commands.Handlers // another process: snapshots and store of its own
	meta  commands.Meta
	id    uuid.UUID
}

func newSale(t *testing.T) *sale {
	t.Helper()
	env := projtest.New(t)
	newDeps := func() *commands.Deps {
		return &commands.Deps{
			Now:            func() time.Time { return time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC) },
			NewID:          func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
			Codes:          commands.NewCodes(env.Pool),
			Snapshots:      commands.NewSnapshots(0),
			TrustSnapshots: true,
		}
	}
	s := &sale{t: t, env: env, deps: newDeps(), meta: commands.Meta{MerchantID: projtest.NewID(t), Actor: "cashier-1", Role: "CASHIER"}}
	s.h = commands.New(env.Store, s.deps)
	s.other = commands.New(pgstore.New(env.Pool), newDeps()) // its own heads too
	d, _, err := s.h.OpenTransaction(context.Background(), s.meta, commands.OpenTransaction{BranchID: projtest.NewID(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.id = d.ID()
	return s
}

// add adds one unit of sku through h.
func (s *sale) add(h *commands.Handlers, sku string) (*transaction.Transaction, commands.Result, error) {
	return h.AddItem(context.Background(), s.meta, s.id, transaction.AddItem{SKU: sku, Name: sku, Qty: 1, UnitPrice: 1000})
}

// inTx runs fn with this process's handlers bound to a new transaction,
// as the API's idempotent requests do; commit says whether to commit it
// (and tell the view), or roll it back.
func (s *sale) inTx(commit bool, fn func(h *commands.Handlers) error) error {
	s.t.Helper()
	ctx := context.Background()
	tx, err := s.env.Pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	view := s.env.Store.InTx(tx)
	reg, err := commands.Registry()
	if err != nil {
		s.t.Fatal(err)
	}
	// Wrapped as the server wraps it: AfterCommit must see through.
	if err := fn(commands.New(eventstore.Upcasting{Store: view, Registry: reg}, s.deps)); err != nil || !commit {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		s.t.Fatal(err)
	}
	view.Committed()
	return nil
}

// skus are the lines' SKUs, in order.
func skus(t *transaction.Transaction) []string {
	var out []string
	for _, l := range t.Lines() {
		out = append(out, l.SKU)
	}
	return out
}

// stored is the transaction as the store has it.
func (s *sale) stored() []string {
	s.t.Helper()
	t, _, err := s.h.Transaction(context.Background(), s.meta, s.id)
	if err != nil {
		s.t.Fatal(err)
	}
	return skus(t)
}

// A command in a transaction that rolls back must not leave its state in
// memory: once another process takes the version it had, a command
// trusting that state would append onto a sale that never was.
func TestTransactionSnapshotsHoldOnlyCommittedEvents(t *testing.T) {
	s := newSale(t)
	if _, _, err := s.add(s.h, "A"); err != nil {
		t.Fatal(err)
	}
	if err := s.inTx(false, func(h *commands.Handlers) error {
		_, _, err := s.add(h, "ROLLED-BACK")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.add(s.other, "B"); err != nil { // takes the rolled-back version
		t.Fatal(err)
	}
	got, res, err := s.add(s.h, "C")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A", "B", "C"}
	if !slices.Equal(skus(got), want) || !slices.Equal(s.stored(), want) || res.Version != 4 {
		t.Fatalf("decided on %v at version %d, stored %v; want %v at 4", skus(got), res.Version, s.stored(), want)
	}
}

// Committed commands in transactions chain on in memory, and a snapshot
// another process has overtaken costs one retry in a new transaction: the
// stale one fails as a conflict (not as an aborted transaction's error)
// and the next decides on what the store holds.
func TestTransactionSnapshotsAcrossRequestTransactions(t *testing.T) {
	s := newSale(t)
	for _, sku := range []string{"A", "B"} {
		if err := s.inTx(true, func(h *commands.Handlers) error {
			_, _, err := s.add(h, sku)
			return err
		}); err != nil {
			t.Fatalf("add %s in a transaction: %v", sku, err)
		}
	}
	if _, _, err := s.add(s.other, "C"); err != nil {
		t.Fatal(err)
	}
	err := s.inTx(true, func(h *commands.Handlers) error {
		_, _, err := s.add(h, "D")
		return err
	})
	if !errors.Is(err, eventstore.ErrStaleTransaction) {
		t.Fatalf("add on an overtaken snapshot: %v, want %v", err, eventstore.ErrStaleTransaction)
	}
	var got *transaction.Transaction
	if err := s.inTx(true, func(h *commands.Handlers) error {
		var err error
		got, _, err = s.add(h, "D")
		return err
	}); err != nil {
		t.Fatalf("retry in a new transaction: %v", err)
	}
	want := []string{"A", "B", "C", "D"}
	if !slices.Equal(skus(got), want) || !slices.Equal(s.stored(), want) {
		t.Fatalf("decided on %v, stored %v; want %v", skus(got), s.stored(), want)
	}
}
