package stock_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"pos/domain/stock"
)

// everyCommand holds one valid command of each kind, each of which decides
// an event on histStocked with the default key.
var everyCommand = []struct {
	name string
	cmd  command
}{
	{"Receive", recv(rcpt2, 1, 100)},
	{"Adjust", adj(adj1, -1, false)},
	{"Reserve", res(tx2, 1, false)},
	{"Release", rel(tx1)},
	{"Sell", sl(tx2, 1)},
	{"Return", rt(tx1, ref1, 1)},
	{"TransferOut", out(xfer1, 1, false)},
	{"TransferIn", in(xfer2, 1, 100)},
}

// TestBadKeyRefusesEveryCommand checks that a ledger built for a malformed
// key, or a key whose LedgerID does not match its parts, refuses every
// command, naming the field.
func TestBadKeyRefusesEveryCommand(t *testing.T) {
	mk := func(s string) stock.Key { return stock.NewKey(merchantID, branchID, s) }
	mismatched := key
	mismatched.LedgerID = stock.LedgerID(merchantID, branchID, "SKU-B")
	nilLedger := key
	nilLedger.LedgerID = uuid.Nil
	otherMerchantsID := key
	otherMerchantsID.LedgerID = stock.LedgerID(otherMerch, branchID, sku)
	keys := []struct {
		name  string
		key   stock.Key
		field string
	}{
		{"empty SKU", mk(""), "sku"},
		{"blank SKU", mk("   "), "sku"},
		{"leading space", mk(" SKU-A"), "sku"},
		{"trailing space", mk("SKU-A "), "sku"},
		{"leading tab", mk("\tSKU-A"), "sku"},
		{"NUL inside", mk("SKU\x00A"), "sku"},
		{"newline inside", mk("SKU\nA"), "sku"},
		{"DEL inside", mk("SKU\x7fA"), "sku"},
		{"C1 control inside", mk("SKU\u0085A"), "sku"},
		{"not UTF-8", mk("SKU\xffA"), "sku"},
		{"65 characters", mk(strings.Repeat("A", stock.MaxSKULen+1)), "sku"},
		{"65 multibyte characters", mk(strings.Repeat("é", stock.MaxSKULen+1)), "sku"},
		{"nil merchant", stock.NewKey(uuid.Nil, branchID, sku), "merchant_id"},
		{"nil branch", stock.NewKey(merchantID, uuid.Nil, sku), "branch_id"},
		{"LedgerID of another SKU", mismatched, "ledger_id"},
		{"nil LedgerID", nilLedger, "ledger_id"},
		{"LedgerID of another merchant", otherMerchantsID, "ledger_id"},
		{"zero key", stock.Key{}, "merchant_id"},
	}
	for _, k := range keys {
		for _, c := range everyCommand {
			t.Run(k.name+"/"+c.name, func(t *testing.T) {
				check(t, scenario{key: &k.key, when: c.cmd, wantField: k.field})
			})
		}
	}
}

// TestGoodKeysAcceptEveryCommand checks the edges of a valid SKU: each
// command decides an event on a stocked ledger of that key.
func TestGoodKeysAcceptEveryCommand(t *testing.T) {
	skus := []string{
		"A",
		strings.Repeat("A", stock.MaxSKULen),
		strings.Repeat("é", stock.MaxSKULen), // 64 characters, 128 bytes
		"SKU A/1",                            // a space inside is fine
		"咖啡-大",
	}
	for _, s := range skus {
		k := stock.NewKey(merchantID, branchID, s)
		if err := stock.CheckSKU(s); err != nil {
			t.Errorf("CheckSKU(%q) = %v", s, err)
		}
		for _, c := range everyCommand {
			t.Run(s+"/"+c.name, func(t *testing.T) {
				l := stock.New(k)
				// The default fixtures carry the default key: rebuild them.
				for _, e := range []stock.Event{
					stock.StockReceived{Key: k, ReceiptID: rcpt1, Qty: 10, UnitCost: 100, AvgCost: 100, By: "clerk-1", At: at(1)},
					stock.StockReserved{Key: k, TransactionID: tx1, Qty: 3, At: at(2)},
					stock.StockSold{Key: k, TransactionID: tx1, Qty: 3, Reserved: 3, UnitCost: 100, CostOfGoods: 300, At: at(3)},
					stock.StockReserved{Key: k, TransactionID: tx3, Qty: 1, At: at(2)},
				} {
					if err := l.Apply(e); err != nil {
						t.Fatal(err)
					}
				}
				cmd := c.cmd
				if c.name == "Release" {
					cmd = rel(tx3)
				}
				events, err := cmd(l)
				if err != nil || len(events) != 1 {
					t.Fatalf("events %s, err %v; want one event", show(events), err)
				}
				if events[0].LedgerKey() != k {
					t.Errorf("event key = %+v, want %+v", events[0].LedgerKey(), k)
				}
				applyAll(t, l, events)
			})
		}
	}
}

func TestCheckSKU(t *testing.T) {
	for _, s := range []string{"", " ", " A", "A ", "A\x00", "A\u200bB\x1b", strings.Repeat("x", 65), "\xc3"} {
		var ve *stock.ValidationError
		if err := stock.CheckSKU(s); !errors.Is(err, stock.ErrInvalid) || !errors.As(err, &ve) || ve.Field != "sku" {
			t.Errorf("CheckSKU(%q) = %v, want a validation error on sku", s, err)
		}
	}
}

// TestLedgerID checks that the id is derived from all three parts and only
// from them.
func TestLedgerID(t *testing.T) {
	id := stock.LedgerID(merchantID, branchID, sku)
	if id != stock.LedgerID(merchantID, branchID, sku) {
		t.Errorf("LedgerID is not deterministic")
	}
	if key.LedgerID != id || key.MerchantID != merchantID || key.BranchID != branchID || key.SKU != sku {
		t.Errorf("NewKey = %+v", key)
	}
	others := []uuid.UUID{
		stock.LedgerID(otherMerch, branchID, sku),
		stock.LedgerID(merchantID, otherBranch, sku),
		stock.LedgerID(merchantID, branchID, "SKU-B"),
		stock.LedgerID(merchantID, branchID, "sku-a"),
		stock.LedgerID(branchID, merchantID, sku),
	}
	for i, o := range others {
		if o == id {
			t.Errorf("LedgerID variant %d collides with the default", i)
		}
	}
	if id.Version() != 5 {
		t.Errorf("LedgerID version = %d, want 5 (name-based, SHA-1)", id.Version())
	}
}
