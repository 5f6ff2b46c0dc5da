package stock

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"pos/domain/money"
)

// SchemaVersion is the schema version of every event type defined here; see
// transaction.SchemaVersion for how it evolves.
const SchemaVersion = 1

// Event is one fact in a ledger's history. The set is closed: only the types
// in this file implement it. Every event names its ledger (Key), so a reader
// of one event, such as a projection, knows the branch and SKU it moves.
type Event interface {
	// EventType is the stored type name, for example "StockReceived".
	EventType() string
	// LedgerKey is the ledger the event belongs to.
	LedgerKey() Key
	isStockEvent()
}

// Key identifies a ledger: one SKU in one branch of one merchant. LedgerID is
// derived from the other three (LedgerID), so the same key always names the
// same stream.
type Key struct {
	LedgerID   uuid.UUID `json:"ledger_id"`
	MerchantID uuid.UUID `json:"merchant_id"`
	BranchID   uuid.UUID `json:"branch_id"`
	SKU        string    `json:"sku"`
}

// LedgerKey returns k itself; embedding Key gives every event the method.
func (k Key) LedgerKey() Key { return k }

// StockReceived adds units bought at UnitCost. AvgCost is the ledger's moving
// average after the receipt (see the package documentation for the rule).
type StockReceived struct {
	Key
	ReceiptID uuid.UUID    `json:"receipt_id"`
	Qty       int64        `json:"qty"`
	UnitCost  money.Amount `json:"unit_cost"`
	AvgCost   money.Amount `json:"avg_cost"`
	By        string       `json:"by"`
	At        time.Time    `json:"at"`
}

// StockAdjusted corrects the units on hand by a signed Delta (a count, breakage,
// a found box). The average cost does not change.
type StockAdjusted struct {
	Key
	AdjustmentID uuid.UUID `json:"adjustment_id"`
	Delta        int64     `json:"delta"`
	Reason       string    `json:"reason"`
	By           string    `json:"by"`
	At           time.Time `json:"at"`
}

// StockReserved holds Qty units for a transaction being checked out. It
// replaces any open reservation of the same transaction (a checkout retried
// after its lines changed reserves the new quantity, not both). Attempt is
// the version of the draft the checkout reserved for; see Release.Before.
type StockReserved struct {
	Key
	TransactionID uuid.UUID `json:"transaction_id"`
	Qty           int64     `json:"qty"`
	Attempt       uint64    `json:"attempt"`
	At            time.Time `json:"at"`
}

// ReservationReleased gives a transaction's reserved units back to
// available: the sale was voided, abandoned or timed out.
type ReservationReleased struct {
	Key
	TransactionID uuid.UUID `json:"transaction_id"`
	Qty           int64     `json:"qty"`
	Reason        string    `json:"reason"`
	At            time.Time `json:"at"`
}

// StockSold commits a transaction's units as sold: they leave on hand (and
// the reservation, when there was one). CostOfGoods is Qty × UnitCost, the
// average cost at the moment of the sale.
type StockSold struct {
	Key
	TransactionID uuid.UUID    `json:"transaction_id"`
	Qty           int64        `json:"qty"`
	Reserved      int64        `json:"reserved"`
	UnitCost      money.Amount `json:"unit_cost"`
	CostOfGoods   money.Amount `json:"cost_of_goods"`
	At            time.Time    `json:"at"`
}

// StockReturned puts sold units back on hand (a refund by lines, or a void
// of a paid sale) at the unit cost they were sold at. SourceID is the refund
// id, or the transaction id for a void. AvgCost is the average afterwards.
type StockReturned struct {
	Key
	TransactionID uuid.UUID    `json:"transaction_id"`
	SourceID      uuid.UUID    `json:"source_id"`
	Qty           int64        `json:"qty"`
	UnitCost      money.Amount `json:"unit_cost"`
	AvgCost       money.Amount `json:"avg_cost"`
	At            time.Time    `json:"at"`
}

// StockTransferredOut sends units to another branch's ledger of the same SKU
// at the current average cost; StockTransferredIn with the same TransferID
// receives them there.
type StockTransferredOut struct {
	Key
	TransferID uuid.UUID    `json:"transfer_id"`
	ToBranchID uuid.UUID    `json:"to_branch_id"`
	Qty        int64        `json:"qty"`
	UnitCost   money.Amount `json:"unit_cost"`
	By         string       `json:"by"`
	At         time.Time    `json:"at"`
}

// StockTransferredIn receives a transfer's units at the cost they left the
// source at; AvgCost is the average afterwards.
type StockTransferredIn struct {
	Key
	TransferID   uuid.UUID    `json:"transfer_id"`
	FromBranchID uuid.UUID    `json:"from_branch_id"`
	Qty          int64        `json:"qty"`
	UnitCost     money.Amount `json:"unit_cost"`
	AvgCost      money.Amount `json:"avg_cost"`
	At           time.Time    `json:"at"`
}

// EventType returns "StockReceived".
func (StockReceived) EventType() string { return "StockReceived" }

// EventType returns "StockAdjusted".
func (StockAdjusted) EventType() string { return "StockAdjusted" }

// EventType returns "StockReserved".
func (StockReserved) EventType() string { return "StockReserved" }

// EventType returns "ReservationReleased".
func (ReservationReleased) EventType() string { return "ReservationReleased" }

// EventType returns "StockSold".
func (StockSold) EventType() string { return "StockSold" }

// EventType returns "StockReturned".
func (StockReturned) EventType() string { return "StockReturned" }

// EventType returns "StockTransferredOut".
func (StockTransferredOut) EventType() string { return "StockTransferredOut" }

// EventType returns "StockTransferredIn".
func (StockTransferredIn) EventType() string { return "StockTransferredIn" }

func (StockReceived) isStockEvent()       {}
func (StockAdjusted) isStockEvent()       {}
func (StockReserved) isStockEvent()       {}
func (ReservationReleased) isStockEvent() {}
func (StockSold) isStockEvent()           {}
func (StockReturned) isStockEvent()       {}
func (StockTransferredOut) isStockEvent() {}
func (StockTransferredIn) isStockEvent()  {}

// EventTypes returns the stored type name of every ledger event, for
// registering them with the event store's registry.
func EventTypes() []string {
	return []string{
		"StockReceived", "StockAdjusted", "StockReserved", "ReservationReleased",
		"StockSold", "StockReturned", "StockTransferredOut", "StockTransferredIn",
	}
}

// TypeName returns the stored type name of e.
func TypeName(e Event) string { return e.EventType() }

// Decode turns a stored event (type name and JSON data at SchemaVersion) into
// the concrete event value. Unknown JSON fields are ignored.
func Decode(eventType string, data []byte) (Event, error) {
	switch eventType {
	case "StockReceived":
		return decode[StockReceived](data)
	case "StockAdjusted":
		return decode[StockAdjusted](data)
	case "StockReserved":
		return decode[StockReserved](data)
	case "ReservationReleased":
		return decode[ReservationReleased](data)
	case "StockSold":
		return decode[StockSold](data)
	case "StockReturned":
		return decode[StockReturned](data)
	case "StockTransferredOut":
		return decode[StockTransferredOut](data)
	case "StockTransferredIn":
		return decode[StockTransferredIn](data)
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
