package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/money"
	"pos/domain/stock"
	"pos/eventstore"
)

// StockCategory is the stream category of stock ledgers
// (eventstore.StreamName("stock", merchant, ledger id)).
const StockCategory = "stock"

// Movement kinds of rm_stock_movements (and of GET /v1/stock/{sku}/movements).
const (
	MovementReceipt     = "receipt"
	MovementAdjustment  = "adjustment"
	MovementReserve     = "reserve"
	MovementRelease     = "release"
	MovementSale        = "sale"
	MovementReturn      = "return"
	MovementTransferOut = "transfer_out"
	MovementTransferIn  = "transfer_in"
)

// Stock projects the stock ledgers' events (domain/stock) into three tables
// (migrations/00008_stock_read_models.sql):
//
//   - rm_stock_levels, one row per ledger: on hand, reserved, average cost
//     and version, equal to the aggregate's OnHand, Reserved, AvgCost and
//     Version after the same events;
//   - rm_stock_movements, one row per event (the stock card), with a kind,
//     a signed qty, a unit cost where the event carries one, the id of what
//     caused it and the event's time; the migration's table comment says
//     which event gives which kind and how qty is signed;
//   - rm_stock_reservations, the open reservations (one per ledger and
//     transaction), which a release or a sale takes back out of reserved.
//
// Delivery is at least once; the Runner applies each event exactly once, in
// stream order, and this projector relies on it (levels move by deltas).
// Like the aggregate's Apply, it takes the units a release or a sale frees
// from the open reservation it holds, not from the event's own field.
type Stock struct{}

// Name returns "stock".
func (Stock) Name() string { return "stock" }

// Categories returns the stock category: the projector reads no other
// stream.
func (Stock) Categories() []string { return []string{StockCategory} }

// Handles reports true for every stock ledger event type.
func (Stock) Handles(eventType string) bool { return slices.Contains(stock.EventTypes(), eventType) }

// stockChange is what one event does to a ledger's tables.
type stockChange struct {
	kind     string
	onHand   int64         // change of on hand
	avgCost  *money.Amount // the average afterwards, when the event sets it
	unitCost *money.Amount
	source   uuid.UUID
	at       time.Time
}

