package api

// Wire shapes of the transaction and settings endpoints (API.md). Request
// fields are pointers where "absent" and "zero" differ; decode refuses
// unknown fields. Numbers are int64 minor units or basis points.

type openTransactionRequest struct {
	BranchID      string  `json:"branch_id"`
	TransactionID *string `json:"transaction_id,omitempty"`
	Currency      *string `json:"currency,omitempty"`
}

type addItemRequest struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	Qty        int64  `json:"qty"`
	UnitPrice  *int64 `json:"unit_price"`
	TaxRateBps *int64 `json:"tax_rate_bps,omitempty"`
	LineID     string `json:"line_id,omitempty"`
	// Currency, when sent, must be the transaction's (422 currency_mismatch).
	Currency *string `json:"currency,omitempty"`
}

type discountRequest struct {
	Kind   string `json:"kind"`
	Bps    *int64 `json:"bps,omitempty"`
	Amount *int64 `json:"amount,omitempty"`
	Reason string `json:"reason"`
}

type emptyRequest struct{}

type paymentRequest struct {
	Method    string  `json:"method"`
	Amount    int64   `json:"amount"`
	PaymentID *string `json:"payment_id,omitempty"`
	// Currency, when sent, must be the transaction's (422 currency_mismatch).
	Currency *string `json:"currency,omitempty"`
}

type confirmRequest struct {
	GatewayRef string `json:"gateway_ref"`
}

type reasonRequest struct {
	Reason string `json:"reason"`
}

type refundLineRequest struct {
	LineID string `json:"line_id"`
	Qty    int64  `json:"qty"`
}

type refundRequest struct {
	Reason   string              `json:"reason"`
	Amount   *int64              `json:"amount,omitempty"`
	Lines    []refundLineRequest `json:"lines,omitempty"`
	RefundID *string             `json:"refund_id,omitempty"`
}

// settingsRequest is a PUT: every field is required.
type settingsRequest struct {
	Currency           string `json:"currency"`
	PricesIncludeTax   *bool  `json:"prices_include_tax"`
	AllowNegativeStock *bool  `json:"allow_negative_stock"`
	Timezone           string `json:"timezone"`
}

type totalsView struct {
	Currency   string `json:"currency"`
	Subtotal   int64  `json:"subtotal"`
	Discount   int64  `json:"discount"`
	Tax        int64  `json:"tax"`
	GrandTotal int64  `json:"grand_total"`
}

// transactionAnswer is every transaction command's answer: the fields API.md
// requires plus the transaction's state after the command.
type transactionAnswer struct {
	commandResult
	Code   string     `json:"code"`
	Status string     `json:"status"`
	Totals totalsView `json:"totals"`
	Paid   int64      `json:"paid"`
	Due    int64      `json:"due"`
	LineID string     `json:"line_id,omitempty"`

	PaymentID     string `json:"payment_id,omitempty"`
	PaymentStatus string `json:"payment_status,omitempty"`
	Applied       *int64 `json:"applied,omitempty"`
	Change        *int64 `json:"change,omitempty"`

	RefundID string `json:"refund_id,omitempty"`
	Amount   *int64 `json:"amount,omitempty"`
	Refunded int64  `json:"refunded"`
}

type settingsView struct {
	Currency           string `json:"currency"`
	PricesIncludeTax   bool   `json:"prices_include_tax"`
	AllowNegativeStock bool   `json:"allow_negative_stock"`
	Timezone           string `json:"timezone"`
}

type settingsAnswer struct {
	commandResult
	settingsView
}
