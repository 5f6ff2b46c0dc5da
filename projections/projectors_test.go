package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections/projtest"
)

// checkAgainstAggregate compares the sale's row with its aggregate.
func checkAgainstAggregate(t *testing.T, env *projtest.Env, s *projtest.Sale) {
	t.Helper()
	row, ok := readTx(t, env.URL, s.ID)
	if !ok {
		t.Fatalf("no row for sale %s", s.ID)
	}
	agg := s.Aggregate()
	tot := agg.Totals()
	if row.Status != string(agg.Status()) || row.Version != int64(agg.Version()) {
		t.Errorf("status %s at %d, want %s at %d", row.Status, row.Version, agg.Status(), agg.Version())
	}
	if row.Subtotal != int64(tot.Subtotal) || row.Discount != int64(tot.Discount) || row.Tax != int64(tot.Tax) || row.GrandTotal != int64(tot.GrandTotal) {
		t.Errorf("totals %d/%d/%d/%d, want %d/%d/%d/%d", row.Subtotal, row.Discount, row.Tax, row.GrandTotal,
			tot.Subtotal, tot.Discount, tot.Tax, tot.GrandTotal)
	}
	if row.Paid != int64(agg.Paid()) || row.Refunded != int64(agg.Refunded()) {
		t.Errorf("paid %d refunded %d, want %d and %d", row.Paid, row.Refunded, agg.Paid(), agg.Refunded())
	}
	lines := agg.Lines()
	if len(row.Lines) != len(lines) {
		t.Fatalf("%d lines, want %d", len(row.Lines), len(lines))
	}
	for i, l := range lines {
		got := row.Lines[i]
		want := map[string]int64{"qty": l.Qty, "unit_price": int64(l.UnitPrice), "gross": int64(l.Gross), "discount": int64(l.Discount),
			"net": int64(l.Net), "tax": int64(l.Tax), "total": int64(l.Total), "refunded_qty": l.RefundedQty, "refunded_amount": int64(l.RefundedAmount)}
		for k, v := range want {
			if n, _ := got[k].(float64); int64(n) != v {
				t.Errorf("line %d %s = %v, want %d", i, k, got[k], v)
			}
		}
		if got["line_id"] != l.LineID.String() {
			t.Errorf("line %d id %v, want %s", i, got["line_id"], l.LineID)
		}
	}
	payments := agg.Payments()
	if len(row.Payments) != len(payments) {
		t.Fatalf("%d payments, want %d", len(row.Payments), len(payments))
	}
	for i, p := range payments {
		got := row.Payments[i]
		if got["payment_id"] != p.PaymentID.String() || got["status"] != string(p.Status) || got["method"] != string(p.Method) {
			t.Errorf("payment %d = %v, want %s %s %s", i, got, p.PaymentID, p.Method, p.Status)
		}
	}
}

func TestTransactionsMirrorsTheAggregate(t *testing.T) {
	env := projtest.New(t)
	r := newRunner(t, env)
	s := env.OpenSale(t, projtest.NewID(t), projtest.NewID(t), "000-001", t0)
	step := func(name string) {
		t.Helper()
		handle(t, r, s.Events...) // earlier events are redeliveries
		t.Run(name, func(t *testing.T) { checkAgainstAggregate(t, env, s) })
	}

	step("opened")
	tea := s.AddItem("TEA", 3, 15_333, 1100, t0)
	cake := s.AddItem("CAKE", 1, 27_501, 1250, t0)
	step("draft with lines")
	s.DiscountPercent(1_000, t0)
	step("draft with a discount")
	water := s.AddItem("WATER", 7, 3_001, 1100, t0)
	s.RemoveItem(water, t0)
	step("a line removed")
	s.Checkout(t0)
	step("checked out")
	card := s.Pay(transaction.MethodCard, 10_000, t0)
	step("card pending")
	s.Decline(card, t0)
	qris := s.Pay(transaction.MethodQRIS, 20_000, t0)
	s.Confirm(qris, t0)
	step("declined and confirmed")
	s.PayDue(t0)
	step("paid")
	s.Complete(t0)
	s.RefundLine(tea, 2, t0)
	step("line refund")
	s.RefundLine(cake, 1, t0)
	s.RefundLine(tea, 1, t0)
	step("refunded")

	row, _ := readTx(t, env.URL, s.ID)
	if row.Status != "refunded" {
		t.Errorf("status %s, want refunded", row.Status)
	}
}

