package queries

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/transaction"
	"pos/eventstore"
)

// Page sizes of ListTransactions (API.md, Conventions).
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// TransactionFilter narrows ListTransactions. The zero filter is every
// transaction of the merchant.
type TransactionFilter struct {
	// BranchID, when set, keeps one branch's transactions.
	BranchID *uuid.UUID
	// Status, when set, keeps transactions in that status ("paid", …).
	Status string
	// From and To, when set, keep transactions opened at or after From and
	// before To.
	From, To time.Time
}

func (f TransactionFilter) validate() error {
	statuses := []transaction.Status{
		transaction.StatusDraft, transaction.StatusPendingPayment, transaction.StatusPaid, transaction.StatusCompleted,
		transaction.StatusVoided, transaction.StatusRefunded, transaction.StatusPartiallyRefunded,
	}
	if f.Status != "" && !slices.Contains(statuses, transaction.Status(f.Status)) {
		return fmt.Errorf("%w: unknown status %q", ErrInvalidFilter, f.Status)
	}
	if !f.From.IsZero() && !f.To.IsZero() && f.To.Before(f.From) {
		return fmt.Errorf("%w: to is before from", ErrInvalidFilter)
	}
	return nil
}

// Totals are a transaction's money figures, in minor units of Currency:
// live while it is a draft, frozen at checkout.
type Totals struct {
	Currency   string
	Subtotal   int64
	Discount   int64
	Tax        int64
	GrandTotal int64
}

// TransactionSummary is one transaction as lists show it.
type TransactionSummary struct {
	ID       uuid.UUID
	Code     string
	BranchID uuid.UUID
	Status   string
	Totals   Totals
	// Paid is what settled payments applied; Refunded what refunds gave back.
	Paid     int64
	Refunded int64
	// OpenedAt is when the sale was opened (the API's created_at).
	OpenedAt time.Time
	// UpdatedAt is when its last event was recorded.
	UpdatedAt time.Time
	// Version is the transaction's version as of the read model.
	Version uint64
}

// TransactionPage is one page of ListTransactions. NextCursor is empty on
// the last page.
type TransactionPage struct {
	Items      []TransactionSummary
	NextCursor string
}

// Transaction is one transaction with everything GET /v1/transactions/{id}
// shows.
type Transaction struct {
	TransactionSummary
	PricesIncludeTax bool
	Lines            []Line
	Discounts        []Discount
	Payments         []Payment
	Refunds          []Refund
	// Position is the feed position of the last event the row reflects.
	Position eventstore.Position
}

// Line is one sale line. The JSON names are those of rm_transactions.lines.
type Line struct {
	LineID     uuid.UUID `json:"line_id"`
	SKU        string    `json:"sku"`
	Name       string    `json:"name"`
	Qty        int64     `json:"qty"`
	UnitPrice  int64     `json:"unit_price"`
	TaxRateBps int64     `json:"tax_rate_bps"`
	// Gross, Discount, Net, Tax and Total are the line's figures
	// (transaction.Line documents them).
	Gross          int64 `json:"gross"`
	Discount       int64 `json:"discount"`
	Net            int64 `json:"net"`
	Tax            int64 `json:"tax"`
	Total          int64 `json:"total"`
	RefundedQty    int64 `json:"refunded_qty"`
	RefundedAmount int64 `json:"refunded_amount"`
}

// Discount is one applied discount: Bps for kind "percent", Amount for
// "amount".
type Discount struct {
	DiscountID uuid.UUID `json:"discount_id"`
	Kind       string    `json:"kind"`
	Bps        int64     `json:"bps"`
	Amount     int64     `json:"amount"`
	Reason     string    `json:"reason"`
}

// Payment is one tender and its status ("settled", "pending", "declined").
type Payment struct {
	PaymentID     uuid.UUID `json:"payment_id"`
	Method        string    `json:"method"`
	Amount        int64     `json:"amount"`
	Applied       int64     `json:"applied"`
	Change        int64     `json:"change"`
	Status        string    `json:"status"`
	GatewayRef    string    `json:"gateway_ref,omitempty"`
	DeclineReason string    `json:"decline_reason,omitempty"`
	At            time.Time `json:"at"`
}

// Refund is one refund, by lines or by amount (no lines).
type Refund struct {
	RefundID uuid.UUID    `json:"refund_id"`
	Amount   int64        `json:"amount"`
	Reason   string       `json:"reason"`
	Lines    []RefundLine `json:"lines,omitempty"`
	At       time.Time    `json:"at"`
}

