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
// stream order, and this projector relies on it: it reads the rows a batch
// of events touches, applies the events in memory and writes the rows back
// (ApplyBatch), so an event applied twice would count twice.
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

// Tables returns the read-model tables it writes (Tabled).
func (Transactions) Tables() []string { return []string{"rm_transactions"} }

// Reads returns nothing: it reads only its own tables (Tabled).
func (Transactions) Reads() []string { return nil }

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
	// last is the last event applied to the row, whose time, version and
	// position it is saved with; nil while the batch has not changed it.
	last *eventstore.RecordedEvent
}

// Apply implements Projector as ApplyBatch of one event, so that a live
// delivery and a replay share one code path.
func (p Transactions) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	return p.ApplyBatch(ctx, tx, []eventstore.RecordedEvent{e})
}

// ApplyBatch implements BatchProjector in two statements, however many
// events, so that a replay costs per row rather than per event: it reads
// every row the events touch (one SELECT), applies the events in memory in
// order, then writes every row it changed (one upsert), each with its last
// event's time, version and position. A bad event fails the whole batch
// before anything is written.
//
// The events must be of one merchant, each once and in stream order; the
// Runner sees to it (redeliveries included), and nothing here would notice
// an event applied twice.
func (Transactions) ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	merchant, ids, decoded, err := decodeBatch(ctx, events)
	if err != nil || len(events) == 0 {
		return err
	}
	rows, err := loadTxRows(ctx, tx, merchant, distinct(ids))
	if err != nil {
		return err
	}
	var changed []*txRow // in order of first change
	for i, ev := range decoded {
		e, id := &events[i], ids[i]
		row := rows[id]
		if o, ok := ev.(transaction.TransactionOpened); ok {
			if row != nil {
				// The insert of the one-statement-per-event projector failed
				// on the primary key here.
				return fmt.Errorf("%s %s@%d: transaction %s: %w", e.Type, e.Stream, e.Version, id, errOpenedTwice)
			}
			row = &txRow{merchant: merchant, id: id, code: o.Code, branch: o.BranchID, status: transaction.StatusDraft,
				currency: o.Currency, inclusive: o.PricesIncludeTax, openedAt: o.OpenedAt}
			rows[id] = row
		} else {
			if row == nil {
				return fmt.Errorf("%s %s@%d: transaction %s: %w", e.Type, e.Stream, e.Version, id, errNoRow)
			}
			if err := row.apply(ev); err != nil {
				return fmt.Errorf("%s %s@%d: %w", e.Type, e.Stream, e.Version, err)
			}
		}
		if row.last == nil {
			changed = append(changed, row)
		}
		row.last = e
	}
	return saveTxRows(ctx, tx, merchant, changed)
}

// decodeBatch decodes a batch of transaction events and returns their
// merchant and each event's transaction id (its stream's). A batch of two
// merchants is refused: row-level security shows one merchant's rows only.
// Within one of the Runner's transactions each event is decoded once,
// however many projectors read it (see decodeMemo).
func decodeBatch(ctx context.Context, events []eventstore.RecordedEvent) (merchant uuid.UUID, ids []uuid.UUID, decoded []transaction.Event, err error) {
	memo, _ := ctx.Value(decodeMemoKey{}).(decodeMemo)
	ids, decoded = make([]uuid.UUID, len(events)), make([]transaction.Event, len(events))
	for i, e := range events {
		if ev, ok := memo[e.ID].(transaction.Event); ok {
			decoded[i] = ev
		} else if decoded[i], err = transaction.Decode(e.Type, e.Data); err != nil {
			return uuid.Nil, nil, nil, fmt.Errorf("%s@%d: %w", e.Stream, e.Version, err)
		} else if memo != nil {
			memo[e.ID] = decoded[i]
		}
		m, id, err := aggregateOf(e)
		if err != nil {
			return uuid.Nil, nil, nil, err
		}
		if i == 0 {
			merchant = m
		} else if m != merchant {
			return uuid.Nil, nil, nil, fmt.Errorf("projections: batch mixes merchants %s and %s (%s@%d)", merchant, m, e.Stream, e.Version)
		}
		ids[i] = id
	}
	return merchant, ids, decoded, nil
}

