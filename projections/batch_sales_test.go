package projections_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
)

// salesScript is one sale to ring up step by step, so that the sales of
// several merchants interleave in the feed as live traffic does.
type salesScript struct {
	merchant, branch uuid.UUID
	code             string
	sale             *projtest.Sale
	steps            []func(at time.Time)
}

// salesScripts returns the sales of one merchant: every path through a sale
// that the sales projectors treat apart (paid by card, cash or both, a card
// declined, voided as a draft, pending or after payment, refunded by line and
// by amount, partly and fully, left open).
func salesScripts(t *testing.T, env *projtest.Env, merchant uuid.UUID, branches []uuid.UUID) []*salesScript {
	t.Helper()
	var out []*salesScript
	add := func(build func(sc *salesScript)) {
		sc := &salesScript{merchant: merchant, branch: branches[len(out)%len(branches)], code: fmt.Sprintf("%03d", len(out)+1)}
		sc.steps = append(sc.steps, func(at time.Time) { sc.sale = env.OpenSale(t, sc.merchant, sc.branch, sc.code, at) })
		build(sc)
		out = append(out, sc)
	}
	for range 2 {
		// A card declined, the rest in cash, completed.
		add(func(sc *salesScript) {
			var card uuid.UUID
			sc.steps = append(sc.steps,
				func(at time.Time) { sc.sale.AddItem("TEA", 3, 15_333, 1100, at) },
				func(at time.Time) { sc.sale.AddItem("CAKE", 1, 27_501, 1250, at) },
				func(at time.Time) { sc.sale.DiscountPercent(1_000, at) },
				func(at time.Time) { sc.sale.Checkout(at) },
				func(at time.Time) { card = sc.sale.Pay(transaction.MethodCard, 10_000, at) },
				func(at time.Time) { sc.sale.Decline(card, at) },
				func(at time.Time) { sc.sale.Pay(transaction.MethodCash, sc.sale.Aggregate().Due()+7_000, at) }, // change given
				func(at time.Time) { sc.sale.Complete(at) })
		})
		// Card and cash, completed, refunded by line then by amount.
		add(func(sc *salesScript) {
			var tea, card uuid.UUID
			sc.steps = append(sc.steps,
				func(at time.Time) { tea = sc.sale.AddItem("TEA", 4, 10_000, 1_000, at) },
				func(at time.Time) { sc.sale.AddItem("WATER", 2, 3_001, 0, at) },
				func(at time.Time) { sc.sale.Checkout(at) },
				func(at time.Time) { card = sc.sale.Pay(transaction.MethodCard, 30_000, at) },
				func(at time.Time) { sc.sale.Confirm(card, at) },
				func(at time.Time) { sc.sale.PayDue(at) },
				func(at time.Time) { sc.sale.Complete(at) },
				func(at time.Time) { sc.sale.RefundLine(tea, 1, at) },
				func(at time.Time) { sc.sale.RefundAmount(5_000, at) })
		})
		// Paid by QRIS, voided after payment: taken out of the day it was
		// counted on, whatever day the void.
		add(func(sc *salesScript) {
			var qris uuid.UUID
			sc.steps = append(sc.steps,
				func(at time.Time) { sc.sale.AddItem("CAKE", 2, 50_000, 1_000, at) },
				func(at time.Time) { sc.sale.Checkout(at) },
				func(at time.Time) { qris = sc.sale.Pay(transaction.MethodQRIS, sc.sale.Aggregate().Due(), at) },
				func(at time.Time) { sc.sale.Confirm(qris, at) },
				func(at time.Time) { sc.sale.Void(at) })
		})
		// Paid in cash, voided after payment.
		add(func(sc *salesScript) {
			sc.steps = append(sc.steps,
				func(at time.Time) { sc.sale.AddItem("SND", 1, 55_000, 1_100, at) },
				func(at time.Time) { sc.sale.Checkout(at) },
				func(at time.Time) { sc.sale.PayDue(at) },
				func(at time.Time) { sc.sale.Void(at) })
		})
		// Part paid by card, then voided while pending payment: never
		// counted.
		add(func(sc *salesScript) {
			var card uuid.UUID
			sc.steps = append(sc.steps,
				func(at time.Time) { sc.sale.AddItem("COF", 2, 32_000, 1_100, at) },
				func(at time.Time) { sc.sale.Checkout(at) },
				func(at time.Time) { card = sc.sale.Pay(transaction.MethodCard, 20_000, at) },
				func(at time.Time) { sc.sale.Confirm(card, at) },
				func(at time.Time) { sc.sale.Void(at) })
		})
		// A draft with a line removed, voided.
		add(func(sc *salesScript) {
			var water uuid.UUID
			sc.steps = append(sc.steps,
				func(at time.Time) { sc.sale.AddItem("TEA", 1, 15_000, 1_100, at) },
				func(at time.Time) { water = sc.sale.AddItem("WATER", 7, 3_001, 1_100, at) },
				func(at time.Time) { sc.sale.RemoveItem(water, at) },
				func(at time.Time) { sc.sale.Void(at) })
		})
		// A draft left open.
		add(func(sc *salesScript) {
			var cake uuid.UUID
			sc.steps = append(sc.steps,
				func(at time.Time) { cake = sc.sale.AddItem("CAKE", 1, 27_500, 1_100, at) },
				func(at time.Time) { sc.sale.AddItem("TEA", 2, 15_000, 1_100, at) },
				func(at time.Time) { sc.sale.DiscountPercent(500, at) },
				func(at time.Time) { sc.sale.RemoveItem(cake, at) })
		})
		// Paid in cash (not completed), refunded by lines in full.
		add(func(sc *salesScript) {
			var a, b uuid.UUID
			sc.steps = append(sc.steps,
				func(at time.Time) { a = sc.sale.AddItem("BAK", 2, 38_000, 1_100, at) },
				func(at time.Time) { b = sc.sale.AddItem("SNK", 3, 22_000, 1_100, at) },
				func(at time.Time) { sc.sale.DiscountPercent(1_000, at) },
				func(at time.Time) { sc.sale.Checkout(at) },
				func(at time.Time) { sc.sale.Pay(transaction.MethodCash, 500_000, at) },
				func(at time.Time) { sc.sale.RefundLine(a, 2, at) },
				func(at time.Time) { sc.sale.RefundLine(b, 3, at) })
		})
	}
	return out
}

