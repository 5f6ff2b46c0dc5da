package queries

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/stock"
	"pos/eventstore"
)

// StockFilter narrows Stock. The zero filter is every ledger of the
// merchant.
type StockFilter struct {
	// BranchID, when set, keeps one branch's ledgers.
	BranchID *uuid.UUID
	// SKU, when set, keeps that SKU's ledgers (exact match).
	SKU string
}

// StockLevel is one ledger (a SKU in a branch) as rm_stock_levels holds it.
// Units may be negative only where the merchant allows negative stock.
type StockLevel struct {
	// LedgerID is the ledger's id (stock.LedgerID), which the audit paths
	// take.
	LedgerID uuid.UUID
	BranchID uuid.UUID
	SKU      string
	OnHand   int64
	Reserved int64
	// Available is OnHand − Reserved.
	Available int64
	// AvgCost is the moving-average unit cost, in minor units.
	AvgCost int64
	// Version is the ledger's version as of the read model.
	Version uint64
	// Position is the feed position of the last event the row reflects.
	Position eventstore.Position
	// UpdatedAt is when that event was recorded.
	UpdatedAt time.Time
}

// StockPage is one page of Stock. NextCursor is empty on the last page.
type StockPage struct {
	Items      []StockLevel
	NextCursor string
}

// StockMovement is one event of a ledger as rm_stock_movements holds it
// (migrations/00008_stock_read_models.sql says which event gives which
// Kind): Qty is signed, + in and − out, the change of on hand, or of
// reserved units for kinds "reserve" and "release".
type StockMovement struct {
	LedgerID uuid.UUID
	BranchID uuid.UUID
	SKU      string
	// Version is the event's version in the ledger's stream.
	Version uint64
	Kind    string
	Qty     int64
	// UnitCost is nil for kinds that carry no cost (adjustment, reserve,
	// release).
	UnitCost *int64
	// SourceID is the receipt, adjustment, transaction, refund or transfer
	// the movement comes from.
	SourceID uuid.UUID
	// At is when the movement happened (the event's own time).
	At time.Time
}

// StockMovementPage is one page of StockMovements. NextCursor is empty on
// the last page.
type StockMovementPage struct {
	Items      []StockMovement
	NextCursor string
}

func (f StockFilter) validate() error {
	if f.SKU == "" {
		return nil
	}
	return stock.CheckSKU(f.SKU)
}

// Stock returns a page of merchant's stock levels matching f, ordered by
// branch id, then SKU (byte-wise), after cursor ("" for the first page).
// limit ≤ 0 means DefaultLimit; above MaxLimit it is MaxLimit. A cursor that
// was altered, or made for another merchant or another filter, is
// ErrBadCursor; a malformed SKU is a *domain.ValidationError.
//
// Only ledgers that ever moved have a level: a SKU never received is absent
// (its stock is zero).
func (r *Reader) Stock(ctx context.Context, merchant uuid.UUID, f StockFilter, cursor string, limit int) (StockPage, error) {
	if err := f.validate(); err != nil {
		return StockPage{}, err
	}
	limit = pageLimit(limit)
	args := []any{merchant}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"merchant_id = $1"}
	if f.BranchID != nil {
		where = append(where, "branch_id = "+arg(*f.BranchID))
	}
	if f.SKU != "" {
		where = append(where, "sku = "+arg(f.SKU))
	}
	if cursor != "" {
		payload, err := r.key.open(levelsCursor, merchant, f.canonical(), cursor)
		if err != nil || len(payload) < 16 {
			return StockPage{}, ErrBadCursor
		}
		branch, _ := uuid.FromBytes(payload[:16])
		where = append(where, fmt.Sprintf("(branch_id, sku) > (%s, %s)", arg(branch), arg(string(payload[16:]))))
	}
	sql := `SELECT ledger_id, branch_id, sku, on_hand, reserved, avg_cost, version, pos_major, pos_minor, updated_at
        FROM rm_stock_levels WHERE ` + strings.Join(where, " AND ") + ` ORDER BY branch_id, sku LIMIT ` + arg(limit+1)

	var page StockPage
	err := r.inMerchant(ctx, merchant, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("queries: stock levels: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var l StockLevel
			var version, major, minor int64
			if err := rows.Scan(&l.LedgerID, &l.BranchID, &l.SKU, &l.OnHand, &l.Reserved, &l.AvgCost, &version, &major, &minor, &l.UpdatedAt); err != nil {
				return fmt.Errorf("queries: stock levels: %w", err)
			}
			l.Available = l.OnHand - l.Reserved
			l.Version = uint64(version)
			l.Position = eventstore.Position{Major: uint64(major), Minor: uint64(minor)}
			l.UpdatedAt = l.UpdatedAt.UTC()
			page.Items = append(page.Items, l)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("queries: stock levels: %w", err)
		}
		return nil
	})
	if err != nil {
		return StockPage{}, err
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.NextCursor = r.key.seal(levelsCursor, merchant, f.canonical(), append(last.BranchID[:], last.SKU...))
	}
	return page, nil
}

