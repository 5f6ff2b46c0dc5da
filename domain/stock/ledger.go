// Package stock is the StockLedger aggregate (SPEC §4.2): the units of one SKU
// in one branch of one merchant, what is reserved for sales awaiting payment,
// and their moving-average cost.
//
//   - On hand moves with receipts, adjustments, sales, returns and transfers.
//   - Reserved is the sum of the open reservations, one per transaction at
//     most; available = on hand − reserved.
//   - Reservations, adjustments and transfers out refuse to take available
//     below zero (ErrInsufficientStock) unless the merchant allows negative
//     stock; a sale of reserved units and a return never are refused.
//   - A SKU never received has a ledger at zero: nothing to reserve.
//
// # Cost
//
// The average cost is per unit, in the currency's minor units. Units that
// come in (a receipt, a transfer in, a return) move it:
//
//	avg' = round_half_even((on_hand × avg + qty × unit_cost) / (on_hand + qty))
//
// computed exactly and rounded once per movement, half to even, to the minor
// unit (the rule the money package calls HalfEven). When on hand is zero or
// negative before the movement, the incoming units set the average alone.
// Units that go out (sales, transfers out, adjustments) leave it unchanged.
// A sale records its cost of goods as qty × the average at that moment.
//
// # Idempotency
//
// Every command names what it comes from (a receipt, adjustment or transfer
// id, a transaction, a refund), and the ledger remembers those it has seen: a
// repeated command decides no events. Process managers rely on this to apply
// each event exactly once under at-least-once delivery.
//
// Like every package under domain/, it reads no clock and imports no
// infrastructure.
package stock

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"

	"pos/domain"
	"pos/domain/money"
)

// Errors shared with every aggregate, re-exported; each is the same value as
// its domain counterpart.
var (
	// ErrInvalid is malformed input (400 invalid_request), reported as a
	// *ValidationError.
	ErrInvalid = domain.ErrInvalid
	// ErrInvalidState is a command the ledger's state does not allow, such
	// as reserving again for a transaction already sold (409 invalid_state).
	ErrInvalidState = domain.ErrInvalidState
	// ErrInsufficientStock is a movement that would take available below
	// zero (422 insufficient_stock); reported as a *ShortageError.
	ErrInsufficientStock = domain.ErrInsufficientStock
	// ErrAlreadyExists is a receipt, adjustment, transfer or return id
	// already used for another movement of the ledger (409 already_exists).
	ErrAlreadyExists = domain.ErrAlreadyExists
)

// Errors about history: stored events that do not apply.
var (
	ErrInvalidHistory = errors.New("stock: event does not apply to this ledger")
	ErrUnknownEvent   = errors.New("stock: unknown event type")
)

// ValidationError says which input was refused and why; see
// domain.ValidationError.
type ValidationError = domain.ValidationError

// ShortageError says which ledger is short and by how much. It unwraps to
// ErrInsufficientStock.
type ShortageError struct {
	BranchID  uuid.UUID
	SKU       string
	Available int64
	Requested int64
}

func (e *ShortageError) Error() string {
	return fmt.Sprintf("stock: %s in branch %s has %d available, %d requested", e.SKU, e.BranchID, e.Available, e.Requested)
}

// Unwrap lets errors.Is match ErrInsufficientStock.
func (e *ShortageError) Unwrap() error { return ErrInsufficientStock }

// Limits.
const (
	// MaxQty is the most units one command moves (domain.MaxQty).
	MaxQty = domain.MaxQty
	// MaxSKULen is the longest SKU, in characters (domain.MaxSKULen).
	MaxSKULen = domain.MaxSKULen
	// MaxReasonLen is the longest adjustment or release reason.
	MaxReasonLen = 500
	// MaxActorLen is the longest actor id (the token's sub).
	MaxActorLen = domain.MaxActorLen
	// maxUnits bounds on hand and reserved, like money amounts, so every
	// JSON client reads them exactly.
	maxUnits = 1<<53 - 1
)

