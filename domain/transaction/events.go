package transaction

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"pos/domain/money"
)

// SchemaVersion is the schema version of every event type defined here. An
// incompatible change to an event's JSON raises its version and registers an
// upcaster from the old one (eventstore.Registry), so history is never
// rewritten.
const SchemaVersion = 1

// Event is one fact in a transaction's history. The set is closed: only the
// types in this file implement it. Events are values; their JSON (snake_case
// fields) is the stored form, and EventType is the stored type name.
type Event interface {
	// EventType is the name under which the event is stored, for example
	// "ItemAdded"; Decode takes it back.
	EventType() string
	isTransactionEvent()
}

// TransactionOpened starts a transaction as a draft. Currency and
// PricesIncludeTax are copied from the merchant's settings at that moment, so
// a later change of settings never reprices an open sale.
type TransactionOpened struct {
	TransactionID    uuid.UUID      `json:"transaction_id"`
	MerchantID       uuid.UUID      `json:"merchant_id"`
	BranchID         uuid.UUID      `json:"branch_id"`
	Code             string         `json:"code"`
	Currency         money.Currency `json:"currency"`
	PricesIncludeTax bool           `json:"prices_include_tax"`
	OpenedAt         time.Time      `json:"opened_at"`
	OpenedBy         string         `json:"opened_by"`
}

// ItemAdded adds a line to a draft.
type ItemAdded struct {
	LineID     uuid.UUID    `json:"line_id"`
	SKU        string       `json:"sku"`
	Name       string       `json:"name"`
	Qty        int64        `json:"qty"`
	UnitPrice  money.Amount `json:"unit_price"`
	TaxRateBps int64        `json:"tax_rate_bps"`
	At         time.Time    `json:"at"`
}

// ItemRemoved removes a line from a draft.
type ItemRemoved struct {
	LineID uuid.UUID `json:"line_id"`
	At     time.Time `json:"at"`
}

// DiscountApplied adds a transaction discount to a draft: Bps of the
// subtotal for kind "percent" (Amount 0), or a fixed Amount for kind
// "amount" (Bps 0). Percent discounts follow the subtotal until checkout.
type DiscountApplied struct {
	DiscountID uuid.UUID    `json:"discount_id"`
	Kind       DiscountKind `json:"kind"`
	Bps        int64        `json:"bps"`
	Amount     money.Amount `json:"amount"`
	Reason     string       `json:"reason"`
	At         time.Time    `json:"at"`
}

// CheckedOut freezes the totals and every line's figures; the transaction
// waits for payment. Everything after (payments, refunds, the journal) uses
// these figures, never a recomputation, so a later change of rounding rules
// cannot alter a sale already made.
type CheckedOut struct {
	Subtotal   money.Amount   `json:"subtotal"`
	Discount   money.Amount   `json:"discount"`
	Tax        money.Amount   `json:"tax"`
	GrandTotal money.Amount   `json:"grand_total"`
	Currency   money.Currency `json:"currency"`
	Lines      []LineTotals   `json:"lines"`
	At         time.Time      `json:"at"`
}

// LineTotals are one line's frozen figures in CheckedOut; see Line for their
// meaning.
type LineTotals struct {
	LineID   uuid.UUID    `json:"line_id"`
	Qty      int64        `json:"qty"`
	Gross    money.Amount `json:"gross"`
	Discount money.Amount `json:"discount"`
	Net      money.Amount `json:"net"`
	Tax      money.Amount `json:"tax"`
	Total    money.Amount `json:"total"`
}

// PaymentAdded records a tender. Amount is what was tendered, Applied what
// pays the sale, Change the rest (cash only). Cash is "settled" at once; the
// other methods are "pending" with Applied = Amount.
type PaymentAdded struct {
	PaymentID uuid.UUID     `json:"payment_id"`
	Method    Method        `json:"method"`
	Amount    money.Amount  `json:"amount"`
	Applied   money.Amount  `json:"applied"`
	Change    money.Amount  `json:"change"`
	Status    PaymentStatus `json:"status"`
	At        time.Time     `json:"at"`
}

// PaymentConfirmed settles a pending payment on the gateway's confirmation.
type PaymentConfirmed struct {
	PaymentID  uuid.UUID `json:"payment_id"`
	GatewayRef string    `json:"gateway_ref"`
	At         time.Time `json:"at"`
}