// salesHistory appends, to env, the sales of three merchants interleaved at
// random (one step of a random unfinished sale at a time, some 47 minutes
// apart, so that the sales spread over several business days near their
// midnights), with settings changes (time zones) among them. It returns the
// merchants and their sales.
func salesHistory(t *testing.T, env *projtest.Env, rng *rand.Rand) ([]uuid.UUID, []*projtest.Sale) {
	t.Helper()
	merchants := []uuid.UUID{projtest.NewID(t), projtest.NewID(t), projtest.NewID(t)}
	at := time.Date(2025, 3, 10, 14, 0, 0, 0, time.UTC)
	env.ChangeSettings(t, merchants[1], "UTC", at) // merchants[0] keeps the default zone until later
	env.ChangeSettings(t, merchants[2], "America/New_York", at)
	var scripts []*salesScript
	for _, m := range merchants {
		scripts = append(scripts, salesScripts(t, env, m, []uuid.UUID{projtest.NewID(t), projtest.NewID(t)})...)
	}
	all := slices.Clone(scripts)
	// Settings changes after so many steps.
	changes := map[int]func(at time.Time){
		40:  func(at time.Time) { env.ChangeSettings(t, merchants[0], "UTC", at) },
		90:  func(at time.Time) { env.ChangeSettings(t, merchants[2], "Asia/Tokyo", at) },
		150: func(at time.Time) { env.ChangeSettings(t, merchants[0], "Pacific/Auckland", at) },
		151: func(at time.Time) { env.ChangeSettings(t, merchants[1], "America/Los_Angeles", at) },
	}
	for step := 0; len(scripts) > 0; step++ {
		at = at.Add(47*time.Minute + 1_234_567*time.Nanosecond) // finer than PostgreSQL's microseconds
		if change := changes[step]; change != nil {
			change(at)
		}
		i := rng.IntN(len(scripts))
		sc := scripts[i]
		sc.steps[0](at)
		if sc.steps = sc.steps[1:]; len(sc.steps) == 0 {
			scripts = slices.Delete(scripts, i, i+1)
		}
	}
	sales := make([]*projtest.Sale, len(all))
	for i, sc := range all {
		sales[i] = sc.sale
	}
	return merchants, sales
}