// ledgerNamespace seeds LedgerID's name-based UUIDs.
var ledgerNamespace = uuid.MustParse("5b0d0c57-6c1e-4f5c-9a8e-0b7c1d2e3f40")

// LedgerID returns the id of the ledger of sku in branch of merchant. It is
// derived (a name-based UUID), so every writer finds the same stream without
// a lookup; the merchant is part of the name, so two merchants' ledgers of
// the same branch id and SKU differ.
func LedgerID(merchant, branch uuid.UUID, sku string) uuid.UUID {
	name := make([]byte, 0, 32+len(sku))
	name = append(name, merchant[:]...)
	name = append(name, branch[:]...)
	name = append(name, sku...)
	// Version 5, name-based: a pure function of its inputs, no randomness.
	return uuid.NewSHA1(ledgerNamespace, name)
}

// NewKey returns the key of sku in branch of merchant, with its LedgerID.
func NewKey(merchant, branch uuid.UUID, sku string) Key {
	return Key{LedgerID: LedgerID(merchant, branch, sku), MerchantID: merchant, BranchID: branch, SKU: sku}
}

// Reservation is what a ledger knows of one transaction.
type Reservation struct {
	TransactionID uuid.UUID
	// Reserved is the open reservation: 0 once released or sold.
	Reserved int64
	// Attempt is the draft version the open reservation was made for.
	Attempt uint64
	// Released reports that a reservation was released without a sale.
	Released bool
	// Sold is the units sold (0 until the sale), at SoldCost each.
	Sold     int64
	SoldCost money.Amount
	// Returned is the units of the sale put back by refunds or a void.
	Returned int64
}

// Ledger is the aggregate. Build one with New for its key; state changes
// only through Apply. It is not safe for concurrent use.
type Ledger struct {
	key      Key
	version  uint64
	onHand   int64
	reserved int64
	avgCost  money.Amount

	reservations map[uuid.UUID]*Reservation
	// seen holds every movement already applied, by its seenKey, with what
	// it did: the same command again decides nothing, the same key for
	// something else is refused.
	seen map[seenKey]string
	// transfersOut holds the transfers sent from this ledger, so the target
	// half can be completed from the source's state alone.
	transfersOut map[uuid.UUID]StockTransferredOut
}

// New returns the ledger of key with no history: zero on hand, zero cost.
func New(key Key) *Ledger {
	return &Ledger{key: key, reservations: map[uuid.UUID]*Reservation{}, seen: map[seenKey]string{},
		transfersOut: map[uuid.UUID]StockTransferredOut{}}
}

// Key returns the ledger's key.
func (l *Ledger) Key() Key { return l.key }

// Version returns the number of events applied.
func (l *Ledger) Version() uint64 { return l.version }

// OnHand returns the units physically in the branch (negative only when the
// merchant allows negative stock).
func (l *Ledger) OnHand() int64 { return l.onHand }

// Reserved returns the units held by open reservations.
func (l *Ledger) Reserved() int64 { return l.reserved }

// Available returns on hand − reserved.
func (l *Ledger) Available() int64 { return l.onHand - l.reserved }

// AvgCost returns the moving-average unit cost.
func (l *Ledger) AvgCost() money.Amount { return l.avgCost }

// Reservation returns what the ledger knows of a transaction.
func (l *Ledger) Reservation(tx uuid.UUID) (Reservation, bool) {
	r, ok := l.reservations[tx]
	if !ok {
		return Reservation{}, false
	}
	return *r, true
}

// Reservations returns a copy of every transaction's reservation record.
func (l *Ledger) Reservations() map[uuid.UUID]Reservation {
	out := make(map[uuid.UUID]Reservation, len(l.reservations))
	for id, r := range l.reservations {
		out[id] = *r
	}
	return out
}

