package projections_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/projections"
	"pos/projections/projtest"
)

// TestBatchesApplyAsOneEventAtATime feeds one interleaved history of several
// merchants (sales, settings changes between sales, stock ledgers) to a
// Runner with a single partition, so every transaction holds many merchant
// segments: once in batches of every size, and once an event at a time. The
// read models and bookkeeping must come out identical; the merchant whose
// time zone changes between two of its sales paid at the same instant must
// have them on two business days.
func TestBatchesApplyAsOneEventAtATime(t *testing.T) {
	env := projtest.New(t)
	rng := rand.New(rand.NewPCG(7, 11))
	at := time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC) // 09:00 in Jakarta, the 9th at 19:00 in Los Angeles

	// Every merchant's history is a list of steps; the steps of all merchants
	// are interleaved at random, as live traffic would append them.
	var steps [][]func()
	var zoneMerchant uuid.UUID
	for m := range 5 {
		merchant, branch := projtest.NewID(t), projtest.NewID(t)
		if m == 0 {
			zoneMerchant = merchant
		}
		var s []func()
		s = append(s, func() { env.ChangeSettings(t, merchant, "Asia/Jakarta", at) })
		for k := range 4 {
			var sale *projtest.Sale
			var line uuid.UUID
			s = append(s,
				func() { sale = env.OpenSale(t, merchant, branch, fmt.Sprintf("%03d-%03d", m, k), at) },
				func() { line = sale.AddItem("TEA", 3, 15_000, 1100, at) },
				func() { sale.AddItem("CAKE", 1, 27_500, 1100, at) },
				func() { sale.Checkout(at) },
				func() { sale.PayDue(at) },
			)
			switch k {
			case 1:
				s = append(s, func() { sale.RefundLine(line, 1, at.Add(time.Hour)) })
			case 2:
				s = append(s, func() { sale.Void(at.Add(time.Hour)) })
			default:
				s = append(s, func() { sale.Complete(at) })
			}
			if m == 0 && k == 1 {
				s = append(s, func() { env.ChangeSettings(t, merchant, "America/Los_Angeles", at) })
			}
		}
		l := env.OpenLedger(t, merchant, branch, "TEA")
		s = append(s, func() { l.Receive(10, 5_000, at) })
		for k := range 3 {
			txID := projtest.NewID(t)
			s = append(s, func() { l.Reserve(txID, 2, at) })
			if k == 1 {
				s = append(s, func() { l.Release(txID, at) })
			} else {
				s = append(s, func() { l.Sell(txID, 2, at) })
			}
		}
		steps = append(steps, s)
	}
	for len(steps) > 0 {
		i := rng.IntN(len(steps))
		steps[i][0]()
		if steps[i] = steps[i][1:]; len(steps[i]) == 0 {
			steps = append(steps[:i], steps[i+1:]...)
		}
	}
	events := feed(t, env)
	c := admin(t, env.URL)

	newOne := func(batch int) *projections.Runner {
		r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{Partitions: 1, BatchSize: batch}, projections.All()...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// One event at a time.
	one := newOne(1)
	for _, e := range events {
		handle(t, one, e)
	}
	want := snapshot(t, env.URL)

	var days []string
	rows, err := c.Query(context.Background(), `SELECT business_day::text FROM rm_daily_sales WHERE merchant_id = $1 AND count > 0 ORDER BY 1`, zoneMerchant)
	if err != nil {
		t.Fatal(err)
	}
	if days, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(days) != 2 || days[0] != "2025-03-09" || days[1] != "2025-03-10" {
		t.Fatalf("sales of the merchant that changed time zone counted on %v, want 2025-03-09 and 2025-03-10", days)
	}

	for _, batch := range []int{len(events), 7, 50} {
		projtest.ResetReadModels(t, c)
		r := newOne(batch)
		if err := r.Handle(context.Background(), events); err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		if got := snapshot(t, env.URL); got != want {
			t.Errorf("batches of %d give other read models than one event at a time:\n got %s\nwant %s", batch, got, want)
		}
	}
}
