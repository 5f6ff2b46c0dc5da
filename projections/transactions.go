package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/money"
	"pos/domain/transaction"
	"pos/eventstore"
)

// TransactionCategory is the stream category of transactions
// (commands.TransactionStream).
const TransactionCategory = "transaction"

// Transactions projects every transaction event into rm_transactions, one
// row per transaction: status, totals, lines, discounts, payments with their
// statuses, refunds, version and updated_at (the recorded time of the last
// event).
//
// Delivery is at least once; the Runner applies each event exactly once, in
// stream order, and this projector relies on it (it reads the row, applies
// the event in memory and writes it back).
//
// Totals: while the sale is a draft, its figures are recomputed on every
// ItemAdded, ItemRemoved and DiscountApplied with domain/transaction's own
// rules, by replaying the lines and discounts held in the row through an
// in-memory aggregate (the store is never read), so they are exactly what
// the sale would show. CheckedOut then freezes them: from there on the
// figures are the event's, never recomputed.
type Transactions struct{}

// Name returns "transactions".
func (Transactions) Name() string { return "transactions" }

// Categories returns the transaction category: the projector reads no other
// stream.
func (Transactions) Categories() []string { return []string{TransactionCategory} }

// Handles reports true for every transaction event type.
func (Transactions) Handles(eventType string) bool {
	return slices.Contains(transaction.EventTypes(), eventType)
}

// The JSON shapes of rm_transactions' array columns; package queries reads
// them with the same field names.

type lineJSON struct {
	LineID         uuid.UUID    `json:"line_id"`
	SKU            string       `json:"sku"`
	Name           string       `json:"name"`
	Qty            int64        `json:"qty"`
	UnitPrice      money.Amount `json:"unit_price"`
	TaxRateBps     int64        `json:"tax_rate_bps"`
	Gross          money.Amount `json:"gross"`
	Discount       money.Amount `json:"discount"`
	Net            money.Amount `json:"net"`
	Tax            money.Amount `json:"tax"`
	Total          money.Amount `json:"total"`
	RefundedQty    int64        `json:"refunded_qty"`
	RefundedAmount money.Amount `json:"refunded_amount"`
}

type discountJSON struct {
	DiscountID uuid.UUID                `json:"discount_id"`
	Kind       transaction.DiscountKind `json:"kind"`
	Bps        int64                    `json:"bps"`
	Amount     money.Amount             `json:"amount"`
	Reason     string                   `json:"reason"`
}

type paymentJSON struct {
	PaymentID     uuid.UUID                 `json:"payment_id"`
	Method        transaction.Method        `json:"method"`
	Amount        money.Amount              `json:"amount"`
	Applied       money.Amount              `json:"applied"`
	Change        money.Amount              `json:"change"`
	Status        transaction.PaymentStatus `json:"status"`
	GatewayRef    string                    `json:"gateway_ref,omitempty"`
	DeclineReason string                    `json:"decline_reason,omitempty"`
	At            time.Time                 `json:"at"`
}

type refundJSON struct {
	RefundID uuid.UUID      `json:"refund_id"`
	Amount   money.Amount   `json:"amount"`
	Reason   string         `json:"reason"`
	Lines    []refundLineJS `json:"lines,omitempty"`
	At       time.Time      `json:"at"`
}

type refundLineJS struct {
	LineID uuid.UUID    `json:"line_id"`
	Qty    int64        `json:"qty"`
	Amount money.Amount `json:"amount"`
}

// txRow is one rm_transactions row in memory.
type txRow struct {
	merchant, id, branch uuid.UUID
	code                 string
	status               transaction.Status
	currency             money.Currency
	inclusive            bool
	subtotal, discount   money.Amount
	tax, grandTotal      money.Amount
	paid, refunded       money.Amount
	lines                []lineJSON
	discounts            []discountJSON
	payments             []paymentJSON
	refunds              []refundJSON
	openedAt             time.Time
}