func TestDailySalesLandOnTheMerchantsBusinessDay(t *testing.T) {
	env := projtest.New(t)
	late := time.Date(2025, 3, 10, 23, 30, 0, 0, time.UTC) // 06:30 on the 11th in Jakarta
	early := time.Date(2025, 3, 11, 3, 30, 0, 0, time.UTC) // 23:30 on the 10th in New York
	tests := []struct {
		name     string
		timezone string // "" keeps the default, Asia/Jakarta
		paidAt   time.Time
		want     string
	}{
		{"default Asia/Jakarta, paid 23:30 UTC", "", late, "2025-03-11"},
		{"UTC, paid 23:30 UTC", "UTC", late, "2025-03-10"},
		{"America/New_York, paid 03:30 UTC", "America/New_York", early, "2025-03-10"},
		{"Asia/Jakarta set explicitly, paid 03:30 UTC", "Asia/Jakarta", early, "2025-03-11"},
	}
	r := newRunner(t, env)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			merchant := projtest.NewID(t)
			if tt.timezone != "" {
				env.ChangeSettings(t, merchant, tt.timezone, t0.Add(-24*time.Hour))
			}
			s := env.OpenSale(t, merchant, projtest.NewID(t), "000-001", tt.paidAt.Add(-time.Hour))
			s.AddItem("TEA", 2, 10_000, 1_100, tt.paidAt)
			s.DiscountPercent(1_000, tt.paidAt)
			s.Checkout(tt.paidAt)
			s.Pay(transaction.MethodCash, 50_000, tt.paidAt)
			if _, err := r.Catchup(context.Background(), eventstore.Start); err != nil {
				t.Fatalf("Catchup: %v", err)
			}
			days := readDays(t, env.URL, merchant)
			if len(days) != 1 {
				t.Fatalf("days %v, want only %s", days, tt.want)
			}
			got, ok := days[tt.want]
			tot := s.Aggregate().Totals()
			want := day{Day: tt.want, Count: 1, Gross: 20_000, Discounts: 2_000, Tax: int64(tot.Tax), Net: 18_000,
				ByMethod: map[string]int64{"CASH": int64(tot.GrandTotal)}}
			if !ok || !sameDay(got, want) {
				t.Errorf("day %+v, want %+v", got, want)
			}
		})
	}
}

func sameDay(a, b day) bool {
	if a.Day != b.Day || a.Count != b.Count || a.Gross != b.Gross || a.Discounts != b.Discounts || a.Tax != b.Tax ||
		a.Net != b.Net || a.Refunds != b.Refunds || len(a.ByMethod) != len(b.ByMethod) {
		return false
	}
	for k, v := range a.ByMethod {
		if b.ByMethod[k] != v {
			return false
		}
	}
	return true
}