// seenKey is a movement as a ledger remembers it, by the id its command
// names within the scope where that id is unique: receipts, adjustments and
// transfers out by their id alone (one id, one movement of this ledger); a
// transfer in by its id and source branch (the id was unique at the source
// ledger only: one slip may pull the same SKU from two branches); a return
// by its source and transaction (a refund id is unique within its sale
// only). A key outside its
// scope would refuse, as taken, a movement the command had every right to:
// after the source half of a transfer, or a refund already granted, when
// nothing can undo what came first.
type seenKey struct{ scope, id uuid.UUID }

// repeated reports whether key was already applied to do exactly print (the
// command is a repeat: it decides nothing); the same key applied to do
// something else is ErrAlreadyExists naming field and the key's id.
func (l *Ledger) repeated(key seenKey, field, print string) (bool, error) {
	done, ok := l.seen[key]
	switch {
	case !ok:
		return false, nil
	case done == print:
		return true, nil
	}
	return false, fmt.Errorf("%w: %s %s was used for another movement of this ledger", ErrAlreadyExists, field, key.id)
}

// What a receipt, adjustment, return or transfer did, as repeated compares.
func receiptPrint(qty int64, cost money.Amount) string {
	return fmt.Sprintf("receipt %d@%d", qty, cost)
}
func adjustmentPrint(delta int64, reason string) string {
	return fmt.Sprintf("adjustment %d %q", delta, reason)
}
func returnPrint(tx uuid.UUID) string { return "return " + tx.String() }
func transferOutPrint(to uuid.UUID, qty int64) string {
	return fmt.Sprintf("transfer out %d to %s", qty, to)
}
func transferInPrint(from uuid.UUID, qty int64, cost money.Amount) string {
	return fmt.Sprintf("transfer in %d@%d from %s", qty, cost, from)
}

// TransferredOut returns the transfer of that id sent from this ledger.
func (l *Ledger) TransferredOut(id uuid.UUID) (StockTransferredOut, bool) {
	e, ok := l.transfersOut[id]
	return e, ok
}

// Clone returns an independent copy, for callers that keep a ledger between
// commands (a cache) and must not share its maps.
func (l *Ledger) Clone() *Ledger {
	c := *l
	c.seen = maps.Clone(l.seen)
	c.transfersOut = maps.Clone(l.transfersOut)
	c.reservations = make(map[uuid.UUID]*Reservation, len(l.reservations))
	for id, r := range l.reservations {
		rc := *r
		c.reservations[id] = &rc
	}
	return &c
}

// Apply changes the state by one event and increments the version. Stored
// history is the truth: Apply refuses only events of another ledger, never a
// balance it would not have allowed as a command.
func (l *Ledger) Apply(e Event) error {
	if e == nil {
		return fmt.Errorf("%w: nil event at version %d", ErrInvalidHistory, l.version+1)
	}
	if k := e.LedgerKey(); k != l.key {
		return fmt.Errorf("%w: %s of ledger %s applied to %s", ErrInvalidHistory, e.EventType(), k.LedgerID, l.key.LedgerID)
	}
	switch e := e.(type) {
	case StockReceived:
		l.onHand += e.Qty
		l.avgCost = e.AvgCost
		l.seen[seenKey{id: e.ReceiptID}] = receiptPrint(e.Qty, e.UnitCost)
	case StockAdjusted:
		l.onHand += e.Delta
		l.seen[seenKey{id: e.AdjustmentID}] = adjustmentPrint(e.Delta, e.Reason)
	case StockReserved:
		r := l.reservation(e.TransactionID)
		l.reserved += e.Qty - r.Reserved
		r.Reserved, r.Attempt, r.Released = e.Qty, e.Attempt, false
	case ReservationReleased:
		r := l.reservation(e.TransactionID)
		l.reserved -= r.Reserved
		r.Reserved, r.Attempt, r.Released = 0, 0, true
	case StockSold:
		r := l.reservation(e.TransactionID)
		l.onHand -= e.Qty
		l.reserved -= r.Reserved
		r.Reserved, r.Attempt, r.Sold, r.SoldCost = 0, 0, e.Qty, e.UnitCost
	case StockReturned:
		r := l.reservation(e.TransactionID)
		l.onHand += e.Qty
		l.avgCost = e.AvgCost
		r.Returned += e.Qty
		l.seen[seenKey{e.TransactionID, e.SourceID}] = returnPrint(e.TransactionID)
	case StockTransferredOut:
		l.onHand -= e.Qty
		l.seen[seenKey{id: e.TransferID}] = transferOutPrint(e.ToBranchID, e.Qty)
		l.transfersOut[e.TransferID] = e
	case StockTransferredIn:
		l.onHand += e.Qty
		l.avgCost = e.AvgCost
		l.seen[seenKey{e.FromBranchID, e.TransferID}] = transferInPrint(e.FromBranchID, e.Qty, e.UnitCost)
	default:
		return fmt.Errorf("%w: %T at version %d", ErrInvalidHistory, e, l.version+1)
	}
	l.version++
	return nil
}