// Apply implements Projector.
func (Transactions) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	ev, err := transaction.Decode(e.Type, e.Data)
	if err != nil {
		return err
	}
	merchant, id, err := aggregateOf(e)
	if err != nil {
		return err
	}
	if o, ok := ev.(transaction.TransactionOpened); ok {
		_, err := tx.Exec(ctx, `
            INSERT INTO rm_transactions (merchant_id, transaction_id, code, branch_id, status, currency, prices_include_tax,
                opened_at, updated_at, version, pos_major, pos_minor)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			merchant, id, o.Code, o.BranchID, string(transaction.StatusDraft), string(o.Currency), o.PricesIncludeTax,
			o.OpenedAt, e.RecordedAt, int64(e.Version), int64(e.Position.Major), int64(e.Position.Minor))
		if err != nil {
			return fmt.Errorf("insert rm_transactions: %w", err)
		}
		return nil
	}
	row, err := loadTxRow(ctx, tx, merchant, id)
	if err != nil {
		return err
	}
	if err := row.apply(ev); err != nil {
		return fmt.Errorf("%s: %w", e.Type, err)
	}
	return row.save(ctx, tx, e)
}

// aggregateOf returns the merchant and aggregate id of e's stream.
func aggregateOf(e eventstore.RecordedEvent) (merchant, id uuid.UUID, err error) {
	_, m, i, ok := eventstore.ParseStreamName(e.Stream)
	if !ok {
		return uuid.Nil, uuid.Nil, fmt.Errorf("%w: stream %q", ErrBadEvent, e.Stream)
	}
	if merchant, err = uuid.Parse(m); err != nil {
		return uuid.Nil, uuid.Nil, fmt.Errorf("%w: stream %q", ErrBadEvent, e.Stream)
	}
	if id, err = uuid.Parse(i); err != nil {
		return uuid.Nil, uuid.Nil, fmt.Errorf("%w: stream %q has no UUID id", ErrBadEvent, e.Stream)
	}
	return merchant, id, nil
}

// errNoRow reports an event of a transaction whose opening was never
// projected: bookkeeping and read model disagree.
var errNoRow = errors.New("projections: no read-model row for the transaction (was the read model emptied without its bookkeeping?)")

func loadTxRow(ctx context.Context, tx pgx.Tx, merchant, id uuid.UUID) (*txRow, error) {
	row := &txRow{merchant: merchant, id: id}
	var status, currency string
	var lines, discounts, payments, refunds []byte
	err := tx.QueryRow(ctx, `
        SELECT code, branch_id, status, currency, prices_include_tax, subtotal, discount, tax, grand_total,
               paid, refunded, lines, discounts, payments, refunds, opened_at
        FROM rm_transactions WHERE merchant_id = $1 AND transaction_id = $2`, merchant, id).Scan(
		&row.code, &row.branch, &status, &currency, &row.inclusive, &row.subtotal, &row.discount, &row.tax, &row.grandTotal,
		&row.paid, &row.refunded, &lines, &discounts, &payments, &refunds, &row.openedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("transaction %s: %w", id, errNoRow)
	}
	if err != nil {
		return nil, fmt.Errorf("read rm_transactions: %w", err)
	}
	row.status, row.currency = transaction.Status(status), money.Currency(currency)
	for _, c := range []struct {
		data []byte
		into any
	}{{lines, &row.lines}, {discounts, &row.discounts}, {payments, &row.payments}, {refunds, &row.refunds}} {
		if err := json.Unmarshal(c.data, c.into); err != nil {
			return nil, fmt.Errorf("decode rm_transactions row %s: %w", id, err)
		}
	}
	return row, nil
}

func (row *txRow) save(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	enc := func(v any) ([]byte, error) { return json.Marshal(v) }
	lines, err1 := enc(nonNil(row.lines))
	discounts, err2 := enc(nonNil(row.discounts))
	payments, err3 := enc(nonNil(row.payments))
	refunds, err4 := enc(nonNil(row.refunds))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("encode rm_transactions row: %w", err)
	}
	_, err := tx.Exec(ctx, `
        UPDATE rm_transactions SET status = $3, currency = $4, subtotal = $5, discount = $6, tax = $7, grand_total = $8,
            paid = $9, refunded = $10, lines = $11, discounts = $12, payments = $13, refunds = $14,
            updated_at = $15, version = $16, pos_major = $17, pos_minor = $18
        WHERE merchant_id = $1 AND transaction_id = $2`,
		row.merchant, row.id, string(row.status), string(row.currency), row.subtotal, row.discount, row.tax, row.grandTotal,
		row.paid, row.refunded, lines, discounts, payments, refunds,
		e.RecordedAt, int64(e.Version), int64(e.Position.Major), int64(e.Position.Minor))
	if err != nil {
		return fmt.Errorf("update rm_transactions: %w", err)
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

var errUnknownID = errors.New("unknown id")

// apply changes the row by one event (not TransactionOpened).
func (row *txRow) apply(ev transaction.Event) error {
	switch e := ev.(type) {
	case transaction.ItemAdded, transaction.ItemRemoved, transaction.DiscountApplied:
		return row.recomputeDraft(ev)

	case transaction.CheckedOut:
		for _, f := range e.Lines {
			i := row.line(f.LineID)
			if i < 0 {
				return fmt.Errorf("line %s: %w", f.LineID, errUnknownID)
			}
			l := &row.lines[i]
			l.Qty, l.Gross, l.Discount, l.Net, l.Tax, l.Total = f.Qty, f.Gross, f.Discount, f.Net, f.Tax, f.Total
		}
		row.currency, row.subtotal, row.discount, row.tax, row.grandTotal = e.Currency, e.Subtotal, e.Discount, e.Tax, e.GrandTotal
		row.status = transaction.StatusPendingPayment

	case transaction.PaymentAdded:
		row.payments = append(row.payments, paymentJSON{
			PaymentID: e.PaymentID, Method: e.Method, Amount: e.Amount, Applied: e.Applied,
			Change: e.Change, Status: e.Status, At: e.At,
		})
		if e.Status == transaction.PaymentStatusSettled {
			row.paid += e.Applied
		}

	case transaction.PaymentConfirmed:
		p := row.payment(e.PaymentID)
		if p == nil {
			return fmt.Errorf("payment %s: %w", e.PaymentID, errUnknownID)
		}
		if p.Status != transaction.PaymentStatusSettled {
			row.paid += p.Applied
		}
		p.Status, p.GatewayRef = transaction.PaymentStatusSettled, e.GatewayRef

	case transaction.PaymentDeclined:
		p := row.payment(e.PaymentID)
		if p == nil {
			return fmt.Errorf("payment %s: %w", e.PaymentID, errUnknownID)
		}
		p.Status, p.DeclineReason = transaction.PaymentStatusDeclined, e.Reason

	case transaction.TransactionPaid:
		row.status = transaction.StatusPaid

	case transaction.TransactionCompleted:
		row.status = transaction.StatusCompleted

	case transaction.TransactionVoided:
		row.status = transaction.StatusVoided

	case transaction.RefundIssued:
		r := refundJSON{RefundID: e.RefundID, Amount: e.Amount, Reason: e.Reason, At: e.At}
		for _, rl := range e.Lines {
			i := row.line(rl.LineID)
			if i < 0 {
				return fmt.Errorf("line %s: %w", rl.LineID, errUnknownID)
			}
			row.lines[i].RefundedQty += rl.Qty
			row.lines[i].RefundedAmount += rl.Amount
			r.Lines = append(r.Lines, refundLineJS{LineID: rl.LineID, Qty: rl.Qty, Amount: rl.Amount})
		}
		row.refunds = append(row.refunds, r)
		row.refunded += e.Amount
		row.status = e.Status

	case transaction.CheckoutAbandoned:
		// The draft is unchanged; only its version moves (save).

	default:
		return fmt.Errorf("unexpected event %T", ev)
	}
	return nil
}

// recomputeDraft applies a draft event through an in-memory aggregate rebuilt
// from the row's lines and discounts (never from the store), so the live
// figures follow domain/transaction's rounding rules exactly.
func (row *txRow) recomputeDraft(ev transaction.Event) error {
	history := make([]transaction.Event, 0, 2+len(row.lines)+len(row.discounts))
	history = append(history, transaction.TransactionOpened{
		TransactionID: row.id, MerchantID: row.merchant, BranchID: row.branch, Code: row.code,
		Currency: row.currency, PricesIncludeTax: row.inclusive, OpenedAt: row.openedAt,
	})
	for _, l := range row.lines {
		history = append(history, transaction.ItemAdded{LineID: l.LineID, SKU: l.SKU, Name: l.Name, Qty: l.Qty, UnitPrice: l.UnitPrice, TaxRateBps: l.TaxRateBps})
	}
	for _, d := range row.discounts {
		history = append(history, transaction.DiscountApplied{DiscountID: d.DiscountID, Kind: d.Kind, Bps: d.Bps, Amount: d.Amount, Reason: d.Reason})
	}
	history = append(history, ev)
	t, err := transaction.Load(history)
	if err != nil {
		return err
	}
	lines := t.Lines()
	row.lines = make([]lineJSON, len(lines))
	for i, l := range lines {
		row.lines[i] = lineJSON{
			LineID: l.LineID, SKU: l.SKU, Name: l.Name, Qty: l.Qty, UnitPrice: l.UnitPrice, TaxRateBps: l.TaxRateBps,
			Gross: l.Gross, Discount: l.Discount, Net: l.Net, Tax: l.Tax, Total: l.Total,
		}
	}
	discounts := t.Discounts()
	row.discounts = make([]discountJSON, len(discounts))
	for i, d := range discounts {
		row.discounts[i] = discountJSON{DiscountID: d.DiscountID, Kind: d.Kind, Bps: d.Bps, Amount: d.Amount, Reason: d.Reason}
	}
	tot := t.Totals()
	row.subtotal, row.discount, row.tax, row.grandTotal = tot.Subtotal, tot.Discount, tot.Tax, tot.GrandTotal
	return nil
}

func (row *txRow) line(id uuid.UUID) int {
	return slices.IndexFunc(row.lines, func(l lineJSON) bool { return l.LineID == id })
}

func (row *txRow) payment(id uuid.UUID) *paymentJSON {
	i := slices.IndexFunc(row.payments, func(p paymentJSON) bool { return p.PaymentID == id })
	if i < 0 {
		return nil
	}
	return &row.payments[i]
}
