// Package pgpool opens the service's PostgreSQL pools: each connection logs
// in as one role, with a few session settings, so what a component may do is
// decided by the database (pgstore writes as pos_app, queries read as
// pos_api), not only by its code. The login is the role itself, never a
// more privileged user that switched to it: no statement can RESET ROLE
// to anything that owns a table.
package pgpool

import (
	"context"
	"fmt"
	neturl "net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// LoginAs returns the connection string url (a URL or keyword/value
// string) with role as its user and an empty password; later settings win
// in both forms.
func LoginAs(url, role string) string {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		return url + sep + "user=" + neturl.QueryEscape(role) + "&password="
	}
	return url + " user='" + role + "' password=''"
}

// DefaultMaxConns is the pool size unless the URL sets pool_max_conns.
// PostgreSQL's cores, not the requests waiting, bound how much of their
// work runs at once: connections beyond a few per core only queue for
// those cores inside PostgreSQL, where every backend, the projections'
// too, waits its turn behind them. On two cores, 8 rather than 32 halved
// the projections' lag and the commands' p99 under the same load, open or
// closed loop, for a closed-loop throughput within the noise
// (docs/performance.md); pgxpool's own default (4 here) left requests
// waiting with cores idle.
const DefaultMaxConns = 8

// Open returns a pool on url whose every connection logs in as role, runs
// any extra settings (SQL, run on connect), and ends a transaction left idle
// for 30 s: an abandoned transaction would hold every event-feed reader back
// (see pgstore). A url whose user is not role (the migrating login's
// DATABASE_URL) logs in as role instead, without that user's password (nor
// PGPASSWORD): the server must let role in by its own means, trust
// locally, or role's line of the password file (~/.pgpass, PGPASSFILE).
// Client certificates in url stay the url user's: a role that logs in with
// its own needs a url of its own. maxConns 0 means the URL's
// pool_max_conns, or DefaultMaxConns.
func Open(ctx context.Context, url, role, settings string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if cfg.ConnConfig.User != role {
		// Parsed again as role, so that role's password-file line is
		// looked up (ParseConfig does that for the user it parses).
		if cfg, err = pgxpool.ParseConfig(LoginAs(url, role)); err != nil {
			return nil, fmt.Errorf("database url: %w", err)
		}
	}
	switch {
	case maxConns > 0:
		cfg.MaxConns = maxConns
	case !strings.Contains(url, "pool_max_conns"):
		cfg.MaxConns = DefaultMaxConns
	}
	setup := "SET idle_in_transaction_session_timeout = '30s'"
	if settings != "" {
		setup += "; " + settings
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		// uuid.UUID as the 16 bytes it is: pgx would otherwise take it as
		// a driver.Valuer, format it as text, fail to encode that in
		// binary, and parse it back, on every parameter and every scan.
		pgxuuid.Register(c.TypeMap())
		_, err := c.Exec(ctx, setup)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect as %s: %w", role, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect as %s: %w (the pools log in as pos_app and pos_api: the migrations let them log in; the server must accept them, or POS_APP_DATABASE_URL and POS_API_DATABASE_URL must name their logins)", role, err)
	}
	return pool, nil
}