func (l *Ledger) reservation(tx uuid.UUID) *Reservation {
	r, ok := l.reservations[tx]
	if !ok {
		r = &Reservation{TransactionID: tx}
		l.reservations[tx] = r
	}
	return r
}

// Receive is a delivery of Qty units bought at UnitCost each.
type Receive struct {
	ReceiptID uuid.UUID
	Qty       int64
	UnitCost  money.Amount
	By        string
	At        time.Time
}

// Receive decides a receipt; a receipt id already applied decides nothing.
func (l *Ledger) Receive(cmd Receive) ([]Event, error) {
	if err := l.check(cmd.ReceiptID, "receipt_id", cmd.At); err != nil {
		return nil, err
	}
	if err := firstOf(checkQty("qty", cmd.Qty), checkAmount("unit_cost", cmd.UnitCost), checkActor(cmd.By)); err != nil {
		return nil, err
	}
	if done, err := l.repeated(seenKey{id: cmd.ReceiptID}, "receipt_id", receiptPrint(cmd.Qty, cmd.UnitCost)); done || err != nil {
		return nil, err
	}
	avg, err := l.averageWith(cmd.Qty, cmd.UnitCost)
	if err != nil {
		return nil, err
	}
	return []Event{StockReceived{Key: l.key, ReceiptID: cmd.ReceiptID, Qty: cmd.Qty, UnitCost: cmd.UnitCost, AvgCost: avg, By: cmd.By, At: cmd.At.UTC()}}, nil
}

// Adjust is a signed correction of the units on hand.
type Adjust struct {
	AdjustmentID uuid.UUID
	Delta        int64
	Reason       string
	By           string
	// AllowNegative is the merchant's setting.
	AllowNegative bool
	At            time.Time
}

// Adjust decides an adjustment; a removal that would take available below
// zero is a *ShortageError unless negative stock is allowed.
func (l *Ledger) Adjust(cmd Adjust) ([]Event, error) {
	if err := l.check(cmd.AdjustmentID, "adjustment_id", cmd.At); err != nil {
		return nil, err
	}
	if cmd.Delta == 0 || cmd.Delta > MaxQty || cmd.Delta < -MaxQty {
		return nil, invalid("delta", domain.CodeOutOfRange, fmt.Sprintf("must be non-zero, within ±%d", MaxQty))
	}
	if err := firstOf(checkText("reason", cmd.Reason, MaxReasonLen, true), checkActor(cmd.By)); err != nil {
		return nil, err
	}
	if done, err := l.repeated(seenKey{id: cmd.AdjustmentID}, "adjustment_id", adjustmentPrint(cmd.Delta, cmd.Reason)); done || err != nil {
		return nil, err
	}
	if err := l.fits(l.onHand+cmd.Delta, l.reserved, -cmd.Delta, cmd.AllowNegative); err != nil {
		return nil, err
	}
	return []Event{StockAdjusted{Key: l.key, AdjustmentID: cmd.AdjustmentID, Delta: cmd.Delta, Reason: cmd.Reason, By: cmd.By, At: cmd.At.UTC()}}, nil
}

