package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/eventstore"
)

// Ledger is the append-only table of anchors, audit_anchors
// (migrations/00004_audit_anchors.sql), on PostgreSQL. Whatever backend holds
// the events, anchors live here. It is safe for concurrent use.
//
// A row holds either every head of the merchant (full) or only the heads
// that changed since the merchant's previous anchor (a delta), so that
// anchoring a merchant with many streams every minute stores what moved,
// not everything again. Reading an anchor rebuilds its heads from the last
// full row and the deltas after it; the signed root authenticates the
// result.
type Ledger struct {
	pool *pgxpool.Pool
}

// NewLedger returns the ledger on pool, whose role needs SELECT and INSERT
// on audit_anchors (pos_app has exactly those).
func NewLedger(pool *pgxpool.Pool) *Ledger { return &Ledger{pool: pool} }

const anchorColumns = `SELECT seq, merchant_id::text, position, created_at, stream_count, event_count,
    root, prev, key_id, signature, is_full, heads FROM audit_anchors`

// storedAnchor is one row: an anchor and its stored heads.
type storedAnchor struct {
	Anchor
	full   bool
	leaves []Leaf
}

// MalformedAnchorError reports an anchor row that cannot be read: a
// position or stored heads that do not decode (only a row written behind the
// service's back has one). Verification reports it as a finding;
// anchoring starts a new chain over it.
type MalformedAnchorError struct {
	Seq int64
	Err error
}

func (e *MalformedAnchorError) Error() string {
	return fmt.Sprintf("audit: anchor %d is malformed: %v", e.Seq, e.Err)
}

func (e *MalformedAnchorError) Unwrap() error { return e.Err }

func scanAnchor(row pgx.Row) (storedAnchor, error) {
	var s storedAnchor
	var pos string
	var streams, events int64
	var heads []byte
	if err := row.Scan(&s.Seq, &s.MerchantID, &pos, &s.CreatedAt, &streams, &events,
		&s.Root, &s.Prev, &s.KeyID, &s.Signature, &s.full, &heads); err != nil {
		return s, err
	}
	s.CreatedAt = s.CreatedAt.UTC()
	s.Streams, s.Events = uint64(streams), uint64(events)
	var err error
	if s.Position, err = eventstore.ParsePosition(pos); err != nil {
		return s, &MalformedAnchorError{Seq: s.Seq, Err: err}
	}
	if s.leaves, err = decodeLeaves(heads); err != nil {
		return s, &MalformedAnchorError{Seq: s.Seq, Err: err}
	}
	return s, nil
}

// ChainBreaks walks every anchor of merchant in order and returns the
// sequence numbers of those that do not chain to the row before them (Prev
// is not the hash of its signature, or, for the first row, not empty), and
// of those without a signature (never a genuine anchor): a row removed, or
// a genuine anchor copied in again, anywhere in the merchant's history.
// Rows removed from the end leave no break; the anchors kept outside the
// database show those (CheckLog). It reads no heads, and checks no
// signature against a key (a chain outlives a change of key).
func (l *Ledger) ChainBreaks(ctx context.Context, merchant string) ([]int64, error) {
	if _, err := uuid.Parse(merchant); err != nil {
		return nil, nil
	}
	rows, err := l.pool.Query(ctx, `SELECT seq, prev, signature FROM audit_anchors WHERE merchant_id = $1 ORDER BY seq`, merchant)
	if err != nil {
		return nil, fmt.Errorf("audit: read the anchor chain of %s: %w", merchant, err)
	}
	defer rows.Close()
	var breaks []int64
	var seq int64
	var prev, sig []byte
	var want []byte // what the next row's Prev must be: empty for the first
	for rows.Next() {
		if err := rows.Scan(&seq, &prev, &sig); err != nil {
			return nil, fmt.Errorf("audit: read the anchor chain of %s: %w", merchant, err)
		}
		if !bytes.Equal(prev, want) || len(sig) == 0 {
			breaks = append(breaks, seq)
		}
		want = chainHash(sig) // as the Anchorer chains on, even after a row without a signature
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read the anchor chain of %s: %w", merchant, err)
	}
	return breaks, nil
}

// Latest returns merchant's latest anchor with its Heads rebuilt, or nil
// when the merchant has none. It does not check the signature or the root:
// Check does.
func (l *Ledger) Latest(ctx context.Context, merchant string) (*Anchor, error) {
	return l.at(ctx, merchant, 0)
}

// maxLookBack bounds how many anchors LatestValid tries.
const maxLookBack = 100

