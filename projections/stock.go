package projections

import (
	"context"
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

// Tables returns the read-model tables it writes (Tabled).
func (Stock) Tables() []string {
	return []string{"rm_stock_levels", "rm_stock_movements", "rm_stock_reservations"}
}

// Reads returns nothing: it reads only its own tables (Tabled).
func (Stock) Reads() []string { return nil }

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

// Apply implements Projector as ApplyBatch of one event, so that a replay
// and a live delivery share one code path.
func (s Stock) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	return s.ApplyBatch(ctx, tx, []eventstore.RecordedEvent{e})
}

// ApplyBatch implements BatchProjector in at most five statements however
// many events, since round trips and statements, not rows, bound a replay:
// it reads the open reservations the events name, applies every event in
// memory, in order, then writes the levels (one upsert per ledger, deltas
// added), the movements (one row per event), and the reservations (closed
// ones deleted, open ones upserted). Every event is checked before any
// statement, so a bad one fails the batch with nothing written.
func (Stock) ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	if len(events) == 0 {
		return nil
	}
	decoded := make([]stock.Event, len(events))
	var merchant uuid.UUID
	var resKeys []reservationKey
	seenRes := map[reservationKey]bool{}
	for i, e := range events {
		ev, err := decodeStock(ctx, e)
		if err != nil {
			return err
		}
		m, ledger, err := aggregateOf(e)
		if err != nil {
			return err
		}
		key := ev.LedgerKey()
		if key.MerchantID != m || key.LedgerID != ledger || stock.LedgerID(m, key.BranchID, key.SKU) != ledger {
			return fmt.Errorf("%w: %s of stream %q names ledger %s of merchant %s", ErrBadEvent, e.Type, e.Stream, key.LedgerID, key.MerchantID)
		}
		if i == 0 {
			merchant = m
		} else if m != merchant {
			// Row-level security would hide or refuse the other merchant's rows.
			return fmt.Errorf("projections: stock batch mixes merchants %s and %s (%s@%d)", merchant, m, e.Stream, e.Version)
		}
		if t, ok := reservationOf(ev); ok {
			k := reservationKey{ledger, t}
			if !seenRes[k] {
				seenRes[k] = true
				resKeys = append(resKeys, k)
			}
		}
		decoded[i] = ev
	}

	res, err := loadReservations(ctx, tx, merchant, resKeys)
	if err != nil {
		return err
	}

	levels := map[uuid.UUID]*levelChange{}
	var order []uuid.UUID // ledgers in order of first event, for a stable write order
	var mv movementRows
	for i, ev := range decoded {
		e := events[i]
		key := ev.LedgerKey()
		var c stockChange
		var reservedDelta int64
		switch ev := ev.(type) {
		case stock.StockReceived:
			c = stockChange{kind: MovementReceipt, onHand: ev.Qty, avgCost: &ev.AvgCost, unitCost: &ev.UnitCost, source: ev.ReceiptID, at: ev.At}
		case stock.StockAdjusted:
			c = stockChange{kind: MovementAdjustment, onHand: ev.Delta, source: ev.AdjustmentID, at: ev.At}
		case stock.StockReserved:
			// A reservation replaces the transaction's open one: reserved
			// moves by the difference.
			r := res[reservationKey{key.LedgerID, ev.TransactionID}]
			reservedDelta = ev.Qty - r.openQty()
			r.open, r.qty, r.at = true, ev.Qty, ev.At
			c = stockChange{kind: MovementReserve, source: ev.TransactionID, at: ev.At}
		case stock.ReservationReleased:
			reservedDelta = -res[reservationKey{key.LedgerID, ev.TransactionID}].close()
			c = stockChange{kind: MovementRelease, source: ev.TransactionID, at: ev.At}
		case stock.StockSold:
			reservedDelta = -res[reservationKey{key.LedgerID, ev.TransactionID}].close()
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

		l := levels[key.LedgerID]
		if l == nil {
			l = &levelChange{key: key}
			levels[key.LedgerID] = l
			order = append(order, key.LedgerID)
		}
		l.onHand += c.onHand
		l.reserved += reservedDelta
		if c.avgCost != nil {
			l.avgCost = amountArg(c.avgCost)
		}
		l.last = e

		qty := c.onHand
		if c.kind == MovementReserve || c.kind == MovementRelease {
			qty = reservedDelta
		}
		mv.add(key, int64(e.Version), c.kind, qty, amountArg(c.unitCost), c.source, c.at)
	}

	if err := writeLevels(ctx, tx, merchant, order, levels); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `
        INSERT INTO rm_stock_movements (merchant_id, ledger_id, branch_id, sku, version, kind, qty, unit_cost, source_id, at)
        SELECT $1::uuid, m.* FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::bigint[], $8::bigint[], $9::uuid[], $10::timestamptz[]) AS m`,
		merchant, mv.ledger, mv.branch, mv.sku, mv.version, mv.kind, mv.qty, mv.unitCost, mv.source, mv.at); err != nil {
		return fmt.Errorf("insert rm_stock_movements: %w", err)
	}
	return writeReservations(ctx, tx, merchant, resKeys, res)
}

