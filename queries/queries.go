// Package queries reads the read models that package projections builds
// (SPEC §5): transaction lists and details, and daily sales.
//
// Tenancy is enforced by PostgreSQL, not only here. Queries run as the role
// pos_api (Connect), which may only SELECT read models, owns no table and
// has no BYPASSRLS, so the tables' forced row-level security always applies;
// and every query runs in its own read-only transaction that sets
// pos.merchant_id with set_config(…, true), transaction-locally, so a pooled
// connection never carries one merchant's context into another's request. A
// row of another merchant is therefore simply not there: GetTransaction
// answers ErrNotFound for it, exactly as for a missing one.
//
// Read models trail the event store: a query reflects the events the
// projections have applied so far (projections.Checkpoints tells how far).
package queries

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/internal/pgpool"
)

// Role is the database role queries work as (migrations/00006_read_models.sql).
const Role = "pos_api"

// Errors.
var (
	// ErrNotFound reports a resource that is missing or another merchant's.
	ErrNotFound = errors.New("queries: not found")
	// ErrBadCursor reports a cursor that was altered, made with another key,
	// or made for another merchant or another filter (400).
	ErrBadCursor = errors.New("queries: bad cursor")
	// ErrInvalidFilter reports a filter that cannot be asked: an unknown
	// status, a date range the wrong way round or too long (400).
	ErrInvalidFilter = errors.New("queries: invalid filter")
	// ErrNoMerchant reports a query without a merchant (the nil UUID). It is
	// refused rather than run, though it would match no row.
	ErrNoMerchant = errors.New("queries: no merchant")
)

// Connect opens a pool on url whose connections log in as Role (see
// pgpool.Open), read-only.
func Connect(ctx context.Context, url string) (*pgxpool.Pool, error) {
	return ConnectSized(ctx, url, 0)
}

// ConnectSized is Connect with a pool of maxConns connections; 0 means the
// URL's pool_max_conns, or pgpool.DefaultMaxConns. Queries never write: the
// connections default to read-only, which stops a bug that tries.
func ConnectSized(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	pool, err := pgpool.Open(ctx, url, Role, "SET default_transaction_read_only = on", maxConns)
	if err != nil {
		return nil, fmt.Errorf("queries: %w", err)
	}
	return pool, nil
}

// Reader runs the queries. It is safe for concurrent use.
type Reader struct {
	pool *pgxpool.Pool
	key  CursorKey
}

// New returns a reader on pool, which must work as Role (Connect): a pool of
// a superuser or of the tables' owner would bypass row-level security.
// key signs list cursors.
func New(pool *pgxpool.Pool, key CursorKey) (*Reader, error) {
	if len(key.key) == 0 {
		return nil, errors.New("queries: a cursor key is required (NewCursorKey)")
	}
	return &Reader{pool: pool, key: key}, nil
}

// inMerchant runs fn in a read-only transaction scoped to merchant.
func (r *Reader) inMerchant(ctx context.Context, merchant uuid.UUID, fn func(pgx.Tx) error) error {
	if merchant == uuid.Nil {
		return ErrNoMerchant
	}
	return pgx.BeginTxFunc(ctx, r.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant.String()); err != nil {
			return fmt.Errorf("queries: set merchant: %w", err)
		}
		return fn(tx)
	})
}
