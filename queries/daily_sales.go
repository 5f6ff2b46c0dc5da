package queries

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
// were voided after payment (whose row the projector leaves at zero). A range
// the wrong way round, longer than MaxDailySalesDays or from year 0 is
// ErrInvalidFilter. It returns every row: see DailySalesPage for pages.
func (r *Reader) DailySales(ctx context.Context, merchant uuid.UUID, from, to time.Time, branch *uuid.UUID) ([]DaySales, error) {
	first, last, err := dayRange(from, to)
	if err != nil {
		return nil, err
	}
	return r.readDays(ctx, merchant, first, last, branch, nil, 0)
}

// DailySalesPage is one page of a daily-sales report. NextCursor is empty
// on the last page.
type DailySalesPage struct {
	Days       []DaySales
	NextCursor string
}

// DailySalesPage returns the rows of DailySales a page at a time, after
// cursor ("" for the first page), at most limit (≤ 0: DefaultLimit, at most
// MaxLimit). A cursor altered, or made for another merchant or another
// range or branch, is ErrBadCursor.
func (r *Reader) DailySalesPage(ctx context.Context, merchant uuid.UUID, from, to time.Time, branch *uuid.UUID, cursor string, limit int) (DailySalesPage, error) {
	first, last, after, err := r.daysAfter(merchant, from, to, branch, cursor)
	if err != nil {
		return DailySalesPage{}, err
	}
	limit = pageLimit(limit)
	days, err := r.readDays(ctx, merchant, first, last, branch, after, limit+1)
	if err != nil {
		return DailySalesPage{}, err
	}
	return r.daysPage(merchant, first, last, branch, days, limit), nil
}

// PageDays pages days, every row of a report as DailySales returned them
// (a cache's copy of it), exactly as DailySalesPage pages the table: the
// same rows after the same cursors.
func (r *Reader) PageDays(merchant uuid.UUID, from, to time.Time, branch *uuid.UUID, days []DaySales, cursor string, limit int) (DailySalesPage, error) {
	first, last, after, err := r.daysAfter(merchant, from, to, branch, cursor)
	if err != nil {
		return DailySalesPage{}, err
	}
	if after != nil {
		i, _ := slices.BinarySearchFunc(days, *after, func(d DaySales, k dayKeyset) int { return compareDay(keysetOf(d), k) })
		if i < len(days) && compareDay(keysetOf(days[i]), *after) == 0 {
			i++
		}
		days = days[i:]
	}
	return r.daysPage(merchant, first, last, branch, days, pageLimit(limit)), nil
}

// dayRange checks a report's range and returns its first and last dates.
func dayRange(from, to time.Time) (first, last time.Time, err error) {
	first = time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, time.UTC)
	last = time.Date(to.Year(), to.Month(), to.Day(), 0, 0, 0, 0, time.UTC)
	if last.Before(first) {
		return first, last, fmt.Errorf("%w: to is before from", ErrInvalidFilter)
	}
	if first.Year() < 1 { // PostgreSQL's dates have no year 0
		return first, last, fmt.Errorf("%w: a date before 0001-01-01", ErrInvalidFilter)
	}
	if days := int(last.Sub(first).Hours()/24) + 1; days > MaxDailySalesDays {
		return first, last, fmt.Errorf("%w: %d days, at most %d", ErrInvalidFilter, days, MaxDailySalesDays)
	}
	return first, last, nil
}

// dayKeyset is a report row's place in its order: day, branch, currency.
type dayKeyset struct {
	day      time.Time
	branch   uuid.UUID
	currency string
}

func keysetOf(d DaySales) dayKeyset { return dayKeyset{d.Date, d.BranchID, d.Currency} }

// compareDay orders rows as the query does (currency byte-wise: COLLATE "C").
func compareDay(a, b dayKeyset) int {
	return cmp.Or(a.day.Compare(b.day), bytes.Compare(a.branch[:], b.branch[:]), strings.Compare(a.currency, b.currency))
}

// dailySalesCursor is the purpose of daily-sales cursors; their keyset is
// the last row's date (YYYY-MM-DD), branch id (16 bytes) and currency.
const dailySalesCursor = "pos/queries/daily-sales-cursor"

// dailyFilter is the canonical form of a report's range and branch, bound
// into its cursors.
func dailyFilter(first, last time.Time, branch *uuid.UUID) []byte {
	b := make([]byte, 0, 2*len(time.DateOnly)+17)
	b = first.AppendFormat(b, time.DateOnly)
	b = last.AppendFormat(b, time.DateOnly)
	if branch != nil {
		return append(append(b, 1), branch[:]...)
	}
	return append(b, 0)
}

