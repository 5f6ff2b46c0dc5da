package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/rebuild"
)

// `pos rebuild all` rebuilds the read models from the store, showing
// progress, and swaps them in; a name that is no projection is refused.
func TestRebuildCommand(t *testing.T) {
	pe := projtest.New(t)
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	s := pe.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", at)
	s.AddItem("TEA", 2, 1500, 1100, at)
	s.Checkout(at)
	s.PayDue(at)
	s.Complete(at)
	ctx := context.Background()
	vars := env(map[string]string{"DATABASE_URL": pe.URL, "POS_CACHE": "off"})

	var out, errOut bytes.Buffer
	err := run(ctx, []string{"rebuild", "journal"}, vars, &out, &errOut)
	if !errors.Is(err, rebuild.ErrUnknown) {
		t.Fatalf("rebuild journal: %v, want ErrUnknown", err)
	}
	if err := run(ctx, []string{"rebuild"}, vars, &out, &errOut); err == nil || !strings.Contains(errOut.String(), "usage: pos rebuild") {
		t.Fatalf("rebuild without a name: %v\n%s", err, errOut.String())
	}

	// Nothing projected yet: the rebuild builds the read models whole.
	out.Reset()
	errOut.Reset()
	if err := run(ctx, []string{"rebuild", "all"}, vars, &out, &errOut); err != nil {
		t.Fatalf("rebuild all: %v\n%s", err, errOut.String())
	}
	total, err := pe.Store.CountAfter(ctx, eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("rebuilt merchant_settings, transactions, daily_sales, stock from %d events", total)) {
		t.Errorf("rebuild printed %q", out.String())
	}
	if !strings.Contains(errOut.String(), "rebuilding merchant_settings, transactions, daily_sales, stock") || !strings.Contains(errOut.String(), "events") {
		t.Errorf("no progress shown: %q", errOut.String())
	}
	c, err := pgx.Connect(ctx, pe.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var status string
	var paid int64
	if err := c.QueryRow(ctx, `SELECT status, paid FROM rm_transactions WHERE transaction_id = $1`, s.ID).Scan(&status, &paid); err != nil || status != "completed" || paid == 0 {
		t.Fatalf("rebuilt sale: %q paid %d, %v", status, paid, err)
	}
	// The live runner goes on from the rebuilt bookkeeping: nothing is
	// applied twice.
	runner, err := projections.NewRunner(pe.Pool, pe.Store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runner.Catchup(ctx, eventstore.Start); err != nil {
		t.Fatalf("live runner after the rebuild: %v", err)
	}
}
