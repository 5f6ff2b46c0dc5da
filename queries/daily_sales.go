package queries

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// MaxDailySalesDays is the longest range DailySales answers, in days.
const MaxDailySalesDays = 366

// DaySales are one branch's sales of one business day in one currency
// (GET /v1/reports/daily-sales). Amounts are minor units of Currency.
type DaySales struct {
	BranchID uuid.UUID
	// Date is the business day in the merchant's time zone, as midnight UTC
	// of that date (format it with time.DateOnly).
	Date     time.Time
	Currency string
	// Count is the number of sales paid that day, voided ones taken out.
	Count int64
	// Gross is the sum of subtotals, Discounts of discounts, Tax of tax, Net
	// of grand total − tax (the pre-tax net, whether prices include tax or
	// not).
	Gross     int64
	Discounts int64
	Tax       int64
	Net       int64
	// Refunds is what refunds issued that day gave back, whatever day the
	// sale was made.
	Refunds int64
	// ByMethod is what settled payments applied, by method ("CASH", …).
	ByMethod map[string]int64
}

// DailySales returns merchant's daily sales from one business day to
// another, both included (the calendar dates of from and to, read in their
// own locations), optionally for one branch, ordered by day, branch and
// currency. Days without sales are absent, also a day whose only sales
// were voided after payment (whose row the projector leaves at zero). A range the wrong way round or
// longer than MaxDailySalesDays is ErrInvalidFilter.
func (r *Reader) DailySales(ctx context.Context, merchant uuid.UUID, from, to time.Time, branch *uuid.UUID) ([]DaySales, error) {
	first := time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, time.UTC)
	last := time.Date(to.Year(), to.Month(), to.Day(), 0, 0, 0, 0, time.UTC)
	if last.Before(first) {
		return nil, fmt.Errorf("%w: to is before from", ErrInvalidFilter)
	}
	if first.Year() < 1 { // PostgreSQL's dates have no year 0
		return nil, fmt.Errorf("%w: a date before 0001-01-01", ErrInvalidFilter)
	}
	if days := int(last.Sub(first).Hours()/24) + 1; days > MaxDailySalesDays {
		return nil, fmt.Errorf("%w: %d days, at most %d", ErrInvalidFilter, days, MaxDailySalesDays)
	}
	sql := `SELECT branch_id, business_day, currency, count, gross, discounts, tax, net, refunds, by_method
        FROM rm_daily_sales
        WHERE merchant_id = $1 AND business_day BETWEEN $2::date AND $3::date AND ($4::uuid IS NULL OR branch_id = $4)
        ORDER BY business_day, branch_id, currency`
	var out []DaySales
	err := r.inMerchant(ctx, merchant, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, merchant, first.Format(time.DateOnly), last.Format(time.DateOnly), branch)
		if err != nil {
			return fmt.Errorf("queries: daily sales: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var d DaySales
			if err := rows.Scan(&d.BranchID, &d.Date, &d.Currency, &d.Count, &d.Gross, &d.Discounts, &d.Tax, &d.Net, &d.Refunds, &d.ByMethod); err != nil {
				return fmt.Errorf("queries: daily sales: %w", err)
			}
			if !d.empty() {
				out = append(out, d)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("queries: daily sales: %w", err)
		}
		return nil
	})
	return out, err
}

// empty reports whether nothing remains of d's day: every sale voided, no
// refund.
func (d DaySales) empty() bool {
	if d.Count != 0 || d.Gross != 0 || d.Discounts != 0 || d.Tax != 0 || d.Net != 0 || d.Refunds != 0 {
		return false
	}
	for _, v := range d.ByMethod {
		if v != 0 {
			return false
		}
	}
	return true
}