// Reserve holds Qty units for a transaction being checked out.
type Reserve struct {
	TransactionID uuid.UUID
	Qty           int64
	// Attempt is the version of the draft the checkout loaded.
	Attempt       uint64
	AllowNegative bool
	At            time.Time
}

// Reserve decides a reservation. The same quantity already reserved for the
// transaction by the same attempt decides nothing, and so does an older
// attempt than the open reservation's (a checkout of a draft version that
// a newer checkout has overtaken: its own commit will fail); another
// quantity or a newer attempt replaces it. A transaction already sold is
// ErrInvalidState.
func (l *Ledger) Reserve(cmd Reserve) ([]Event, error) {
	if err := l.check(cmd.TransactionID, "transaction_id", cmd.At); err != nil {
		return nil, err
	}
	if err := checkQty("qty", cmd.Qty); err != nil {
		return nil, err
	}
	r, _ := l.Reservation(cmd.TransactionID)
	if r.Sold > 0 {
		return nil, fmt.Errorf("%w: transaction %s already sold %s", ErrInvalidState, cmd.TransactionID, l.key.SKU)
	}
	if r.Reserved == cmd.Qty && r.Attempt == cmd.Attempt || r.Reserved > 0 && r.Attempt > cmd.Attempt {
		return nil, nil
	}
	if err := l.fits(l.onHand, l.reserved-r.Reserved+cmd.Qty, cmd.Qty, cmd.AllowNegative); err != nil {
		return nil, err
	}
	return []Event{StockReserved{Key: l.key, TransactionID: cmd.TransactionID, Qty: cmd.Qty, Attempt: cmd.Attempt, At: cmd.At.UTC()}}, nil
}

// Release gives back a transaction's open reservation.
type Release struct {
	TransactionID uuid.UUID
	Reason        string
	// Before, when not 0, releases only a reservation made for a draft
	// version below it: releasing what a failed or abandoned checkout
	// reserved must not release what a later checkout of the same draft
	// (which loaded a newer version) reserved meanwhile.
	Before uint64
	At     time.Time
}

// Release decides a release; with no open reservation (or only a newer one
// than Before) it decides nothing.
func (l *Ledger) Release(cmd Release) ([]Event, error) {
	if err := l.check(cmd.TransactionID, "transaction_id", cmd.At); err != nil {
		return nil, err
	}
	if err := checkText("reason", cmd.Reason, MaxReasonLen, true); err != nil {
		return nil, err
	}
	r, _ := l.Reservation(cmd.TransactionID)
	if r.Reserved == 0 || (cmd.Before != 0 && r.Attempt >= cmd.Before) {
		return nil, nil
	}
	return []Event{ReservationReleased{Key: l.key, TransactionID: cmd.TransactionID, Qty: r.Reserved, Reason: cmd.Reason, At: cmd.At.UTC()}}, nil
}

// Sell commits a paid transaction's Qty units as sold.
type Sell struct {
	TransactionID uuid.UUID
	Qty           int64
	At            time.Time
}

// Sell decides a sale, consuming the transaction's open reservation if there
// is one. The sale has happened: it is never refused for a shortage (without
// a reservation, say one released by a timeout racing the payment, on hand
// may go negative). A transaction already sold decides nothing.
func (l *Ledger) Sell(cmd Sell) ([]Event, error) {
	if err := l.check(cmd.TransactionID, "transaction_id", cmd.At); err != nil {
		return nil, err
	}
	if err := checkQty("qty", cmd.Qty); err != nil {
		return nil, err
	}
	r, _ := l.Reservation(cmd.TransactionID)
	if r.Sold > 0 {
		return nil, nil
	}
	if l.onHand-cmd.Qty < -maxUnits {
		return nil, invalid("qty", domain.CodeOutOfRange, "takes on hand out of range")
	}
	cogs, err := l.avgCost.Mul(cmd.Qty)
	if err != nil {
		return nil, &ValidationError{Field: "qty", Code: domain.CodeOutOfRange, Reason: "cost of goods out of range", Err: err}
	}
	return []Event{StockSold{Key: l.key, TransactionID: cmd.TransactionID, Qty: cmd.Qty, Reserved: r.Reserved,
		UnitCost: l.avgCost, CostOfGoods: cogs, At: cmd.At.UTC()}}, nil
}

