package transaction_test

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	tx "pos/domain/transaction"
)

// TestStateMachine runs every command in every status (SPEC §4.1) with
// inputs that are valid for the fixtures, and checks that exactly the
// allowed transitions succeed, landing in the expected status, and that
// every other one is refused: ErrNotFound before opening, ErrAlreadyExists
// for a second Open, ErrInvalidState otherwise.
func TestStateMachine(t *testing.T) {
	states := []struct {
		status  tx.Status
		history []tx.Event
	}{
		{"", histNone},
		{tx.StatusDraft, histDraft},
		{tx.StatusPendingPayment, histPending},
		{tx.StatusPaid, histPaid},
		{tx.StatusCompleted, histCompleted},
		{tx.StatusVoided, histVoided},
		{tx.StatusPartiallyRefunded, histPartiallyRefunded},
		{tx.StatusRefunded, histRefunded},
	}
	commands := []struct {
		name string
		cmd  command
		// allowed maps each status the command is allowed in to the status
		// it leads to.
		allowed map[tx.Status]tx.Status
		// given replaces a status's fixture for this command.
		given map[tx.Status][]tx.Event
	}{
		{"Open", open(validOpen()), map[tx.Status]tx.Status{"": tx.StatusDraft}, nil},
		{"AddItem", item(lineB, 1, 1000, 1100), map[tx.Status]tx.Status{tx.StatusDraft: tx.StatusDraft}, nil},
		{"RemoveItem", removeItem(lineA), map[tx.Status]tx.Status{tx.StatusDraft: tx.StatusDraft}, nil},
		{"ApplyDiscount", amountOff(disc1, 1000), map[tx.Status]tx.Status{tx.StatusDraft: tx.StatusDraft}, nil},
		{"Checkout", checkout(), map[tx.Status]tx.Status{tx.StatusDraft: tx.StatusPendingPayment}, nil},
		{"AddPayment", pay(payNew, tx.MethodCash, 1000), map[tx.Status]tx.Status{tx.StatusPendingPayment: tx.StatusPendingPayment}, nil},
		{"ConfirmPayment", confirm(payCard), map[tx.Status]tx.Status{tx.StatusPendingPayment: tx.StatusPendingPayment}, nil},
		{"DeclinePayment", decline(payCard), map[tx.Status]tx.Status{tx.StatusPendingPayment: tx.StatusPendingPayment}, nil},
		{"Complete", complete(), map[tx.Status]tx.Status{tx.StatusPaid: tx.StatusCompleted}, nil},
		{"Void", void("customer left"), map[tx.Status]tx.Status{
			tx.StatusDraft: tx.StatusVoided, tx.StatusPendingPayment: tx.StatusVoided, tx.StatusPaid: tx.StatusVoided,
		}, map[tx.Status][]tx.Event{
			// Awaiting payment with none pending (a pending one is refused
			// first: TestCompleteAndVoid).
			tx.StatusPendingPayment: hist(histDraft, evCheckout),
		}},
		{"Refund", refundAmount(refund2, 1000), map[tx.Status]tx.Status{
			tx.StatusPaid: tx.StatusPartiallyRefunded, tx.StatusCompleted: tx.StatusPartiallyRefunded,
			tx.StatusPartiallyRefunded: tx.StatusPartiallyRefunded,
		}, nil},
	}
	for _, st := range states {
		for _, c := range commands {
			name := string(st.status)
			if name == "" {
				name = "not_opened"
			}
			t.Run(name+"/"+c.name, func(t *testing.T) {
				history := st.history
				if h, ok := c.given[st.status]; ok {
					history = h
				}
				agg := load(t, history)
				if agg.Status() != st.status {
					t.Fatalf("fixture status = %q, want %q", agg.Status(), st.status)
				}
				events, err := c.cmd(agg)
				next, allowed := c.allowed[st.status]
				switch {
				case allowed:
					if err != nil {
						t.Fatalf("err = %v, want the command allowed", err)
					}
					for _, e := range events {
						if err := agg.Apply(e); err != nil {
							t.Fatalf("apply %s: %v", e.EventType(), err)
						}
					}
					if agg.Status() != next {
						t.Errorf("status after = %q, want %q", agg.Status(), next)
					}
				case st.status == "" && c.name != "Open":
					if !errors.Is(err, tx.ErrNotFound) {
						t.Errorf("err = %v, want ErrNotFound", err)
					}
				case c.name == "Open":
					if !errors.Is(err, tx.ErrAlreadyExists) {
						t.Errorf("err = %v, want ErrAlreadyExists", err)
					}
				default:
					if !errors.Is(err, tx.ErrInvalidState) {
						t.Errorf("err = %v, want ErrInvalidState", err)
					}
				}
				if !allowed && events != nil {
					t.Errorf("events %s alongside a refusal", show(events))
				}
			})
		}
	}
}

// TestAccessorsFollowHistory checks the read-only view of each fixture.
func TestAccessorsFollowHistory(t *testing.T) {
	agg := load(t, histPending)
	if agg.ID() != txID || agg.MerchantID() != merchantID || agg.BranchID() != branchID {
		t.Errorf("ids = %s %s %s", agg.ID(), agg.MerchantID(), agg.BranchID())
	}
	if agg.Code() != "T-0001" || agg.Currency() != "IDR" || agg.PricesIncludeTax() || agg.OpenedBy() != "cashier-1" || !agg.OpenedAt().Equal(t0) {
		t.Errorf("header = %q %q %v %q %v", agg.Code(), agg.Currency(), agg.PricesIncludeTax(), agg.OpenedBy(), agg.OpenedAt())
	}
	if got, want := agg.Version(), uint64(len(histPending)); got != want {
		t.Errorf("Version() = %d, want %d", got, want)
	}
	if got := agg.Totals(); got != (tx.Totals{Currency: "IDR", Subtotal: 10000, GrandTotal: 10000}) {
		t.Errorf("Totals() = %+v", got)
	}
	if agg.Paid() != 0 || agg.Pending() != 4000 || agg.Due() != 6000 {
		t.Errorf("paid %d pending %d due %d, want 0 4000 6000", agg.Paid(), agg.Pending(), agg.Due())
	}
	want := []tx.Payment{{PaymentID: payCard, Method: tx.MethodCard, Amount: 4000, Applied: 4000, Status: tx.PaymentStatusPending}}
	if got := agg.Payments(); len(got) != 1 || got[0] != want[0] {
		t.Errorf("Payments() = %+v, want %+v", got, want)
	}

	// The slices returned are copies: changing them changes nothing.
	lines := agg.Lines()
	lines[0].Qty = 99
	agg.Payments()[0].Amount = 1
	if agg.Lines()[0].Qty != 2 || agg.Payments()[0].Amount != 4000 {
		t.Errorf("accessors leak internal state")
	}

	paid := load(t, histPartiallyRefunded)
	if paid.Paid() != 10000 || paid.Refunded() != 3000 || paid.Refundable() != 7000 || paid.Due() != 0 {
		t.Errorf("paid %d refunded %d refundable %d due %d", paid.Paid(), paid.Refunded(), paid.Refundable(), paid.Due())
	}
	var zero tx.Transaction
	if zero.Exists() || zero.Version() != 0 || zero.Status() != "" || zero.ID() != uuid.Nil {
		t.Errorf("zero Transaction should not exist")
	}
	if !paid.Exists() {
		t.Errorf("Exists() = false after opening")
	}
}
