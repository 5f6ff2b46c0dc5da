// Package pgpool opens the service's PostgreSQL pools: each connection works
// as one role with a few session settings, so what a component may do is
// decided by the database (pgstore writes as pos_app, queries read as
// pos_api), not only by its code.
package pgpool

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultMaxConns is the pool size unless the URL sets pool_max_conns:
// pgxpool's own default (4 on this machine) queues concurrent requests
// behind each other, while PostgreSQL handles far more connections.
const DefaultMaxConns = 32

// Open returns a pool on url whose every connection runs SET ROLE role, any
// extra settings (SQL, run on connect), and ends a transaction left idle for
// 30 s: an abandoned transaction would hold every event-feed reader back
// (see pgstore). maxConns 0 means the URL's pool_max_conns, or
// DefaultMaxConns. The url's user must be a member of role (or a superuser).
func Open(ctx context.Context, url, role, settings string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	switch {
	case maxConns > 0:
		cfg.MaxConns = maxConns
	case !strings.Contains(url, "pool_max_conns"):
		cfg.MaxConns = DefaultMaxConns
	}
	setup := "SET ROLE " + pgx.Identifier{role}.Sanitize() + "; SET idle_in_transaction_session_timeout = '30s'"
	if settings != "" {
		setup += "; " + settings
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, setup)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect as %s: %w", role, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect as %s: %w", role, err)
	}
	return pool, nil
}