// PaymentDeclined ends a pending payment on the gateway's refusal; it stops
// counting toward the total.
type PaymentDeclined struct {
	PaymentID uuid.UUID `json:"payment_id"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
}

// TransactionPaid records that settled payments cover the grand total
// (PaidTotal, which equals it). It follows the event that completed the
// payment, in the same append.
type TransactionPaid struct {
	PaidTotal money.Amount `json:"paid_total"`
	At        time.Time    `json:"at"`
}

// TransactionCompleted closes a paid sale.
type TransactionCompleted struct {
	At time.Time `json:"at"`
}

// TransactionVoided cancels a sale before completion. PreviousStatus tells
// consumers what to undo: nothing for a draft, the stock reservation for
// pending_payment, the sale itself for paid.
type TransactionVoided struct {
	Reason         string    `json:"reason"`
	PreviousStatus Status    `json:"previous_status"`
	At             time.Time `json:"at"`
}

// RefundIssued gives money back: Amount in total, by lines (with the units
// returned and each line's share) or, with no lines, as a bare amount.
// Status is the transaction's status after the refund (refunded or
// partially_refunded), carried so projections need not recompute it.
type RefundIssued struct {
	RefundID uuid.UUID      `json:"refund_id"`
	Amount   money.Amount   `json:"amount"`
	Reason   string         `json:"reason"`
	Lines    []RefundedLine `json:"lines,omitempty"`
	Status   Status         `json:"status"`
	At       time.Time      `json:"at"`
}

// CheckoutAbandoned marks a draft whose reserved stock is being released
// (see AbandonCheckout). The draft is unchanged.
type CheckoutAbandoned struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// RefundedLine is one line of a refund by lines.
type RefundedLine struct {
	LineID uuid.UUID    `json:"line_id"`
	Qty    int64        `json:"qty"`
	Amount money.Amount `json:"amount"`
}

// EventType returns "TransactionOpened".
func (TransactionOpened) EventType() string { return "TransactionOpened" }

// EventType returns "ItemAdded".
func (ItemAdded) EventType() string { return "ItemAdded" }

// EventType returns "ItemRemoved".
func (ItemRemoved) EventType() string { return "ItemRemoved" }

// EventType returns "DiscountApplied".
func (DiscountApplied) EventType() string { return "DiscountApplied" }

// EventType returns "CheckedOut".
func (CheckedOut) EventType() string { return "CheckedOut" }

// EventType returns "PaymentAdded".
func (PaymentAdded) EventType() string { return "PaymentAdded" }

// EventType returns "PaymentConfirmed".
func (PaymentConfirmed) EventType() string { return "PaymentConfirmed" }

// EventType returns "PaymentDeclined".
func (PaymentDeclined) EventType() string { return "PaymentDeclined" }

// EventType returns "TransactionPaid".
func (TransactionPaid) EventType() string { return "TransactionPaid" }

// EventType returns "TransactionCompleted".
func (TransactionCompleted) EventType() string { return "TransactionCompleted" }

// EventType returns "TransactionVoided".
func (TransactionVoided) EventType() string { return "TransactionVoided" }

// EventType returns "RefundIssued".
func (RefundIssued) EventType() string { return "RefundIssued" }

// EventType returns "CheckoutAbandoned".
func (CheckoutAbandoned) EventType() string { return "CheckoutAbandoned" }

func (TransactionOpened) isTransactionEvent()    {}
func (ItemAdded) isTransactionEvent()            {}
func (ItemRemoved) isTransactionEvent()          {}
func (DiscountApplied) isTransactionEvent()      {}
func (CheckedOut) isTransactionEvent()           {}
func (PaymentAdded) isTransactionEvent()         {}
func (PaymentConfirmed) isTransactionEvent()     {}
func (PaymentDeclined) isTransactionEvent()      {}
func (TransactionPaid) isTransactionEvent()      {}
func (TransactionCompleted) isTransactionEvent() {}
func (TransactionVoided) isTransactionEvent()    {}
func (RefundIssued) isTransactionEvent()         {}
func (CheckoutAbandoned) isTransactionEvent()    {}

// EventTypes returns the stored type name of every transaction event, for
// registering them (all at SchemaVersion) with the event store's registry.
func EventTypes() []string {
	return []string{
		"TransactionOpened", "ItemAdded", "ItemRemoved", "DiscountApplied",
		"CheckedOut", "PaymentAdded", "PaymentConfirmed", "PaymentDeclined",
		"TransactionPaid", "TransactionCompleted", "TransactionVoided", "RefundIssued",
		"CheckoutAbandoned",
	}
}

// TypeName returns the stored type name of e; it is e.EventType(), offered
// as a function for code that maps values to names.
func TypeName(e Event) string { return e.EventType() }

// Decode turns a stored event (its type name and JSON data, already upcast
// to SchemaVersion) into the concrete event value. An unknown type is
// ErrUnknownEvent. Unknown JSON fields are ignored, so that a reader one
// release behind still reads events written with an added optional field.
func Decode(eventType string, data []byte) (Event, error) {
	switch eventType {
	case "TransactionOpened":
		return decode[TransactionOpened](data)
	case "ItemAdded":
		return decode[ItemAdded](data)
	case "ItemRemoved":
		return decode[ItemRemoved](data)
	case "DiscountApplied":
		return decode[DiscountApplied](data)
	case "CheckedOut":
		return decode[CheckedOut](data)
	case "PaymentAdded":
		return decode[PaymentAdded](data)
	case "PaymentConfirmed":
		return decode[PaymentConfirmed](data)
	case "PaymentDeclined":
		return decode[PaymentDeclined](data)
	case "TransactionPaid":
		return decode[TransactionPaid](data)
	case "TransactionCompleted":
		return decode[TransactionCompleted](data)
	case "TransactionVoided":
		return decode[TransactionVoided](data)
	case "RefundIssued":
		return decode[RefundIssued](data)
	case "CheckoutAbandoned":
		return decode[CheckoutAbandoned](data)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownEvent, eventType)
}

func decode[E Event](data []byte) (Event, error) {
	var e E
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("decode %s: %w", e.EventType(), err)
	}
	return e, nil
}
