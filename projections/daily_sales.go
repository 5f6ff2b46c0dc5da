package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
	_ "time/tzdata" // business days must not depend on the host's zoneinfo

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/settings"
	"pos/domain/transaction"
	"pos/eventstore"
)

// DailySales projects sales into rm_daily_sales: per branch, business day
// and currency, the number of sales, gross (the subtotal before discounts),
// discounts, tax, net (grand total − tax, the pre-tax net in both tax modes),
// refunds, and the settled payments by method.
//
// Delivery is at least once; the Runner applies each event exactly once, in
// stream order, and this projector relies on it (its upserts add deltas).
//
// Which day:
//   - a sale counts on the business day of its TransactionPaid (the event's
//     time in the merchant's time zone), with its frozen totals and the
//     payments settled by then;
//   - a refund counts on its own business day (RefundIssued's time), in the
//     refunds column only;
//   - a void of a paid sale takes the sale back out of the day it was counted
//     on (a voided sale is no sale), whatever day the void happens.
//
// The merchant's time zone is read from rm_merchant_settings (Asia/Jakarta
// while the merchant has no row), which MerchantSettings writes: run both in
// the same Runner, or at least feed MerchantSettings the settings events
// first. A change of time zone applies to events after it; days already
// counted are not moved.
//
// What it needs of a sale between its events (branch, currency, frozen
// totals, payments, the day it was counted on) it keeps in its own table,
// rm_daily_sales_facts, so it depends on no other projector's table but the
// settings.
type DailySales struct {
	mu    sync.Mutex
	zones map[string]*time.Location
}

// NewDailySales returns the daily-sales projector.
func NewDailySales() *DailySales { return &DailySales{zones: map[string]*time.Location{}} }

// Name returns "daily_sales".
func (*DailySales) Name() string { return "daily_sales" }

// Categories returns the transaction category.
func (*DailySales) Categories() []string { return []string{TransactionCategory} }

// Handles reports true for the events that change a sale's branch, totals,
// payments or figures of the day.
func (*DailySales) Handles(eventType string) bool {
	switch eventType {
	case "TransactionOpened", "CheckedOut", "PaymentAdded", "PaymentConfirmed", "PaymentDeclined",
		"TransactionPaid", "TransactionVoided", "RefundIssued":
		return true
	}
	return false
}

// saleFacts is one rm_daily_sales_facts row.
type saleFacts struct {
	branch                         uuid.UUID
	currency                       string
	subtotal, discount, tax, grand int64
	payments                       map[string]factPayment
	paidDay                        *time.Time
	paidByMethod                   map[string]int64
}

type factPayment struct {
	Method  string `json:"method"`
	Applied int64  `json:"applied"`
	Status  string `json:"status"`
}

// delta is a change to one rm_daily_sales row.
type delta struct {
	count, gross, discounts, tax, net, refunds int64
	byMethod                                   map[string]int64
}

// Apply implements Projector.
func (d *DailySales) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	ev, err := transaction.Decode(e.Type, e.Data)
	if err != nil {
		return err
	}
	merchant, id, err := aggregateOf(e)
	if err != nil {
		return err
	}
	switch ev := ev.(type) {
	case transaction.TransactionOpened:
		_, err = tx.Exec(ctx, `INSERT INTO rm_daily_sales_facts (merchant_id, transaction_id, branch_id, currency) VALUES ($1, $2, $3, $4)`,
			merchant, id, ev.BranchID, string(ev.Currency))
		return wrap("insert rm_daily_sales_facts", err)

	case transaction.CheckedOut:
		return execOne(ctx, tx, `UPDATE rm_daily_sales_facts SET currency = $3, subtotal = $4, discount = $5, tax = $6, grand_total = $7
            WHERE merchant_id = $1 AND transaction_id = $2`,
			merchant, id, string(ev.Currency), int64(ev.Subtotal), int64(ev.Discount), int64(ev.Tax), int64(ev.GrandTotal))

	case transaction.PaymentAdded:
		p, err := json.Marshal(map[string]factPayment{ev.PaymentID.String(): {Method: string(ev.Method), Applied: int64(ev.Applied), Status: string(ev.Status)}})
		if err != nil {
			return err
		}
		return execOne(ctx, tx, `UPDATE rm_daily_sales_facts SET payments = payments || $3::jsonb WHERE merchant_id = $1 AND transaction_id = $2`,
			merchant, id, p)

	case transaction.PaymentConfirmed:
		return setPaymentStatus(ctx, tx, merchant, id, ev.PaymentID, transaction.PaymentStatusSettled)

	case transaction.PaymentDeclined:
		return setPaymentStatus(ctx, tx, merchant, id, ev.PaymentID, transaction.PaymentStatusDeclined)

	case transaction.TransactionPaid:
		f, err := readFacts(ctx, tx, merchant, id)
		if err != nil {
			return err
		}
		day, err := d.businessDay(ctx, tx, merchant, ev.At)
		if err != nil {
			return err
		}
		byMethod := map[string]int64{}
		for _, p := range f.payments {
			if p.Status == string(transaction.PaymentStatusSettled) {
				byMethod[p.Method] += p.Applied
			}
		}
		err = addDay(ctx, tx, merchant, f.branch, day, f.currency, e.RecordedAt, delta{
			count: 1, gross: f.subtotal, discounts: f.discount, tax: f.tax, net: f.grand - f.tax, byMethod: byMethod,
		})
		if err != nil {
			return err
		}
		bm, err := json.Marshal(byMethod)
		if err != nil {
			return err
		}
		return execOne(ctx, tx, `UPDATE rm_daily_sales_facts SET paid_day = $3::date, paid_by_method = $4 WHERE merchant_id = $1 AND transaction_id = $2`,
			merchant, id, day, bm)

	case transaction.TransactionVoided:
		if ev.PreviousStatus != transaction.StatusPaid {
			return nil // never counted
		}
		f, err := readFacts(ctx, tx, merchant, id)
		if err != nil {
			return err
		}
		if f.paidDay == nil {
			return fmt.Errorf("transaction %s: void of a paid sale that was never counted", id)
		}
		neg := make(map[string]int64, len(f.paidByMethod))
		for m, v := range f.paidByMethod {
			neg[m] = -v
		}
		err = addDay(ctx, tx, merchant, f.branch, f.paidDay.Format(time.DateOnly), f.currency, e.RecordedAt, delta{
			count: -1, gross: -f.subtotal, discounts: -f.discount, tax: -f.tax, net: -(f.grand - f.tax), byMethod: neg,
		})
		if err != nil {
			return err
		}
		return execOne(ctx, tx, `UPDATE rm_daily_sales_facts SET paid_day = NULL, paid_by_method = NULL WHERE merchant_id = $1 AND transaction_id = $2`,
			merchant, id)

	case transaction.RefundIssued:
		f, err := readFacts(ctx, tx, merchant, id)
		if err != nil {
			return err
		}
		day, err := d.businessDay(ctx, tx, merchant, ev.At)
		if err != nil {
			return err
		}
		return addDay(ctx, tx, merchant, f.branch, day, f.currency, e.RecordedAt, delta{refunds: int64(ev.Amount)})
	}
	return nil
}

