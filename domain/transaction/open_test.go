package transaction_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/domain/money"
	tx "pos/domain/transaction"
)

func TestOpen(t *testing.T) {
	jakarta := time.FixedZone("WIB", 7*3600)
	with := func(f func(*tx.Open)) command {
		c := validOpen()
		f(&c)
		return open(c)
	}
	run(t, []scenario{
		{
			name: "opens a draft",
			when: open(validOpen()),
			then: []tx.Event{evOpened},
		},
		{
			name: "stores the time in UTC and keeps the tax mode",
			when: with(func(c *tx.Open) {
				c.At = t0.In(jakarta)
				c.PricesIncludeTax = true
				c.Currency = "USD"
			}),
			then: []tx.Event{tx.TransactionOpened{TransactionID: txID, MerchantID: merchantID, BranchID: branchID, Code: "T-0001", Currency: "USD", PricesIncludeTax: true, OpenedAt: t0, OpenedBy: "cashier-1"}},
		},
		{name: "an existing transaction refuses", given: hist(evOpened), when: open(validOpen()), wantErr: tx.ErrAlreadyExists},
		{name: "a voided transaction refuses", given: histVoided, when: open(validOpen()), wantErr: tx.ErrAlreadyExists},
		{name: "nil transaction id", when: with(func(c *tx.Open) { c.TransactionID = uuid.Nil }), wantErr: tx.ErrInvalid, wantField: "transaction_id"},
		{name: "nil merchant", when: with(func(c *tx.Open) { c.MerchantID = uuid.Nil }), wantErr: tx.ErrInvalid, wantField: "merchant_id"},
		{name: "nil branch", when: with(func(c *tx.Open) { c.BranchID = uuid.Nil }), wantErr: tx.ErrInvalid, wantField: "branch_id"},
		{name: "empty code", when: with(func(c *tx.Open) { c.Code = " " }), wantErr: tx.ErrInvalid, wantField: "code"},
		{name: "code too long", when: with(func(c *tx.Open) { c.Code = string(make([]byte, tx.MaxCodeLen+1)) }), wantErr: tx.ErrInvalid, wantField: "code"},
		{name: "no opener", when: with(func(c *tx.Open) { c.By = "" }), wantErr: tx.ErrInvalid, wantField: "opened_by"},
		{name: "no time", when: with(func(c *tx.Open) { c.At = time.Time{} }), wantErr: tx.ErrInvalid, wantField: "at"},
		{name: "no currency", when: with(func(c *tx.Open) { c.Currency = "" }), wantErr: money.ErrInvalidCurrency, wantField: "currency"},
		{name: "lower-case currency", when: with(func(c *tx.Open) { c.Currency = "idr" }), wantErr: tx.ErrInvalid, wantField: "currency"},
		{name: "not a currency", when: with(func(c *tx.Open) { c.Currency = "XXX" }), wantErr: tx.ErrInvalid, wantField: "currency"},
	})
}