// applySales applies events (the whole feed) to MerchantSettings,
// Transactions and DailySales in env's read models, in one transaction per
// merchant with pos.merchant_id set as the Runner sets it. With chunk 0,
// every event goes through Apply on its own; otherwise through ApplyBatch, a
// merchant's transaction events in batches of at most chunk events (at
// random when chunk < 0), always ended at a settings event (which
// MerchantSettings applies, having no ApplyBatch), as the Runner ends them.
func applySales(t *testing.T, env *projtest.Env, events []eventstore.RecordedEvent, chunk int, rng *rand.Rand) {
	t.Helper()
	ctx := context.Background()
	var merchants []string
	byMerchant := map[string][]eventstore.RecordedEvent{}
	for _, e := range events {
		_, m, _, _ := eventstore.ParseStreamName(e.Stream)
		if byMerchant[m] == nil {
			merchants = append(merchants, m)
		}
		byMerchant[m] = append(byMerchant[m], e)
	}
	settings, sales, daily := projections.MerchantSettings{}, projections.Transactions{}, projections.NewDailySales()
	for _, m := range merchants {
		err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, m); err != nil {
				return err
			}
			var batch []eventstore.RecordedEvent
			flush := func() error {
				for len(batch) > 0 {
					n := len(batch)
					if chunk > 0 {
						n = min(n, chunk)
					} else if chunk < 0 {
						n = 1 + rng.IntN(n)
					}
					if err := sales.ApplyBatch(ctx, tx, batch[:n]); err != nil {
						return fmt.Errorf("Transactions.ApplyBatch: %w", err)
					}
					var handled []eventstore.RecordedEvent
					for _, e := range batch[:n] {
						if daily.Handles(e.Type) {
							handled = append(handled, e)
						}
					}
					if len(handled) > 0 {
						if err := daily.ApplyBatch(ctx, tx, handled); err != nil {
							return fmt.Errorf("DailySales.ApplyBatch: %w", err)
						}
					}
					batch = batch[n:]
				}
				return nil
			}
			for _, e := range byMerchant[m] {
				category, _, _, _ := eventstore.ParseStreamName(e.Stream)
				switch {
				case category == projections.SettingsCategory:
					if err := flush(); err != nil {
						return err
					}
					if err := settings.Apply(ctx, tx, e); err != nil {
						return fmt.Errorf("MerchantSettings.Apply: %w", err)
					}
				case chunk == 0:
					if err := sales.Apply(ctx, tx, e); err != nil {
						return fmt.Errorf("Transactions.Apply: %w", err)
					}
					if daily.Handles(e.Type) {
						if err := daily.Apply(ctx, tx, e); err != nil {
							return fmt.Errorf("DailySales.Apply: %w", err)
						}
					}
				default:
					batch = append(batch, e)
				}
			}
			return flush()
		})
		if err != nil {
			t.Fatalf("merchant %s: %v", m, err)
		}
	}
}