// distinct returns ids without repetitions, in order of first appearance.
func distinct(ids []uuid.UUID) []uuid.UUID {
	seen := make(map[uuid.UUID]bool, len(ids))
	out := make([]uuid.UUID, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
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

// errOpenedTwice reports the opening of a transaction that already has a
// row: bookkeeping and read model disagree the other way.
var errOpenedTwice = errors.New("projections: transaction opened again, its read-model row exists (was the bookkeeping emptied without the read model?)")

// loadTxRows reads the merchant's rows of ids, in one statement (or takes
// them preloaded); ids without a row have no entry.
func loadTxRows(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]*txRow, error) {
	if rows, ok := takePreload[uuid.UUID, map[uuid.UUID]*txRow](ctx, merchant, ids); ok {
		return rows, nil
	}
	rows, err := tx.Query(ctx, txRowsSQL, merchant, uuidArg(ids...))
	if err != nil {
		return nil, fmt.Errorf("read rm_transactions: %w", err)
	}
	return scanTxRows(merchant)(rows)
}

// preload implements preloader: the rows of the events' transactions.
func (Transactions) preload(_ context.Context, b *pgx.Batch, merchant uuid.UUID, events []eventstore.RecordedEvent) any {
	ids, ok := aggregatesOf(merchant, events)
	if !ok {
		return nil // ApplyBatch refuses the batch
	}
	return newPreload[uuid.UUID, map[uuid.UUID]*txRow](merchant, ids).queue(b, scanTxRows(merchant), txRowsSQL, merchant, uuidArg(ids...))
}

const txRowsSQL = `
        SELECT transaction_id, code, branch_id, status, currency, prices_include_tax, subtotal, discount, tax, grand_total,
               paid, refunded, lines, discounts, payments, refunds, opened_at
        FROM rm_transactions WHERE merchant_id = $1 AND transaction_id = ANY($2::uuid[])`

// scanTxRows returns what reads txRowsSQL's rows, by transaction id.
func scanTxRows(merchant uuid.UUID) func(pgx.Rows) (map[uuid.UUID]*txRow, error) {
	return func(rows pgx.Rows) (map[uuid.UUID]*txRow, error) {
		defer rows.Close()
		out := map[uuid.UUID]*txRow{}
		for rows.Next() {
			row := &txRow{merchant: merchant}
			var status, currency string
			var lines, discounts, payments, refunds []byte
			if err := rows.Scan((*[16]byte)(&row.id), &row.code, (*[16]byte)(&row.branch), &status, &currency, &row.inclusive, &row.subtotal, &row.discount,
				&row.tax, &row.grandTotal, &row.paid, &row.refunded, &lines, &discounts, &payments, &refunds, &row.openedAt); err != nil {
				return nil, fmt.Errorf("read rm_transactions: %w", err)
			}
			row.status, row.currency = transaction.Status(status), money.Currency(currency)
			for _, c := range []struct {
				data []byte
				into any
			}{{lines, &row.lines}, {discounts, &row.discounts}, {payments, &row.payments}, {refunds, &row.refunds}} {
				if err := json.Unmarshal(c.data, c.into); err != nil {
					return nil, fmt.Errorf("decode rm_transactions row %s: %w", row.id, err)
				}
			}
			out[row.id] = row
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read rm_transactions: %w", err)
		}
		return out, nil
	}
}

// saveTxRows writes rows in one upsert: a row opened in the batch is
// inserted, any other updated (its code, branch, tax mode and opening time
// never change). Each row is in it once, as ON CONFLICT requires.
func saveTxRows(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, rows []*txRow) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	var (
		ids, branches                               = make([][16]byte, n), make([][16]byte, n)
		codes, statuses, currencies                 = make([]string, n), make([]string, n), make([]string, n)
		inclusive                                   = make([]bool, n)
		subtotals, discounts, taxes, grands         = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		paid, refunded                              = make([]int64, n), make([]int64, n)
		linesJS, discountsJS, paymentsJS, refundsJS = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		openedAt, updatedAt                         = make([]time.Time, n), make([]time.Time, n)
		versions, majors, minors                    = make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for i, row := range rows {
		var errs [4]error
		linesJS[i], errs[0] = encodeJSON(nonNil(row.lines))
		discountsJS[i], errs[1] = encodeJSON(nonNil(row.discounts))
		paymentsJS[i], errs[2] = encodeJSON(nonNil(row.payments))
		refundsJS[i], errs[3] = encodeJSON(nonNil(row.refunds))
		if err := errors.Join(errs[:]...); err != nil {
			return fmt.Errorf("encode rm_transactions row %s: %w", row.id, err)
		}
		ids[i], branches[i], codes[i] = row.id, row.branch, row.code
		statuses[i], currencies[i], inclusive[i] = string(row.status), string(row.currency), row.inclusive
		subtotals[i], discounts[i], taxes[i], grands[i] = int64(row.subtotal), int64(row.discount), int64(row.tax), int64(row.grandTotal)
		paid[i], refunded[i] = int64(row.paid), int64(row.refunded)
		openedAt[i], updatedAt[i] = row.openedAt, row.last.RecordedAt
		versions[i], majors[i], minors[i] = int64(row.last.Version), int64(row.last.Position.Major), int64(row.last.Position.Minor)
	}
	_, err := tx.Exec(ctx, `
        INSERT INTO rm_transactions AS t (merchant_id, transaction_id, code, branch_id, status, currency, prices_include_tax,
            subtotal, discount, tax, grand_total, paid, refunded, lines, discounts, payments, refunds,
            opened_at, updated_at, version, pos_major, pos_minor)
        SELECT $1::uuid, v.id, v.code, v.branch, v.status, v.currency, v.inclusive,
            v.subtotal, v.discount, v.tax, v.grand, v.paid, v.refunded, v.lines::jsonb, v.discounts::jsonb, v.payments::jsonb, v.refunds::jsonb,
            v.opened_at, v.updated_at, v.version, v.pos_major, v.pos_minor
        FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::boolean[],
            $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[],
            $14::text[], $15::text[], $16::text[], $17::text[],
            $18::timestamptz[], $19::timestamptz[], $20::bigint[], $21::bigint[], $22::bigint[])
            AS v(id, code, branch, status, currency, inclusive, subtotal, discount, tax, grand, paid, refunded,
                 lines, discounts, payments, refunds, opened_at, updated_at, version, pos_major, pos_minor)
        ON CONFLICT (merchant_id, transaction_id) DO UPDATE SET status = excluded.status, currency = excluded.currency,
            subtotal = excluded.subtotal, discount = excluded.discount, tax = excluded.tax, grand_total = excluded.grand_total,
            paid = excluded.paid, refunded = excluded.refunded, lines = excluded.lines, discounts = excluded.discounts,
            payments = excluded.payments, refunds = excluded.refunds,
            updated_at = excluded.updated_at, version = excluded.version, pos_major = excluded.pos_major, pos_minor = excluded.pos_minor`,
		merchant, ids, codes, branches, statuses, currencies, inclusive,
		subtotals, discounts, taxes, grands, paid, refunded,
		linesJS, discountsJS, paymentsJS, refundsJS,
		openedAt, updatedAt, versions, majors, minors)
	if err != nil {
		return fmt.Errorf("upsert rm_transactions: %w", err)
	}
	return nil
}

// uuidArg returns ids as pgx encodes a uuid[] natively on any pool (on one
// without pgpool's uuid codec, uuid.UUID goes through its driver.Valuer, as
// text, which costs more).
func uuidArg(ids ...uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

func encodeJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
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