func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// execOne runs an update that must change exactly one row.
func execOne(ctx context.Context, tx pgx.Tx, sql string, args ...any) error {
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("update rm_daily_sales_facts: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("update rm_daily_sales_facts: %w", errNoRow)
	}
	return nil
}

func setPaymentStatus(ctx context.Context, tx pgx.Tx, merchant, id, payment uuid.UUID, status transaction.PaymentStatus) error {
	tag, err := tx.Exec(ctx, `UPDATE rm_daily_sales_facts SET payments = jsonb_set(payments, ARRAY[$3::text, 'status'], to_jsonb($4::text))
        WHERE merchant_id = $1 AND transaction_id = $2 AND payments ? $3::text`, merchant, id, payment.String(), string(status))
	if err != nil {
		return fmt.Errorf("update rm_daily_sales_facts: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("payment %s: %w", payment, errUnknownID)
	}
	return nil
}

func readFacts(ctx context.Context, tx pgx.Tx, merchant, id uuid.UUID) (*saleFacts, error) {
	f := &saleFacts{}
	var payments, paidByMethod []byte
	err := tx.QueryRow(ctx, `SELECT branch_id, currency, subtotal, discount, tax, grand_total, payments, paid_day, paid_by_method
        FROM rm_daily_sales_facts WHERE merchant_id = $1 AND transaction_id = $2`, merchant, id).Scan(
		&f.branch, &f.currency, &f.subtotal, &f.discount, &f.tax, &f.grand, &payments, &f.paidDay, &paidByMethod)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("transaction %s: %w", id, errNoRow)
	}
	if err != nil {
		return nil, fmt.Errorf("read rm_daily_sales_facts: %w", err)
	}
	if err := json.Unmarshal(payments, &f.payments); err != nil {
		return nil, fmt.Errorf("decode rm_daily_sales_facts payments: %w", err)
	}
	if paidByMethod != nil {
		if err := json.Unmarshal(paidByMethod, &f.paidByMethod); err != nil {
			return nil, fmt.Errorf("decode rm_daily_sales_facts paid_by_method: %w", err)
		}
	}
	return f, nil
}

// addDay adds d to one day's row, creating it when needed, in one atomic
// statement (two sales of one day may be projected concurrently).
func addDay(ctx context.Context, tx pgx.Tx, merchant, branch uuid.UUID, day, currency string, at time.Time, d delta) error {
	bm, err := json.Marshal(d.byMethod)
	if err != nil {
		return err
	}
	if d.byMethod == nil {
		bm = []byte("{}")
	}
	_, err = tx.Exec(ctx, `
        INSERT INTO rm_daily_sales AS d (merchant_id, branch_id, business_day, currency, count, gross, discounts, tax, net, refunds, by_method, updated_at)
        VALUES ($1, $2, $3::date, $4, $5, $6, $7, $8, $9, $10, rm_jsonb_add('{}', $11::jsonb), $12)
        ON CONFLICT (merchant_id, branch_id, business_day, currency) DO UPDATE SET
            count = d.count + excluded.count, gross = d.gross + excluded.gross, discounts = d.discounts + excluded.discounts,
            tax = d.tax + excluded.tax, net = d.net + excluded.net, refunds = d.refunds + excluded.refunds,
            by_method = rm_jsonb_add(d.by_method, excluded.by_method), updated_at = greatest(d.updated_at, excluded.updated_at)`,
		merchant, branch, day, currency, d.count, d.gross, d.discounts, d.tax, d.net, d.refunds, bm, at)
	return wrap("upsert rm_daily_sales", err)
}

// businessDay returns the date ("2006-01-02") of at in the merchant's time
// zone.
func (d *DailySales) businessDay(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, at time.Time) (string, error) {
	tz := settings.Defaults().Timezone
	err := tx.QueryRow(ctx, `SELECT timezone FROM rm_merchant_settings WHERE merchant_id = $1`, merchant).Scan(&tz)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("read rm_merchant_settings: %w", err)
	}
	loc, err := d.zone(tz)
	if err != nil {
		return "", err
	}
	return at.In(loc).Format(time.DateOnly), nil
}

func (d *DailySales) zone(name string) (*time.Location, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if loc, ok := d.zones[name]; ok {
		return loc, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("merchant time zone %q: %w", name, err)
	}
	d.zones[name] = loc
	return loc, nil
}
