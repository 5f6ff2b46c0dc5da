package transaction_test

import (
	"testing"
	"time"

	tx "pos/domain/transaction"
)

func abandon(reason string, when time.Time) command {
	return func(a *tx.Transaction) ([]tx.Event, error) {
		return a.AbandonCheckout(tx.AbandonCheckout{Reason: reason, At: when})
	}
}

func TestAbandonCheckout(t *testing.T) {
	evAbandoned := tx.CheckoutAbandoned{Reason: "checkout failed", At: at(3)}
	run(t, []scenario{
		{name: "a draft takes the marker", given: histDraft, when: abandon("checkout failed", at(3)), then: []tx.Event{evAbandoned}},
		{name: "twice is fine: each release is marked", given: hist(histDraft, evAbandoned), when: abandon("checkout failed", at(3)), then: []tx.Event{evAbandoned}},
		{name: "the draft can still be checked out", given: hist(histDraft, evAbandoned), when: checkout(), then: []tx.Event{evCheckout}},
		{name: "a pending sale refuses", given: histPending, when: abandon("x", at(3)), wantErr: tx.ErrInvalidState},
		{name: "a paid sale refuses", given: histPaid, when: abandon("x", at(3)), wantErr: tx.ErrInvalidState},
		{name: "a voided sale refuses", given: histVoided, when: abandon("x", at(3)), wantErr: tx.ErrInvalidState},
		{name: "a missing sale is not found", given: histNone, when: abandon("x", at(3)), wantErr: tx.ErrNotFound},
		{name: "no reason", given: histDraft, when: abandon(" ", at(3)), wantErr: tx.ErrInvalid, wantField: "reason"},
		{name: "no time", given: histDraft, when: abandon("x", time.Time{}), wantErr: tx.ErrInvalid, wantField: "at"},
	})
}