func TestDailySalesVoidAndRefundAdjustTheDay(t *testing.T) {
	env := projtest.New(t)
	r := newRunner(t, env)
	merchant, branch := projtest.NewID(t), projtest.NewID(t)
	day1 := time.Date(2025, 3, 10, 3, 0, 0, 0, time.UTC) // 10:00 in Jakarta
	day2 := day1.Add(24 * time.Hour)

	kept := env.OpenSale(t, merchant, branch, "000-001", day1)
	kept.AddItem("TEA", 4, 10_000, 1_000, day1)
	kept.Checkout(day1) // 44,000
	card := kept.Pay(transaction.MethodCard, 30_000, day1)
	kept.Confirm(card, day1)
	kept.Pay(transaction.MethodCash, 20_000, day1) // 14,000 applied, 6,000 change

	voided := env.OpenSale(t, merchant, branch, "000-002", day1)
	voided.AddItem("CAKE", 1, 50_000, 1_000, day1)
	voided.Checkout(day1)
	voided.PayDue(day1)

	unpaid := env.OpenSale(t, merchant, branch, "000-003", day1)
	unpaid.AddItem("CAKE", 1, 50_000, 1_000, day1)
	unpaid.Checkout(day1)

	catchup := func() {
		t.Helper()
		if _, err := r.Catchup(context.Background(), eventstore.Start); err != nil {
			t.Fatalf("Catchup: %v", err)
		}
	}
	catchup()
	both := day{Day: "2025-03-10", Count: 2, Gross: 90_000, Tax: 9_000, Net: 90_000,
		ByMethod: map[string]int64{"CARD": 30_000, "CASH": 14_000 + 55_000}}
	if got := readDays(t, env.URL, merchant)["2025-03-10"]; !sameDay(got, both) {
		t.Fatalf("before void: %+v, want %+v", got, both)
	}

	voided.Void(day2)
	unpaid.Void(day2)
	kept.RefundAmount(5_000, day2)
	catchup()
	days := readDays(t, env.URL, merchant)
	wantDay1 := day{Day: "2025-03-10", Count: 1, Gross: 40_000, Tax: 4_000, Net: 40_000,
		ByMethod: map[string]int64{"CARD": 30_000, "CASH": 14_000}}
	if got := days["2025-03-10"]; !sameDay(got, wantDay1) {
		t.Errorf("sale day after void: %+v, want %+v", got, wantDay1)
	}
	wantDay2 := day{Day: "2025-03-11", Refunds: 5_000, ByMethod: map[string]int64{}}
	if got := days["2025-03-11"]; !sameDay(got, wantDay2) {
		t.Errorf("refund day: %+v, want %+v", got, wantDay2)
	}
	if len(days) != 2 {
		t.Errorf("days %v, want two", days)
	}
}

func TestMerchantSettingsKeepsTheLatest(t *testing.T) {
	env := projtest.New(t)
	r := newRunner(t, env)
	merchant := projtest.NewID(t)
	env.ChangeSettings(t, merchant, "UTC", t0)
	env.ChangeSettings(t, merchant, "Europe/Berlin", t0.Add(time.Hour))
	if _, err := r.Catchup(context.Background(), eventstore.Start); err != nil {
		t.Fatalf("Catchup: %v", err)
	}
	var tz string
	var version int64
	err := admin(t, env.URL).QueryRow(context.Background(),
		`SELECT timezone, version FROM rm_merchant_settings WHERE merchant_id = $1`, merchant).Scan(&tz, &version)
	if err != nil || tz != "Europe/Berlin" || version != 2 {
		t.Errorf("settings %q at %d (%v), want Europe/Berlin at 2", tz, version, err)
	}
}

func TestProjectorRoleIsBoundByRowLevelSecurity(t *testing.T) {
	env := projtest.New(t)
	a, b := projtest.NewID(t), projtest.NewID(t)
	ringUp(t, env, a)
	ringUp(t, env, b)
	if _, err := newRunner(t, env).Catchup(context.Background(), eventstore.Start); err != nil {
		t.Fatalf("Catchup: %v", err)
	}
	ctx := context.Background()
	// count runs in one pos_app transaction with setting (when not nil) as
	// pos.merchant_id and returns table's rows: all, and those of other.
	count := func(t *testing.T, table string, setting *string, other uuid.UUID) (all, others int64) {
		t.Helper()
		err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
			if setting != nil {
				if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, *setting); err != nil {
					return err
				}
			}
			return tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE merchant_id = $1) FROM `+table, other).Scan(&all, &others)
		})
		if err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		return all, others
	}
	empty, as := "", a.String()
	for _, table := range []string{"rm_transactions", "rm_daily_sales", "rm_daily_sales_facts", "rm_merchant_settings"} {
		t.Run(table, func(t *testing.T) {
			if n, _ := count(t, table, nil, a); n != 0 {
				t.Errorf("no merchant set: %d rows, want 0", n)
			}
			if n, _ := count(t, table, &empty, a); n != 0 {
				t.Errorf("merchant set to '': %d rows, want 0", n)
			}
			if n, others := count(t, table, &as, b); n == 0 || others != 0 {
				t.Errorf("merchant a: %d rows, %d of them b's; want some, none of b's", n, others)
			}
		})
	}
	t.Run("writing another merchant's row", func(t *testing.T) {
		err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, as); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO rm_merchant_settings VALUES ($1, 'UTC', 'IDR', false, false, 1, now())`, uuid.New())
			return err
		})
		if err == nil {
			t.Fatal("pos_app wrote another merchant's row")
		}
	})
}