// LatestValid returns merchant's most recent anchor before seq that verifies
// with key (signature, root and chain), or nil when none of the
// maxLookBack anchors before it does (an anchor rebuilt from a row that
// cannot be read does not). It is what to compare with when the latest
// anchor is forged, altered or unreadable.
func (l *Ledger) LatestValid(ctx context.Context, merchant string, key PublicKey, before int64) (*Anchor, error) {
	rows, err := l.pool.Query(ctx, `SELECT seq FROM audit_anchors WHERE merchant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`,
		merchant, before, maxLookBack)
	if err != nil {
		return nil, fmt.Errorf("audit: read anchors of %s: %w", merchant, err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("audit: read anchors of %s: %w", merchant, err)
	}
	for _, seq := range seqs {
		a, err := l.at(ctx, merchant, seq)
		if _, ok := errors.AsType[*MalformedAnchorError](err); ok {
			continue // a row it is rebuilt from cannot be read: an older one may verify
		}
		if err != nil {
			return nil, err
		}
		if a != nil && a.verifies(key) {
			return a, nil
		}
	}
	return nil, nil
}

// at rebuilds merchant's anchor seq (the latest when seq is 0) from the last
// full anchor at or before it and the deltas after that one.
func (l *Ledger) at(ctx context.Context, merchant string, seq int64) (*Anchor, error) {
	if _, err := uuid.Parse(merchant); err != nil {
		return nil, nil // no anchor belongs to a merchant id that is not a UUID
	}
	rows, err := l.pool.Query(ctx, anchorColumns+`
        WHERE merchant_id = $1 AND ($2::bigint = 0 OR seq <= $2::bigint)
          AND seq >= coalesce((SELECT max(seq) FROM audit_anchors
                               WHERE merchant_id = $1 AND is_full AND ($2::bigint = 0 OR seq <= $2::bigint)), 0)
        ORDER BY seq`, merchant, seq)
	if err != nil {
		return nil, fmt.Errorf("audit: read anchors of %s: %w", merchant, err)
	}
	defer rows.Close()
	var latest *Anchor
	var heads map[string]eventstore.Head
	broken, deltas := false, 0
	for rows.Next() {
		s, err := scanAnchor(rows)
		if err != nil {
			return nil, fmt.Errorf("audit: read anchors of %s: %w", merchant, err)
		}
		switch {
		case latest == nil && !s.full:
			broken = true // the full anchor the deltas build on is gone
		case latest != nil && string(s.Prev) != string(chainHash(latest.Signature)):
			broken = true
		}
		if s.full || heads == nil {
			heads = make(map[string]eventstore.Head, len(s.leaves))
			deltas = 0
		} else {
			deltas++
		}
		for _, lf := range s.leaves {
			heads[lf.Stream] = eventstore.Head{Version: lf.Version, Hash: lf.Hash}
		}
		a := s.Anchor
		latest = &a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read anchors of %s: %w", merchant, err)
	}
	if latest == nil || (seq != 0 && latest.Seq != seq) {
		return nil, nil
	}
	latest.Heads, latest.LinkBroken, latest.deltas = heads, broken, deltas
	return latest, nil
}

// Merchants returns every merchant that has an anchor.
func (l *Ledger) Merchants(ctx context.Context) ([]string, error) {
	rows, err := l.pool.Query(ctx, `SELECT DISTINCT merchant_id::text FROM audit_anchors ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("audit: list anchored merchants: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("audit: list anchored merchants: %w", err)
	}
	return out, nil
}

// Get returns the anchor with sequence number seq, without its Heads, and
// false when there is none.
func (l *Ledger) Get(ctx context.Context, seq int64) (Anchor, bool, error) {
	s, err := scanAnchor(l.pool.QueryRow(ctx, anchorColumns+` WHERE seq = $1`, seq))
	if errors.Is(err, pgx.ErrNoRows) {
		return Anchor{}, false, nil
	}
	if err != nil {
		return Anchor{}, false, fmt.Errorf("audit: read anchor %d: %w", seq, err)
	}
	return s.Anchor, true, nil
}

// lockMerchant serializes anchor writers of one merchant (several API
// instances may each run an Anchorer) until tx ends, and returns the
// sequence number and signature of the merchant's latest anchor (0 and nil
// when none).
func lockMerchant(ctx context.Context, tx pgx.Tx, merchant string) (int64, []byte, error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('audit_anchors/' || $1::text, 0))`, merchant); err != nil {
		return 0, nil, fmt.Errorf("audit: lock anchors of %s: %w", merchant, err)
	}
	return lastRow(ctx, tx, merchant)
}

// lastRow returns the sequence number and signature of merchant's latest
// anchor row (0 and nil when none), without decoding anything else.
func lastRow(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, merchant string) (int64, []byte, error) {
	var seq int64
	var sig []byte
	err := q.QueryRow(ctx, `SELECT seq, signature FROM audit_anchors WHERE merchant_id = $1 ORDER BY seq DESC LIMIT 1`, merchant).Scan(&seq, &sig)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("audit: latest anchor of %s: %w", merchant, err)
	}
	return seq, sig, nil
}

// insert stores a signed anchor with leaves (every head when full, else the
// changed ones) and sets a.Seq.
func insert(ctx context.Context, tx pgx.Tx, a *Anchor, full bool, leaves []Leaf) error {
	prev := a.Prev
	if prev == nil {
		prev = []byte{}
	}
	err := tx.QueryRow(ctx, `INSERT INTO audit_anchors
        (merchant_id, position, created_at, stream_count, event_count, root, prev, key_id, signature, is_full, heads)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq`,
		a.MerchantID, a.Position.String(), a.CreatedAt, int64(a.Streams), int64(a.Events),
		a.Root, prev, a.KeyID, a.Signature, full, encodeLeaves(leaves)).Scan(&a.Seq)
	if err != nil {
		return fmt.Errorf("audit: store anchor of %s: %w", a.MerchantID, err)
	}
	return nil
}

// cloneHeads copies a head map (the hashes are never modified in place).
func cloneHeads(h map[string]eventstore.Head) map[string]eventstore.Head {
	if h == nil {
		return map[string]eventstore.Head{}
	}
	return maps.Clone(h)
}

// truncateMicro keeps what PostgreSQL's timestamptz keeps, so that a signed
// time reads back identical.
func truncateMicro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
