package transaction

import (
	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/money"
)

// Status is where a transaction is in its life (SPEC §4.1).
type Status string

// The statuses. The zero Status ("") is a transaction that has not been
// opened.
const (
	StatusDraft             Status = "draft"
	StatusPendingPayment    Status = "pending_payment"
	StatusPaid              Status = "paid"
	StatusCompleted         Status = "completed"
	StatusVoided            Status = "voided"
	StatusRefunded          Status = "refunded"
	StatusPartiallyRefunded Status = "partially_refunded"
)

// Method is a payment method, spelled as on the wire.
type Method string

// The payment methods. Only cash settles at once; the others wait for the
// gateway's confirmation.
const (
	MethodCash    Method = "CASH"
	MethodCard    Method = "CARD"
	MethodQRIS    Method = "QRIS"
	MethodEWallet Method = "EWALLET"
)

// Valid reports whether m is one of the four methods.
func (m Method) Valid() bool {
	switch m {
	case MethodCash, MethodCard, MethodQRIS, MethodEWallet:
		return true
	}
	return false
}

// PaymentStatus is where a payment is: cash is settled when added; the
// other methods are pending until confirmed (settled) or declined.
type PaymentStatus string

// The payment statuses.
const (
	PaymentStatusSettled  PaymentStatus = "settled"
	PaymentStatusPending  PaymentStatus = "pending"
	PaymentStatusDeclined PaymentStatus = "declined"
)

// DiscountKind says how a discount's size is given.
type DiscountKind string

// The discount kinds.
const (
	// DiscountPercent is Bps basis points of the subtotal.
	DiscountPercent DiscountKind = "percent"
	// DiscountAmount is a fixed Amount in minor units.
	DiscountAmount DiscountKind = "amount"
)

// Limits that keep one transaction's events and state small. They are far
// above any real sale; exceeding one is a validation error.
const (
	// MaxLines is the most lines a transaction holds (and a refund lists).
	MaxLines = 500
	// MaxDiscounts is the most discounts applied to one transaction.
	MaxDiscounts = 50
	// MaxPayments is the most payments added, declined ones included.
	MaxPayments = 100
	// MaxRefunds is the most refunds issued on one transaction.
	MaxRefunds = 100
	// MaxCodeLen is the longest human-readable code, in characters.
	MaxCodeLen = 64
	// MaxSKULen is the longest SKU, in characters (domain.MaxSKULen).
	MaxSKULen = domain.MaxSKULen
	// MaxQty is the most units of a line (domain.MaxQty: what a stock
	// ledger takes at checkout).
	MaxQty = domain.MaxQty
	// MaxNameLen is the longest item name, in characters.
	MaxNameLen = 200
	// MaxReasonLen is the longest reason (discount, void, refund, decline).
	MaxReasonLen = 500
	// MaxGatewayRefLen is the longest gateway reference.
	MaxGatewayRefLen = 200
	// MaxActorLen is the longest actor id (the token's sub).
	MaxActorLen = domain.MaxActorLen
	// MaxRateBps is the highest tax rate and percent discount: 100 %.
	MaxRateBps = money.BpsDenominator
)

// Line is one sale line as responses show it. The figures (Gross to Total)
// are live while the transaction is a draft and frozen at checkout.
type Line struct {
	LineID     uuid.UUID
	SKU        string
	Name       string
	Qty        int64
	UnitPrice  money.Amount
	TaxRateBps int64

	// Gross is Qty × UnitPrice.
	Gross money.Amount
	// Discount is this line's share of the transaction's discounts.
	Discount money.Amount
	// Net is Gross − Discount; with tax-inclusive prices it includes Tax.
	Net money.Amount
	// Tax is the tax in Net (inclusive prices) or on top of it (exclusive).
	Tax money.Amount
	// Total is what the customer pays for the line: Net + Tax with
	// exclusive prices, Net with inclusive ones. Refunds by line are
	// fractions of it.
	Total money.Amount

	// RefundedQty and RefundedAmount are what refunds by line have taken
	// back so far (refunds by amount are not attributed to lines).
	RefundedQty    int64
	RefundedAmount money.Amount
}

// Discount is one applied transaction discount.
type Discount struct {
	DiscountID uuid.UUID
	Kind       DiscountKind
	// Bps is set for DiscountPercent, Amount for DiscountAmount.
	Bps    int64
	Amount money.Amount
	Reason string
}

// Payment is one tender as responses show it.
type Payment struct {
	PaymentID uuid.UUID
	Method    Method
	// Amount is what was tendered.
	Amount money.Amount
	// Applied is the part of Amount that pays the sale.
	Applied money.Amount
	// Change is Amount − Applied, handed back (cash only).
	Change money.Amount
	Status PaymentStatus
	// GatewayRef is the gateway's reference once confirmed.
	GatewayRef string
	// DeclineReason is the gateway's reason once declined.
	DeclineReason string
}

// Totals are the transaction's money figures: live in a draft, frozen by
// checkout. GrandTotal − Tax is the pre-tax net in both tax modes.
type Totals struct {
	Currency   money.Currency
	Subtotal   money.Amount
	Discount   money.Amount
	Tax        money.Amount
	GrandTotal money.Amount
}

// IssuedRefund is one refund as responses show it.
type IssuedRefund struct {
	RefundID uuid.UUID
	Amount   money.Amount
	Reason   string
}
