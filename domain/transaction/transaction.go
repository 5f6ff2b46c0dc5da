package transaction

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"pos/domain/money"
)

// Transaction is the sale aggregate. The zero value is a transaction that
// does not exist yet: Open is the only command it accepts, and Apply of a
// TransactionOpened is the only event. Fields are unexported; state changes
// only through Apply, and commands only read it.
//
// A Transaction is not safe for concurrent use; load one per command.
type Transaction struct {
	id               uuid.UUID
	merchantID       uuid.UUID
	branchID         uuid.UUID
	code             string
	currency         money.Currency
	pricesIncludeTax bool
	openedAt         time.Time
	openedBy         string

	status  Status
	version uint64

	lines     []Line
	discounts []Discount
	totals    Totals
	payments  []Payment
	refunds   []IssuedRefund

	settled   money.Amount // Σ Applied of settled payments
	pending   money.Amount // Σ Applied of pending payments
	paidTotal money.Amount // from TransactionPaid
	refunded  money.Amount // Σ refunds

	// ids holds every line, discount, payment and refund id ever used in
	// this transaction (removed lines included), so a client-supplied id
	// is never reused for something else.
	ids map[uuid.UUID]struct{}
}

// Load rebuilds a transaction from its history, oldest first. It fails with
// ErrInvalidHistory if an event does not apply; an empty history gives the
// zero Transaction (one that does not exist).
func Load(history []Event) (*Transaction, error) {
	t := &Transaction{}
	for _, e := range history {
		if err := t.Apply(e); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// ID returns the transaction's id.
func (t *Transaction) ID() uuid.UUID { return t.id }

// MerchantID returns the merchant that owns the transaction.
func (t *Transaction) MerchantID() uuid.UUID { return t.merchantID }

// BranchID returns the branch where the sale is made.
func (t *Transaction) BranchID() uuid.UUID { return t.branchID }

// Code returns the human-readable code given at opening.
func (t *Transaction) Code() string { return t.code }

// Currency returns the currency of every amount of the transaction.
func (t *Transaction) Currency() money.Currency { return t.currency }

// PricesIncludeTax reports whether unit prices include tax.
func (t *Transaction) PricesIncludeTax() bool { return t.pricesIncludeTax }

// OpenedAt returns when the transaction was opened (the command's time).
func (t *Transaction) OpenedAt() time.Time { return t.openedAt }

// OpenedBy returns who opened the transaction.
func (t *Transaction) OpenedBy() string { return t.openedBy }

// Status returns the current status; "" for a transaction not opened.
func (t *Transaction) Status() Status { return t.status }

// Version returns the number of events applied: 0 for a transaction that
// does not exist, 1 after opening. It is the stream version to expect when
// appending the next command's events.
func (t *Transaction) Version() uint64 { return t.version }

// Clone returns a deep copy of t: applying events to either leaves the
// other as it was.
func (t *Transaction) Clone() *Transaction {
	c := *t
	c.lines = slices.Clone(t.lines)
	c.discounts = slices.Clone(t.discounts)
	c.payments = slices.Clone(t.payments)
	c.refunds = slices.Clone(t.refunds)
	c.ids = maps.Clone(t.ids)
	return &c
}

// Exists reports whether the transaction has been opened.
func (t *Transaction) Exists() bool { return t.version > 0 }

// Lines returns a copy of the current lines, in the order they were added.
func (t *Transaction) Lines() []Line { return slices.Clone(t.lines) }

// Discounts returns a copy of the applied discounts, oldest first.
func (t *Transaction) Discounts() []Discount { return slices.Clone(t.discounts) }

// Totals returns the live totals of a draft, or the totals frozen at
// checkout afterwards.
func (t *Transaction) Totals() Totals { return t.totals }

// Payments returns a copy of every payment added, declined ones included,
// oldest first.
func (t *Transaction) Payments() []Payment { return slices.Clone(t.payments) }

// Paid returns the amount applied by settled payments.
func (t *Transaction) Paid() money.Amount { return t.settled }

// Pending returns the amount reserved by payments awaiting the gateway.
func (t *Transaction) Pending() money.Amount { return t.pending }

// Due returns what remains to be tendered while the transaction awaits
// payment: the grand total minus settled and pending payments. It is 0 in
// every other status.
func (t *Transaction) Due() money.Amount {
	if t.status != StatusPendingPayment {
		return 0
	}
	return t.due()
}

// Refunded returns the total refunded so far.
func (t *Transaction) Refunded() money.Amount { return t.refunded }

// Refunds returns the refunds issued so far, oldest first (a copy).
func (t *Transaction) Refunds() []IssuedRefund { return slices.Clone(t.refunds) }

// Refundable returns what can still be refunded: paid minus refunded, once
// the transaction is paid; 0 before.
func (t *Transaction) Refundable() money.Amount {
	switch t.status {
	case StatusPaid, StatusCompleted, StatusPartiallyRefunded:
		return t.paidTotal - t.refunded
	}
	return 0
}

// due is grand total − settled − pending. Apply keeps settled + pending ≤
// grand total for every history the commands produce; for any other it
// reports 0 rather than a negative amount.
func (t *Transaction) due() money.Amount {
	d := t.totals.GrandTotal - t.settled - t.pending
	return max(d, 0)
}

// Apply changes the state by one event of the transaction's history and
// increments the version. Events are applied as recorded, without checking
// business rules again (they held when the event was decided), but an event
// that cannot apply at all (an unknown line, a second opening, a sum that
// overflows) is ErrInvalidHistory and leaves the state unchanged.
func (t *Transaction) Apply(e Event) error {
	if e == nil {
		return fmt.Errorf("%w: nil event at version %d", ErrInvalidHistory, t.version+1)
	}
	if err := t.apply(e); err != nil {
		return fmt.Errorf("%w: %s at version %d: %w", ErrInvalidHistory, e.EventType(), t.version+1, err)
	}
	t.version++
	return nil
}

var (
	errNotOpened  = errors.New("the transaction is not opened")
	errIDReused   = errors.New("id already used")
	errUnknownID  = errors.New("unknown id")
	errNotPending = errors.New("payment is not pending")
)

func (t *Transaction) apply(e Event) error {
	if _, opening := e.(TransactionOpened); !opening && t.version == 0 {
		return errNotOpened
	}
	switch e := e.(type) {
	case TransactionOpened:
		if t.version != 0 {
			return errors.New("the transaction is already opened")
		}
		t.id, t.merchantID, t.branchID = e.TransactionID, e.MerchantID, e.BranchID
		t.code, t.currency, t.pricesIncludeTax = e.Code, e.Currency, e.PricesIncludeTax
		t.openedAt, t.openedBy = e.OpenedAt, e.OpenedBy
		t.status = StatusDraft
		t.totals = Totals{Currency: e.Currency}
		t.ids = make(map[uuid.UUID]struct{})

	case ItemAdded:
		if t.used(e.LineID) {
			return fmt.Errorf("line %s: %w", e.LineID, errIDReused)
		}
		lines := append(slices.Clone(t.lines), Line{
			LineID: e.LineID, SKU: e.SKU, Name: e.Name, Qty: e.Qty,
			UnitPrice: e.UnitPrice, TaxRateBps: e.TaxRateBps,
		})
		if err := t.setLive(lines, t.discounts); err != nil {
			return err
		}
		t.ids[e.LineID] = struct{}{}

	case ItemRemoved:
		i := t.lineIndex(e.LineID)
		if i < 0 {
			return fmt.Errorf("line %s: %w", e.LineID, errUnknownID)
		}
		if err := t.setLive(slices.Delete(slices.Clone(t.lines), i, i+1), t.discounts); err != nil {
			return err
		}

	case DiscountApplied:
		if t.used(e.DiscountID) {
			return fmt.Errorf("discount %s: %w", e.DiscountID, errIDReused)
		}
		discounts := append(slices.Clone(t.discounts), Discount{
			DiscountID: e.DiscountID, Kind: e.Kind, Bps: e.Bps, Amount: e.Amount, Reason: e.Reason,
		})
		if err := t.setLive(t.lines, discounts); err != nil {
			return err
		}
		t.ids[e.DiscountID] = struct{}{}

	case CheckedOut:
		if len(e.Lines) != len(t.lines) {
			return fmt.Errorf("%d frozen lines for %d lines", len(e.Lines), len(t.lines))
		}
		lines := slices.Clone(t.lines)
		seen := make(map[uuid.UUID]struct{}, len(e.Lines))
		for _, f := range e.Lines {
			i := t.lineIndex(f.LineID)
			if _, dup := seen[f.LineID]; i < 0 || dup {
				return fmt.Errorf("line %s: %w", f.LineID, errUnknownID)
			}
			seen[f.LineID] = struct{}{}
			l := &lines[i]
			l.Gross, l.Discount, l.Net, l.Tax, l.Total = f.Gross, f.Discount, f.Net, f.Tax, f.Total
		}
		t.lines = lines
		t.totals = Totals{Currency: e.Currency, Subtotal: e.Subtotal, Discount: e.Discount, Tax: e.Tax, GrandTotal: e.GrandTotal}
		t.status = StatusPendingPayment

	case PaymentAdded:
		if t.used(e.PaymentID) {
			return fmt.Errorf("payment %s: %w", e.PaymentID, errIDReused)
		}
		settled, pending := t.settled, t.pending
		var err error
		switch e.Status {
		case PaymentStatusSettled:
			settled, err = settled.Add(e.Applied)
		case PaymentStatusPending:
			pending, err = pending.Add(e.Applied)
		default:
			err = fmt.Errorf("payment %s added as %q", e.PaymentID, e.Status)
		}
		if err != nil {
			return err
		}
		t.payments = append(t.payments, Payment{
			PaymentID: e.PaymentID, Method: e.Method, Amount: e.Amount,
			Applied: e.Applied, Change: e.Change, Status: e.Status,
		})
		t.settled, t.pending = settled, pending
		t.ids[e.PaymentID] = struct{}{}

	case PaymentConfirmed:
		p, err := t.pendingPayment(e.PaymentID)
		if err != nil {
			return err
		}
		settled, err := t.settled.Add(p.Applied)
		if err != nil {
			return err
		}
		pending, err := t.pending.Sub(p.Applied)
		if err != nil {
			return err
		}
		t.settled, t.pending = settled, pending
		p.Status, p.GatewayRef = PaymentStatusSettled, e.GatewayRef

	case PaymentDeclined:
		p, err := t.pendingPayment(e.PaymentID)
		if err != nil {
			return err
		}
		pending, err := t.pending.Sub(p.Applied)
		if err != nil {
			return err
		}
		t.pending = pending
		p.Status, p.DeclineReason = PaymentStatusDeclined, e.Reason

	case TransactionPaid:
		t.paidTotal = e.PaidTotal
		t.status = StatusPaid

	case TransactionCompleted:
		t.status = StatusCompleted

	case TransactionVoided:
		t.status = StatusVoided

	case CheckoutAbandoned:
		if t.status != StatusDraft {
			return fmt.Errorf("checkout abandoned while %s", t.status)
		}

	case RefundIssued:
		if t.used(e.RefundID) {
			return fmt.Errorf("refund %s: %w", e.RefundID, errIDReused)
		}
		if e.Status != StatusRefunded && e.Status != StatusPartiallyRefunded {
			return fmt.Errorf("refund %s leaves status %q", e.RefundID, e.Status)
		}
		refunded, err := t.refunded.Add(e.Amount)
		if err != nil {
			return err
		}
		lines := slices.Clone(t.lines)
		for _, r := range e.Lines {
			i := t.lineIndex(r.LineID)
			if i < 0 {
				return fmt.Errorf("line %s: %w", r.LineID, errUnknownID)
			}
			l := &lines[i]
			if r.Qty < 0 || r.Qty > l.Qty-l.RefundedQty {
				return fmt.Errorf("line %s: %d units refunded, %d of %d left", r.LineID, r.Qty, l.Qty-l.RefundedQty, l.Qty)
			}
			if l.RefundedAmount, err = l.RefundedAmount.Add(r.Amount); err != nil {
				return err
			}
			l.RefundedQty += r.Qty
		}
		t.lines, t.refunded, t.status = lines, refunded, e.Status
		t.refunds = append(t.refunds, IssuedRefund{RefundID: e.RefundID, Amount: e.Amount, Reason: e.Reason})
		t.ids[e.RefundID] = struct{}{}

	default:
		return fmt.Errorf("event type %T is not a transaction event", e)
	}
	return nil
}

// setLive recomputes a draft's figures for lines and discounts and stores
// all three, or changes nothing when they cannot be computed.
func (t *Transaction) setLive(lines []Line, discounts []Discount) error {
	totals, figured, err := computeTotals(t.currency, t.pricesIncludeTax, lines, discounts)
	if err != nil {
		return err
	}
	t.lines, t.discounts, t.totals = figured, discounts, totals
	return nil
}

func (t *Transaction) used(id uuid.UUID) bool {
	_, ok := t.ids[id]
	return ok
}

func (t *Transaction) lineIndex(id uuid.UUID) int {
	return slices.IndexFunc(t.lines, func(l Line) bool { return l.LineID == id })
}

func (t *Transaction) payment(id uuid.UUID) *Payment {
	i := slices.IndexFunc(t.payments, func(p Payment) bool { return p.PaymentID == id })
	if i < 0 {
		return nil
	}
	return &t.payments[i]
}

func (t *Transaction) pendingPayment(id uuid.UUID) (*Payment, error) {
	p := t.payment(id)
	if p == nil {
		return nil, fmt.Errorf("payment %s: %w", id, errUnknownID)
	}
	if p.Status != PaymentStatusPending {
		return nil, fmt.Errorf("payment %s is %s: %w", id, p.Status, errNotPending)
	}
	return p, nil
}