// daysAfter checks a page's range (dayRange) and returns its dates and the
// keyset its cursor names (nil without one).
func (r *Reader) daysAfter(merchant uuid.UUID, from, to time.Time, branch *uuid.UUID, cursor string) (first, last time.Time, after *dayKeyset, err error) {
	if first, last, err = dayRange(from, to); err != nil || cursor == "" {
		return first, last, nil, err
	}
	p, err := r.key.open(dailySalesCursor, merchant, dailyFilter(first, last, branch), cursor)
	if err != nil || len(p) < len(time.DateOnly)+16 {
		return first, last, nil, ErrBadCursor
	}
	day, err := time.Parse(time.DateOnly, string(p[:len(time.DateOnly)]))
	if err != nil {
		return first, last, nil, ErrBadCursor
	}
	k := dayKeyset{day: day, currency: string(p[len(time.DateOnly)+16:])}
	copy(k.branch[:], p[len(time.DateOnly):])
	return first, last, &k, nil
}

// daysPage cuts days (in order, after the cursor) to limit and seals the
// next page's cursor when more follow.
func (r *Reader) daysPage(merchant uuid.UUID, first, last time.Time, branch *uuid.UUID, days []DaySales, limit int) DailySalesPage {
	if len(days) <= limit {
		return DailySalesPage{Days: days}
	}
	days = days[:limit]
	k := keysetOf(days[limit-1])
	payload := append(k.day.AppendFormat(nil, time.DateOnly), k.branch[:]...)
	return DailySalesPage{Days: days, NextCursor: r.key.seal(dailySalesCursor, merchant, dailyFilter(first, last, branch), append(payload, k.currency...))}
}

// readDays reads the report's rows after a keyset (nil: from the start),
// at most limit (0: all). A day whose only sales were voided after payment
// keeps a row of zeros in the table (no method left in by_method), which
// is no sale and left out.
func (r *Reader) readDays(ctx context.Context, merchant uuid.UUID, first, last time.Time, branch *uuid.UUID, after *dayKeyset, limit int) ([]DaySales, error) {
	args := []any{merchant, first.Format(time.DateOnly), last.Format(time.DateOnly), branch}
	// The table's sums are exact (numeric); an answer holds each within
	// the API's money range, ±(2^53−1), which only a day of enormous sales
	// passes: past it a figure reads as the bound and is not exact.
	sql := `SELECT branch_id, business_day, currency, count, ` + bounded("gross") + `, ` + bounded("discounts") + `, ` +
		bounded("tax") + `, ` + bounded("net") + `, ` + bounded("refunds") + `,
            (SELECT coalesce(jsonb_object_agg(key, ` + bounded("value::numeric") + `), '{}'::jsonb) FROM jsonb_each_text(by_method))
        FROM rm_daily_sales
        WHERE merchant_id = $1 AND business_day BETWEEN $2::date AND $3::date AND ($4::uuid IS NULL OR branch_id = $4)
          AND NOT (count = 0 AND gross = 0 AND discounts = 0 AND tax = 0 AND net = 0 AND refunds = 0 AND by_method = '{}'::jsonb)`
	if after != nil {
		args = append(args, after.day.Format(time.DateOnly), after.branch, after.currency)
		sql += ` AND (business_day, branch_id, currency COLLATE "C") > ($5::date, $6::uuid, $7::text COLLATE "C")`
	}
	sql += ` ORDER BY business_day, branch_id, currency COLLATE "C"`
	if limit > 0 {
		args = append(args, limit)
		sql += ` LIMIT $` + strconv.Itoa(len(args))
	}
	var out []DaySales
	err := r.inMerchant(ctx, merchant, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("queries: daily sales: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var d DaySales
			if err := rows.Scan(&d.BranchID, &d.Date, &d.Currency, &d.Count, &d.Gross, &d.Discounts, &d.Tax, &d.Net, &d.Refunds, &d.ByMethod); err != nil {
				return fmt.Errorf("queries: daily sales: %w", err)
			}
			out = append(out, d)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("queries: daily sales: %w", err)
		}
		return nil
	})
	return out, err
}

// bounded is SQL holding expr within ±(2^53−1) as a bigint.
func bounded(expr string) string {
	return "least(greatest(" + expr + ", -9007199254740991), 9007199254740991)::bigint"
}