// Apply implements Projector.
func (Stock) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	ev, err := stock.Decode(e.Type, e.Data)
	if err != nil {
		return err
	}
	merchant, ledger, err := aggregateOf(e)
	if err != nil {
		return err
	}
	key := ev.LedgerKey()
	if key.MerchantID != merchant || key.LedgerID != ledger || stock.LedgerID(merchant, key.BranchID, key.SKU) != ledger {
		return fmt.Errorf("%w: %s of stream %q names ledger %s of merchant %s", ErrBadEvent, e.Type, e.Stream, key.LedgerID, key.MerchantID)
	}

	var c stockChange
	var reservedDelta int64
	switch ev := ev.(type) {
	case stock.StockReceived:
		c = stockChange{kind: MovementReceipt, onHand: ev.Qty, avgCost: &ev.AvgCost, unitCost: &ev.UnitCost, source: ev.ReceiptID, at: ev.At}
	case stock.StockAdjusted:
		c = stockChange{kind: MovementAdjustment, onHand: ev.Delta, source: ev.AdjustmentID, at: ev.At}
	case stock.StockReserved:
		prev, err := openReservation(ctx, tx, key, ev.TransactionID)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
            INSERT INTO rm_stock_reservations (merchant_id, ledger_id, transaction_id, qty, reserved_at) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (merchant_id, ledger_id, transaction_id) DO UPDATE SET qty = excluded.qty, reserved_at = excluded.reserved_at`,
			merchant, ledger, ev.TransactionID, ev.Qty, ev.At)
		if err != nil {
			return fmt.Errorf("upsert rm_stock_reservations: %w", err)
		}
		reservedDelta = ev.Qty - prev
		c = stockChange{kind: MovementReserve, source: ev.TransactionID, at: ev.At}
	case stock.ReservationReleased:
		prev, err := closeReservation(ctx, tx, key, ev.TransactionID)
		if err != nil {
			return err
		}
		reservedDelta = -prev
		c = stockChange{kind: MovementRelease, source: ev.TransactionID, at: ev.At}
	case stock.StockSold:
		prev, err := closeReservation(ctx, tx, key, ev.TransactionID)
		if err != nil {
			return err
		}
		reservedDelta = -prev
		c = stockChange{kind: MovementSale, onHand: -ev.Qty, unitCost: &ev.UnitCost, source: ev.TransactionID, at: ev.At}
	case stock.StockReturned:
		c = stockChange{kind: MovementReturn, onHand: ev.Qty, avgCost: &ev.AvgCost, unitCost: &ev.UnitCost, source: ev.SourceID, at: ev.At}
	case stock.StockTransferredOut:
		c = stockChange{kind: MovementTransferOut, onHand: -ev.Qty, unitCost: &ev.UnitCost, source: ev.TransferID, at: ev.At}
	case stock.StockTransferredIn:
		c = stockChange{kind: MovementTransferIn, onHand: ev.Qty, avgCost: &ev.AvgCost, unitCost: &ev.UnitCost, source: ev.TransferID, at: ev.At}
	default:
		return fmt.Errorf("unexpected event %T", ev)
	}

	_, err = tx.Exec(ctx, `
        INSERT INTO rm_stock_levels AS l (merchant_id, ledger_id, branch_id, sku, on_hand, reserved, avg_cost, version, pos_major, pos_minor, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, 0), $8, $9, $10, $11)
        ON CONFLICT (merchant_id, ledger_id) DO UPDATE SET
            on_hand = l.on_hand + excluded.on_hand, reserved = l.reserved + excluded.reserved,
            avg_cost = coalesce($7, l.avg_cost), version = excluded.version,
            pos_major = excluded.pos_major, pos_minor = excluded.pos_minor, updated_at = excluded.updated_at`,
		merchant, ledger, key.BranchID, key.SKU, c.onHand, reservedDelta, amountArg(c.avgCost),
		int64(e.Version), int64(e.Position.Major), int64(e.Position.Minor), e.RecordedAt)
	if err != nil {
		return fmt.Errorf("upsert rm_stock_levels: %w", err)
	}

	qty := c.onHand
	if c.kind == MovementReserve || c.kind == MovementRelease {
		qty = reservedDelta
	}
	_, err = tx.Exec(ctx, `
        INSERT INTO rm_stock_movements (merchant_id, ledger_id, branch_id, sku, version, kind, qty, unit_cost, source_id, at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		merchant, ledger, key.BranchID, key.SKU, int64(e.Version), c.kind, qty, amountArg(c.unitCost), c.source, c.at)
	return wrap("insert rm_stock_movements", err)
}

// amountArg is a nullable bigint argument.
func amountArg(a *money.Amount) *int64 {
	if a == nil {
		return nil
	}
	v := int64(*a)
	return &v
}

// openReservation returns the units of transaction's open reservation on
// the ledger (0 without one).
func openReservation(ctx context.Context, tx pgx.Tx, key stock.Key, transaction uuid.UUID) (int64, error) {
	var qty int64
	err := tx.QueryRow(ctx, `SELECT qty FROM rm_stock_reservations WHERE merchant_id = $1 AND ledger_id = $2 AND transaction_id = $3`,
		key.MerchantID, key.LedgerID, transaction).Scan(&qty)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read rm_stock_reservations: %w", err)
	}
	return qty, nil
}

// closeReservation deletes transaction's open reservation on the ledger and
// returns its units (0 without one: a sale without a reservation, or a
// release of nothing).
func closeReservation(ctx context.Context, tx pgx.Tx, key stock.Key, transaction uuid.UUID) (int64, error) {
	var qty int64
	err := tx.QueryRow(ctx, `DELETE FROM rm_stock_reservations WHERE merchant_id = $1 AND ledger_id = $2 AND transaction_id = $3 RETURNING qty`,
		key.MerchantID, key.LedgerID, transaction).Scan(&qty)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("delete rm_stock_reservations: %w", err)
	}
	return qty, nil
}