// Return puts units of a sale back on hand.
type Return struct {
	TransactionID uuid.UUID
	// SourceID is what returns them: a refund id, or the transaction id
	// for a void (a sale is voided only before any refund). Each source
	// returns once per transaction.
	SourceID uuid.UUID
	// Qty is the units to return; 0 means all sold and not yet returned
	// (a void). It is capped at that, so a ledger never takes back more
	// than it sold.
	Qty int64
	At  time.Time
}

// Return decides a return at the sale's unit cost. A source already applied,
// a transaction this ledger never sold, or nothing left to return decides
// nothing.
func (l *Ledger) Return(cmd Return) ([]Event, error) {
	if err := l.check(cmd.TransactionID, "transaction_id", cmd.At); err != nil {
		return nil, err
	}
	if cmd.SourceID == uuid.Nil {
		return nil, invalid("source_id", domain.CodeRequired, "must be a non-nil UUID")
	}
	if cmd.Qty < 0 || cmd.Qty > MaxQty {
		return nil, invalid("qty", domain.CodeOutOfRange, fmt.Sprintf("must be within 0..%d", MaxQty))
	}
	r, _ := l.Reservation(cmd.TransactionID)
	left := r.Sold - r.Returned
	if done, err := l.repeated(seenKey{cmd.TransactionID, cmd.SourceID}, "source_id", returnPrint(cmd.TransactionID)); done || err != nil || left <= 0 {
		return nil, err
	}
	qty := cmd.Qty
	if qty == 0 || qty > left {
		qty = left
	}
	avg, err := l.averageWith(qty, r.SoldCost)
	if err != nil {
		return nil, err
	}
	return []Event{StockReturned{Key: l.key, TransactionID: cmd.TransactionID, SourceID: cmd.SourceID, Qty: qty,
		UnitCost: r.SoldCost, AvgCost: avg, At: cmd.At.UTC()}}, nil
}

// TransferOut sends Qty units to the same SKU's ledger in another branch.
type TransferOut struct {
	TransferID    uuid.UUID
	ToBranchID    uuid.UUID
	Qty           int64
	AllowNegative bool
	By            string
	At            time.Time
}

// TransferOut decides the source half of a transfer, at the current average
// cost; a transfer id already applied decides nothing.
func (l *Ledger) TransferOut(cmd TransferOut) ([]Event, error) {
	if err := l.check(cmd.TransferID, "transfer_id", cmd.At); err != nil {
		return nil, err
	}
	switch {
	case cmd.ToBranchID == uuid.Nil:
		return nil, invalid("to_branch_id", domain.CodeRequired, "must be a non-nil UUID")
	case cmd.ToBranchID == l.key.BranchID:
		return nil, invalid("to_branch_id", domain.CodeConflict, "must differ from the source branch")
	}
	if err := firstOf(checkQty("qty", cmd.Qty), checkActor(cmd.By)); err != nil {
		return nil, err
	}
	if done, err := l.repeated(seenKey{id: cmd.TransferID}, "transfer_id", transferOutPrint(cmd.ToBranchID, cmd.Qty)); done || err != nil {
		return nil, err
	}
	if err := l.fits(l.onHand-cmd.Qty, l.reserved, cmd.Qty, cmd.AllowNegative); err != nil {
		return nil, err
	}
	return []Event{StockTransferredOut{Key: l.key, TransferID: cmd.TransferID, ToBranchID: cmd.ToBranchID, Qty: cmd.Qty,
		UnitCost: l.avgCost, By: cmd.By, At: cmd.At.UTC()}}, nil
}