// reservationOf returns the transaction whose reservation ev opens or
// closes.
func reservationOf(ev stock.Event) (uuid.UUID, bool) {
	switch ev := ev.(type) {
	case stock.StockReserved:
		return ev.TransactionID, true
	case stock.ReservationReleased:
		return ev.TransactionID, true
	case stock.StockSold:
		return ev.TransactionID, true
	}
	return uuid.Nil, false
}

// reservationKey names one rm_stock_reservations row of the merchant.
type reservationKey struct{ ledger, transaction uuid.UUID }

// reservation is one transaction's reservation on a ledger during a batch:
// whether it was open in the table before the batch (stored) and whether it
// is open now.
type reservation struct {
	stored, open bool
	qty          int64
	at           time.Time
}

func (r *reservation) openQty() int64 {
	if r.open {
		return r.qty
	}
	return 0
}

// close closes the reservation and returns the units it held (0 without an
// open one: a sale without a reservation, or a release of nothing).
func (r *reservation) close() int64 {
	q := r.openQty()
	r.open, r.qty = false, 0
	return q
}

// loadReservations reads, in one statement (or takes preloaded), the open
// reservations of keys, and returns an entry for every key (open or not).
func loadReservations(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, keys []reservationKey) (map[reservationKey]*reservation, error) {
	if len(keys) == 0 {
		return map[reservationKey]*reservation{}, nil
	}
	if res, ok := takePreload[reservationKey, map[reservationKey]*reservation](ctx, merchant, keys); ok {
		return res, nil
	}
	ledgers, transactions := reservationArgs(keys)
	rows, err := tx.Query(ctx, reservationsSQL, merchant, ledgers, transactions)
	if err != nil {
		return nil, fmt.Errorf("read rm_stock_reservations: %w", err)
	}
	return scanReservations(keys)(rows)
}