// StockMovements returns a page of the movements of merchant's sku, in one
// branch or (branch nil) in all of them, newest first: by the movement's
// time, then ledger id and version, descending, after cursor ("" for the
// first page). limit ≤ 0 means DefaultLimit; above MaxLimit it is MaxLimit.
// A cursor that was altered, or made for another merchant, SKU or branch, is
// ErrBadCursor; a malformed SKU is a *domain.ValidationError. A SKU that
// never moved has no movements (an empty page, not ErrNotFound).
//
// Paging is by keyset, so movements recorded while a client pages never
// shift or repeat the rows it has not seen yet.
func (r *Reader) StockMovements(ctx context.Context, merchant uuid.UUID, sku string, branch *uuid.UUID, cursor string, limit int) (StockMovementPage, error) {
	if err := stock.CheckSKU(sku); err != nil {
		return StockMovementPage{}, err
	}
	limit = pageLimit(limit)
	filter := StockFilter{BranchID: branch, SKU: sku}.canonical()
	args := []any{merchant, sku}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"merchant_id = $1", "sku = $2"}
	if branch != nil {
		where = append(where, "branch_id = "+arg(*branch))
	}
	if cursor != "" {
		payload, err := r.key.open(movementsCursor, merchant, filter, cursor)
		if err != nil || len(payload) != 8+16+8 {
			return StockMovementPage{}, ErrBadCursor
		}
		at := time.UnixMicro(int64(binary.BigEndian.Uint64(payload[:8]))).UTC()
		ledger, _ := uuid.FromBytes(payload[8:24])
		version := int64(binary.BigEndian.Uint64(payload[24:]))
		where = append(where, fmt.Sprintf("(at, ledger_id, version) < (%s, %s, %s)", arg(at), arg(ledger), arg(version)))
	}
	sql := `SELECT ledger_id, branch_id, sku, version, kind, qty, unit_cost, source_id, at
        FROM rm_stock_movements WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY at DESC, ledger_id DESC, version DESC LIMIT ` + arg(limit+1)

	var page StockMovementPage
	err := r.inMerchant(ctx, merchant, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("queries: stock movements: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var m StockMovement
			var version int64
			if err := rows.Scan(&m.LedgerID, &m.BranchID, &m.SKU, &version, &m.Kind, &m.Qty, &m.UnitCost, &m.SourceID, &m.At); err != nil {
				return fmt.Errorf("queries: stock movements: %w", err)
			}
			m.Version = uint64(version)
			m.At = m.At.UTC()
			page.Items = append(page.Items, m)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("queries: stock movements: %w", err)
		}
		return nil
	})
	if err != nil {
		return StockMovementPage{}, err
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		payload := binary.BigEndian.AppendUint64(nil, uint64(last.At.UnixMicro()))
		payload = append(payload, last.LedgerID[:]...)
		payload = binary.BigEndian.AppendUint64(payload, last.Version)
		page.NextCursor = r.key.seal(movementsCursor, merchant, filter, payload)
	}
	return page, nil
}

// pageLimit applies DefaultLimit and MaxLimit.
func pageLimit(limit int) int {
	if limit <= 0 {
		return DefaultLimit
	}
	return min(limit, MaxLimit)
}

// canonical is an unambiguous encoding of the filter (a presence flag and
// fixed-size branch, a length-prefixed SKU).
func (f StockFilter) canonical() []byte {
	b := make([]byte, 0, 1+16+2+len(f.SKU))
	if f.BranchID != nil {
		b = append(b, 1)
		b = append(b, f.BranchID[:]...)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.SKU)))
	return append(b, f.SKU...)
}

// Stock cursors follow the scheme of the transaction cursors (cursor.go):
// base64url without padding of
//
//	version (1) | keyset (variable) | MAC (32)
//
// where MAC is HMAC-SHA256 under the cursor key of the purpose label, the
// merchant, the filter's canonical form and the bytes before it. Each list
// has its own purpose, so a cursor of one list is refused by another just
// as an altered one is. The keysets: levels, branch id (16) then the SKU's
// bytes; movements, at in Unix µs (8), ledger id (16), version (8).
const (
	stockCursorVersion = 1
	levelsCursor       = "pos/queries/stock-levels-cursor"
	movementsCursor    = "pos/queries/stock-movements-cursor"
	// maxStockCursorLen bounds what open decodes: a keyset is at most a
	// branch and a SKU of MaxSKULen characters of up to 4 bytes.
	maxStockCursorLen = 1 + 16 + 4*stock.MaxSKULen + sha256.Size
)

func (k CursorKey) stockMAC(purpose string, merchant uuid.UUID, filter, payload []byte) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write(merchant[:])
	m.Write(filter)
	m.Write(payload)
	return m.Sum(nil)
}

// seal returns the cursor of keyset for purpose, merchant and filter.
func (k CursorKey) seal(purpose string, merchant uuid.UUID, filter, keyset []byte) string {
	b := make([]byte, 0, 1+len(keyset)+sha256.Size)
	b = append(b, stockCursorVersion)
	b = append(b, keyset...)
	b = append(b, k.stockMAC(purpose, merchant, filter, b)...)
	return cursorEncoding.EncodeToString(b)
}

// open verifies a cursor made by seal with the same purpose, merchant and
// filter, and returns its keyset.
func (k CursorKey) open(purpose string, merchant uuid.UUID, filter []byte, cursor string) ([]byte, error) {
	if cursorEncoding.DecodedLen(len(cursor)) > maxStockCursorLen {
		return nil, ErrBadCursor
	}
	b, err := cursorEncoding.DecodeString(cursor)
	if err != nil || len(b) < 1+sha256.Size || b[0] != stockCursorVersion {
		return nil, ErrBadCursor
	}
	payload, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if !hmac.Equal(sum, k.stockMAC(purpose, merchant, filter, payload)) {
		return nil, ErrBadCursor
	}
	return payload[1:], nil
}
