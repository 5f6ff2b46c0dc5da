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
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Role is the database role queries work as (migrations/00006_read_models.sql).
const Role = "pos_api"

// defaultMaxConns is the pool size unless the URL sets pool_max_conns.
const defaultMaxConns = 32

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

// Connect opens a pool on url whose connections work as Role, read-only.
// The url's user must be a member of Role (or a superuser): the pool runs
// SET ROLE on every new connection.
func Connect(ctx context.Context, url string) (*pgxpool.Pool, error) {
	return ConnectSized(ctx, url, 0)
}

// ConnectSized is Connect with a pool of maxConns connections; 0 means the
// URL's pool_max_conns, or 32.
func ConnectSized(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("queries: database url: %w", err)
	}
	switch {
	case maxConns > 0:
		cfg.MaxConns = maxConns
	case !strings.Contains(url, "pool_max_conns"):
		cfg.MaxConns = defaultMaxConns
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		// Queries never write; a read-only default stops a bug that tries.
		// A transaction left open would hold the event feed back (pgstore).
		_, err := c.Exec(ctx, "SET ROLE "+Role+"; SET default_transaction_read_only = on; SET idle_in_transaction_session_timeout = '30s'")
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("queries: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("queries: connect: %w", err)
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