// preload implements preloader: the reservations the events open or close.
func (Stock) preload(ctx context.Context, b *pgx.Batch, merchant uuid.UUID, events []eventstore.RecordedEvent) any {
	var keys []reservationKey
	seen := map[reservationKey]bool{}
	for _, e := range events {
		ev, err := decodeStock(ctx, e)
		if err != nil {
			return nil // ApplyBatch refuses the batch
		}
		if t, ok := reservationOf(ev); ok {
			if k := (reservationKey{ev.LedgerKey().LedgerID, t}); !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	ledgers, transactions := reservationArgs(keys)
	return newPreload[reservationKey, map[reservationKey]*reservation](merchant, keys).
		queue(b, scanReservations(keys), reservationsSQL, merchant, ledgers, transactions)
}

// decodeStock decodes a stock event, once per Runner transaction (see
// decodeMemo).
func decodeStock(ctx context.Context, e eventstore.RecordedEvent) (stock.Event, error) {
	memo, _ := ctx.Value(decodeMemoKey{}).(decodeMemo)
	if ev, ok := memo[e.ID].(stock.Event); ok {
		return ev, nil
	}
	ev, err := stock.Decode(e.Type, e.Data)
	if err != nil {
		return nil, fmt.Errorf("%s@%d: %w", e.Stream, e.Version, err)
	}
	if memo != nil {
		memo[e.ID] = ev
	}
	return ev, nil
}

const reservationsSQL = `
        SELECT r.ledger_id, r.transaction_id, r.qty FROM rm_stock_reservations r
        JOIN unnest($2::uuid[], $3::uuid[]) AS k(ledger_id, transaction_id) ON r.ledger_id = k.ledger_id AND r.transaction_id = k.transaction_id
        WHERE r.merchant_id = $1`

func reservationArgs(keys []reservationKey) (ledgers, transactions []uuid.UUID) {
	ledgers, transactions = make([]uuid.UUID, len(keys)), make([]uuid.UUID, len(keys))
	for i, k := range keys {
		ledgers[i], transactions[i] = k.ledger, k.transaction
	}
	return ledgers, transactions
}

// scanReservations returns what reads reservationsSQL's rows of keys into
// an entry for every key.
func scanReservations(keys []reservationKey) func(pgx.Rows) (map[reservationKey]*reservation, error) {
	return func(rows pgx.Rows) (map[reservationKey]*reservation, error) {
		defer rows.Close()
		out := make(map[reservationKey]*reservation, len(keys))
		for _, k := range keys {
			out[k] = &reservation{}
		}
		for rows.Next() {
			var k reservationKey
			var qty int64
			if err := rows.Scan(&k.ledger, &k.transaction, &qty); err != nil {
				return nil, fmt.Errorf("read rm_stock_reservations: %w", err)
			}
			if r := out[k]; r != nil {
				*r = reservation{stored: true, open: true, qty: qty}
			}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read rm_stock_reservations: %w", err)
		}
		return out, nil
	}
}

// writeReservations deletes the reservations the batch closed and upserts
// those it left open, one statement each (skipped when there are none).
// Each key is in one statement at most: a reservation opened and closed
// within the batch was never stored and needs neither, one closed and
// opened again is upserted with its last quantity.
func writeReservations(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, keys []reservationKey, res map[reservationKey]*reservation) error {
	var delLedgers, delTxs, upLedgers, upTxs []uuid.UUID
	var upQty []int64
	var upAt []time.Time
	for _, k := range keys {
		switch r := res[k]; {
		case r.open:
			// Open at the end means the batch reserved it last.
			upLedgers, upTxs, upQty, upAt = append(upLedgers, k.ledger), append(upTxs, k.transaction), append(upQty, r.qty), append(upAt, r.at)
		case r.stored:
			delLedgers, delTxs = append(delLedgers, k.ledger), append(delTxs, k.transaction)
		}
	}
	if len(delLedgers) > 0 {
		if _, err := tx.Exec(ctx, `
            DELETE FROM rm_stock_reservations r USING unnest($2::uuid[], $3::uuid[]) AS k(ledger_id, transaction_id)
            WHERE r.merchant_id = $1 AND r.ledger_id = k.ledger_id AND r.transaction_id = k.transaction_id`,
			merchant, delLedgers, delTxs); err != nil {
			return fmt.Errorf("delete rm_stock_reservations: %w", err)
		}
	}
	if len(upLedgers) > 0 {
		if _, err := tx.Exec(ctx, `
            INSERT INTO rm_stock_reservations (merchant_id, ledger_id, transaction_id, qty, reserved_at)
            SELECT $1::uuid, k.* FROM unnest($2::uuid[], $3::uuid[], $4::bigint[], $5::timestamptz[]) AS k
            ON CONFLICT (merchant_id, ledger_id, transaction_id) DO UPDATE SET qty = excluded.qty, reserved_at = excluded.reserved_at`,
			merchant, upLedgers, upTxs, upQty, upAt); err != nil {
			return fmt.Errorf("upsert rm_stock_reservations: %w", err)
		}
	}
	return nil
}

// levelChange is what a batch does to one ledger's rm_stock_levels row:
// deltas, the last average cost set (nil if none), and the ledger's last
// event of the batch (its version, position and time).
type levelChange struct {
	key              stock.Key
	onHand, reserved int64
	avgCost          *int64
	last             eventstore.RecordedEvent
}

// writeLevels upserts one row per ledger, creating it on the ledger's first
// event. The current row is joined in for its average cost: excluded cannot
// carry "no average in this batch" (avg_cost is NOT NULL, and a new row
// needs 0 then), so the average is resolved before the insert. The Runner's
// stream lock keeps that read current.
func writeLevels(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, order []uuid.UUID, levels map[uuid.UUID]*levelChange) error {
	n := len(order)
	ledgers, branches, skus := make([]uuid.UUID, n), make([]uuid.UUID, n), make([]string, n)
	onHand, reserved, avg := make([]int64, n), make([]int64, n), make([]*int64, n)
	versions, majors, minors, at := make([]int64, n), make([]int64, n), make([]int64, n), make([]time.Time, n)
	for i, id := range order {
		l := levels[id]
		ledgers[i], branches[i], skus[i] = id, l.key.BranchID, l.key.SKU
		onHand[i], reserved[i], avg[i] = l.onHand, l.reserved, l.avgCost
		versions[i], majors[i], minors[i], at[i] = int64(l.last.Version), int64(l.last.Position.Major), int64(l.last.Position.Minor), l.last.RecordedAt
	}
	_, err := tx.Exec(ctx, `
        INSERT INTO rm_stock_levels AS l (merchant_id, ledger_id, branch_id, sku, on_hand, reserved, avg_cost, version, pos_major, pos_minor, updated_at)
        SELECT $1::uuid, v.ledger_id, v.branch_id, v.sku, v.on_hand, v.reserved, coalesce(v.avg_cost, cur.avg_cost, 0), v.version, v.pos_major, v.pos_minor, v.updated_at
        FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::timestamptz[])
            AS v(ledger_id, branch_id, sku, on_hand, reserved, avg_cost, version, pos_major, pos_minor, updated_at)
        LEFT JOIN rm_stock_levels cur ON cur.merchant_id = $1::uuid AND cur.ledger_id = v.ledger_id
        ON CONFLICT (merchant_id, ledger_id) DO UPDATE SET
            on_hand = l.on_hand + excluded.on_hand, reserved = l.reserved + excluded.reserved,
            avg_cost = excluded.avg_cost, version = excluded.version,
            pos_major = excluded.pos_major, pos_minor = excluded.pos_minor, updated_at = excluded.updated_at`,
		merchant, ledgers, branches, skus, onHand, reserved, avg, versions, majors, minors, at)
	if err != nil {
		return fmt.Errorf("upsert rm_stock_levels: %w", err)
	}
	return nil
}

// movementRows are rm_stock_movements rows as column arrays, for unnest.
type movementRows struct {
	ledger, branch, source []uuid.UUID
	sku, kind              []string
	version, qty           []int64
	unitCost               []*int64
	at                     []time.Time
}

func (m *movementRows) add(key stock.Key, version int64, kind string, qty int64, unitCost *int64, source uuid.UUID, at time.Time) {
	m.ledger, m.branch, m.sku = append(m.ledger, key.LedgerID), append(m.branch, key.BranchID), append(m.sku, key.SKU)
	m.version, m.kind, m.qty = append(m.version, version), append(m.kind, kind), append(m.qty, qty)
	m.unitCost, m.source, m.at = append(m.unitCost, unitCost), append(m.source, source), append(m.at, at)
}

// amountArg is a nullable bigint argument.
func amountArg(a *money.Amount) *int64 {
	if a == nil {
		return nil
	}
	v := int64(*a)
	return &v
}