// TransferIn receives a transfer's units at the cost they left at.
type TransferIn struct {
	TransferID   uuid.UUID
	FromBranchID uuid.UUID
	Qty          int64
	UnitCost     money.Amount
	At           time.Time
}

// TransferIn decides the target half of a transfer; a transfer id already
// applied decides nothing.
func (l *Ledger) TransferIn(cmd TransferIn) ([]Event, error) {
	if err := l.check(cmd.TransferID, "transfer_id", cmd.At); err != nil {
		return nil, err
	}
	switch {
	case cmd.FromBranchID == uuid.Nil:
		return nil, invalid("from_branch_id", domain.CodeRequired, "must be a non-nil UUID")
	case cmd.FromBranchID == l.key.BranchID:
		return nil, invalid("from_branch_id", domain.CodeConflict, "must be another branch")
	}
	if err := firstOf(checkQty("qty", cmd.Qty), checkAmount("unit_cost", cmd.UnitCost)); err != nil {
		return nil, err
	}
	if done, err := l.repeated(seenKey{cmd.FromBranchID, cmd.TransferID}, "transfer_id", transferInPrint(cmd.FromBranchID, cmd.Qty, cmd.UnitCost)); done || err != nil {
		return nil, err
	}
	avg, err := l.averageWith(cmd.Qty, cmd.UnitCost)
	if err != nil {
		return nil, err
	}
	return []Event{StockTransferredIn{Key: l.key, TransferID: cmd.TransferID, FromBranchID: cmd.FromBranchID, Qty: cmd.Qty,
		UnitCost: cmd.UnitCost, AvgCost: avg, At: cmd.At.UTC()}}, nil
}

// averageWith returns the moving average after qty units come in at cost
// (see the package documentation for the rule).
func (l *Ledger) averageWith(qty int64, cost money.Amount) (money.Amount, error) {
	if l.onHand+qty > maxUnits {
		return 0, invalid("qty", domain.CodeOutOfRange, "takes on hand out of range")
	}
	// The incoming units' value must fit even when it sets the average
	// alone: a sale of them records qty × avg as its cost of goods.
	in, err := cost.Mul(qty)
	if err != nil {
		return 0, &ValidationError{Field: "qty", Code: domain.CodeOutOfRange, Reason: "the stock's value would be out of range", Err: err}
	}
	if l.onHand <= 0 {
		return cost, nil
	}
	held, err := l.avgCost.Mul(l.onHand)
	if err == nil {
		if held, err = held.Add(in); err == nil {
			return money.MulDiv(held, 1, l.onHand+qty, money.HalfEven)
		}
	}
	return 0, &ValidationError{Field: "qty", Code: domain.CodeOutOfRange, Reason: "the stock's value would be out of range", Err: err}
}

// fits checks a movement that leaves onHand and reserved: available may go
// below zero only when allowed, and neither may leave the unit range.
// requested is what the movement takes, for the shortage report.
func (l *Ledger) fits(onHand, reserved, requested int64, allowNegative bool) error {
	if onHand > maxUnits || onHand < -maxUnits || reserved > maxUnits {
		return invalid("qty", domain.CodeOutOfRange, "takes the stock out of range")
	}
	if !allowNegative && onHand-reserved < 0 && requested > 0 {
		return &ShortageError{BranchID: l.key.BranchID, SKU: l.key.SKU, Available: l.Available(), Requested: requested}
	}
	return nil
}

// check validates what every command needs: a ledger key, the id the
// command is about, and its time.
func (l *Ledger) check(id uuid.UUID, field string, at time.Time) error {
	if err := l.key.validate(); err != nil {
		return err
	}
	if id == uuid.Nil {
		return invalid(field, domain.CodeRequired, "must be a non-nil UUID")
	}
	if at.IsZero() {
		return invalid("at", domain.CodeRequired, "the command's time must be set")
	}
	return nil
}