// RefundLine is the part of a refund taken from one line.
type RefundLine struct {
	LineID uuid.UUID `json:"line_id"`
	Qty    int64     `json:"qty"`
	Amount int64     `json:"amount"`
}

const summaryColumns = `transaction_id, code, branch_id, status, currency, subtotal, discount, tax, grand_total,
    paid, refunded, opened_at, updated_at, version`

func summaryTargets(s *TransactionSummary, version *int64) []any {
	return []any{&s.ID, &s.Code, &s.BranchID, &s.Status, &s.Totals.Currency, &s.Totals.Subtotal, &s.Totals.Discount,
		&s.Totals.Tax, &s.Totals.GrandTotal, &s.Paid, &s.Refunded, &s.OpenedAt, &s.UpdatedAt, version}
}

// ListTransactions returns a page of merchant's transactions matching f,
// newest opened first (ties broken by id), after cursor ("" for the first
// page). limit ≤ 0 means DefaultLimit; above MaxLimit it is MaxLimit. A
// cursor that was altered, or made for another merchant or another filter,
// is ErrBadCursor; an invalid filter is ErrInvalidFilter.
//
// Paging is by keyset (opened_at, id), so a sale opened while a client pages
// never shifts or repeats the rows it has not seen yet.
func (r *Reader) ListTransactions(ctx context.Context, merchant uuid.UUID, f TransactionFilter, cursor string, limit int) (TransactionPage, error) {
	if err := f.validate(); err != nil {
		return TransactionPage{}, err
	}
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)

	var where []string
	args := []any{merchant}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where = append(where, "merchant_id = $1")
	if f.BranchID != nil {
		where = append(where, "branch_id = "+arg(*f.BranchID))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(f.Status))
	}
	if !f.From.IsZero() {
		where = append(where, "opened_at >= "+arg(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "opened_at < "+arg(f.To))
	}
	if cursor != "" {
		last, err := r.key.decode(merchant, f, cursor)
		if err != nil {
			return TransactionPage{}, err
		}
		where = append(where, fmt.Sprintf("(opened_at, transaction_id) < (%s, %s)", arg(last.openedAt), arg(last.id)))
	}
	sql := `SELECT ` + summaryColumns + ` FROM rm_transactions WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY opened_at DESC, transaction_id DESC LIMIT ` + arg(limit+1)

	var page TransactionPage
	err := r.inMerchant(ctx, merchant, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("queries: list transactions: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var s TransactionSummary
			var version int64
			if err := rows.Scan(summaryTargets(&s, &version)...); err != nil {
				return fmt.Errorf("queries: list transactions: %w", err)
			}
			s.Version = uint64(version)
			s.OpenedAt, s.UpdatedAt = s.OpenedAt.UTC(), s.UpdatedAt.UTC()
			page.Items = append(page.Items, s)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("queries: list transactions: %w", err)
		}
		return nil
	})
	if err != nil {
		return TransactionPage{}, err
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.NextCursor = r.key.encode(merchant, f, keyset{openedAt: last.OpenedAt, id: last.ID})
	}
	return page, nil
}

// GetTransaction returns one of merchant's transactions, or ErrNotFound when
// it is missing or another merchant's.
func (r *Reader) GetTransaction(ctx context.Context, merchant, id uuid.UUID) (Transaction, error) {
	var t Transaction
	err := r.inMerchant(ctx, merchant, func(tx pgx.Tx) error {
		var version, major, minor int64
		var lines, discounts, payments, refunds []byte
		targets := append(summaryTargets(&t.TransactionSummary, &version),
			&t.PricesIncludeTax, &lines, &discounts, &payments, &refunds, &major, &minor)
		err := tx.QueryRow(ctx, `SELECT `+summaryColumns+`, prices_include_tax, lines, discounts, payments, refunds, pos_major, pos_minor
            FROM rm_transactions WHERE merchant_id = $1 AND transaction_id = $2`, merchant, id).Scan(targets...)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("queries: get transaction: %w", err)
		}
		t.Version = uint64(version)
		t.OpenedAt, t.UpdatedAt = t.OpenedAt.UTC(), t.UpdatedAt.UTC()
		t.Position = eventstore.Position{Major: uint64(major), Minor: uint64(minor)}
		for _, c := range []struct {
			data []byte
			into any
		}{{lines, &t.Lines}, {discounts, &t.Discounts}, {payments, &t.Payments}, {refunds, &t.Refunds}} {
			if err := json.Unmarshal(c.data, c.into); err != nil {
				return fmt.Errorf("queries: decode transaction %s: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return Transaction{}, err
	}
	return t, nil
}