// TestSalesBatchMatchesOneByOne rings up interleaved sales of three
// merchants, with time-zone changes among them, and checks that
// Transactions and DailySales leave exactly the same rows (every column:
// figures, JSON, days, updated_at, versions, positions) when each merchant's
// events go through ApplyBatch, in one call per settings segment or in
// random chunks, as when they go through Apply one at a time; each in a
// fresh database. Within one call a sale is opened, paid, voided or
// refunded; across calls its rows are read back. The one-by-one rows are
// also checked against the aggregates, and the days' sale counts by hand.
func TestSalesBatchMatchesOneByOne(t *testing.T) {
	src := projtest.New(t)
	rng := rand.New(rand.NewPCG(7, 11))
	merchants, sales := salesHistory(t, src, rng)
	events := feed(t, src)
	counts := map[string]int{}
	for _, e := range events {
		counts[e.Type]++
	}
	for _, typ := range append(transaction.EventTypes(), "SettingsChanged") {
		if counts[typ] == 0 && typ != "CheckoutAbandoned" { // projtest cannot abandon a checkout
			t.Fatalf("the history has no %s: %v", typ, counts)
		}
	}

	one := projtest.New(t)
	applySales(t, one, events, 0, nil)
	want := textRows(t, one.URL, salesQueries...)
	var days, facts int
	for _, r := range want {
		days += b2i(strings.HasPrefix(r, "rm_daily_sales "))
		facts += b2i(strings.HasPrefix(r, "rm_daily_sales_facts "))
	}
	if days < 6 || facts != 3*16 {
		t.Fatalf("one by one: %d days and %d facts rows, want several days and %d facts", days, facts, 3*16)
	}

	for _, tt := range []struct {
		name  string
		chunk int
	}{
		{"one call per settings segment", 1_000},
		{"random chunks", -1},
		{"chunks of one", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := projtest.New(t)
			applySales(t, env, events, tt.chunk, rng)
			diffRows(t, tt.name+" against one by one", textRows(t, env.URL, salesQueries...), want)
		})
	}

	// The one-by-one path itself against the aggregates and the days.
	for _, s := range sales {
		checkAgainstAggregate(t, one, s)
	}
	db := admin(t, one.URL)
	for _, m := range merchants {
		var count, refunds int64
		if err := db.QueryRow(context.Background(),
			`SELECT coalesce(sum(count), 0), coalesce(sum(refunds), 0) FROM rm_daily_sales WHERE merchant_id = $1`, m).Scan(&count, &refunds); err != nil {
			t.Fatalf("read rm_daily_sales: %v", err)
		}
		// Per merchant: 2 × (declined+cash, card+cash) counted, 2 × 2 voided
		// after payment (not counted), the refunds 2 × (line + 5,000 + two
		// full lines).
		if count != 6 || refunds == 0 {
			t.Errorf("merchant %s: %d sales counted and %d refunded over its days, want 6 and some", m, count, refunds)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSalesBatchRefusesWhole checks that a batch with an event that cannot
// apply (a payment or sale the read model does not know, a second opening,
// another merchant's event) fails before writing any of its rows, in both
// projectors.
func TestSalesBatchRefusesWhole(t *testing.T) {
	src := projtest.New(t)
	merchant, branch := projtest.NewID(t), projtest.NewID(t)
	s := src.OpenSale(t, merchant, branch, "001", t0)
	s.AddItem("TEA", 2, 15_000, 1_100, t0)
	s.Checkout(t0)
	card := s.Pay(transaction.MethodCard, 10_000, t0)
	s.Confirm(card, t0)
	s.PayDue(t0)
	confirm := s.Events[4]
	other := src.OpenSale(t, projtest.NewID(t), branch, "001", t0)
	if confirm.Type != "PaymentConfirmed" {
		t.Fatalf("event 5 is %s, want PaymentConfirmed", confirm.Type)
	}
	unknown := confirm
	unknown.Data = []byte(`{"payment_id": "` + projtest.NewID(t).String() + `", "gateway_ref": "x", "at": "2025-03-10T02:00:00Z"}`)

	ctx := context.Background()
	env := projtest.New(t)
	for name, batch := range map[string][]eventstore.RecordedEvent{
		"unknown payment":         append(slices.Clone(s.Events[:4]), unknown),
		"opened twice":            append(slices.Clone(s.Events), s.Events[0]),
		"no opening":              s.Events[1:],
		"another merchant's":      append(slices.Clone(s.Events), other.Events[0]),
		"undecodable last":        append(slices.Clone(s.Events), eventstore.RecordedEvent{Stream: s.Stream, Version: 9, Type: "CheckedOut", Data: []byte(`[]`)}),
		"stream without merchant": append(slices.Clone(s.Events), eventstore.RecordedEvent{Stream: "transaction-x", Version: 9, Type: "TransactionPaid", Data: []byte(`{}`)}),
	} {
		for _, p := range []projections.BatchProjector{projections.Transactions{}, projections.NewDailySales()} {
			var handled []eventstore.RecordedEvent
			for _, e := range batch {
				if p.Handles(e.Type) {
					handled = append(handled, e)
				}
			}
			tx, err := env.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant.String()); err != nil {
				t.Fatal(err)
			}
			err = p.ApplyBatch(ctx, tx, handled)
			var n int
			if qerr := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM rm_transactions) + (SELECT count(*) FROM rm_daily_sales)
                + (SELECT count(*) FROM rm_daily_sales_facts)`).Scan(&n); qerr != nil && err == nil {
				t.Fatalf("count rows: %v", qerr)
			}
			_ = tx.Rollback(ctx)
			if err == nil || n != 0 {
				t.Errorf("%s: %s.ApplyBatch: %v and %d rows written, want an error and none", name, p.Name(), err, n)
			}
		}
	}
}
