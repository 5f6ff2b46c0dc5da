package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"pos/api"
	"pos/cache"
	"pos/commands"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/projections"
	"pos/queries"
)

// Read side (SPEC §5): the queries' reader and, in process, the projections
// runner that keeps the read models up to date by following the store.

// cursorKey returns the key that signs list cursors: POS_CURSOR_KEY, or the
// development key, with a warning.
func cursorKey(cfg config, log *slog.Logger) (queries.CursorKey, error) {
	if cfg.CursorKey == "" {
		log.Warn("POS_CURSOR_KEY is not set: list cursors are signed with the development key; set it in production")
		return queries.NewCursorKey([]byte(devCursorKey))
	}
	secret, err := base64.StdEncoding.DecodeString(cfg.CursorKey)
	if err != nil {
		return queries.CursorKey{}, fmt.Errorf("POS_CURSOR_KEY: not base64: %w", err)
	}
	key, err := queries.NewCursorKey(secret)
	if err != nil {
		return queries.CursorKey{}, fmt.Errorf("POS_CURSOR_KEY: %w", err)
	}
	return key, nil
}

// workerPoolSize is the connections of the workers' pool: the partitions
// are applied one message at a time each, so a few connections serve them.
const workerPoolSize = 10

// apiReads sets what the API's queries need in apiCfg: reader, the
// projections' checkpoints (read on the API's pool, not the workers', for
// X-Min-Position), the rebuilds, and the hot reads when the cache is on.
func apiReads(ctx context.Context, cfg config, log *slog.Logger, apiCfg *api.Config, pool *pgxpool.Pool, store eventstore.Store, reg *eventstore.Registry,
	reader *queries.Reader, hot *cache.Cache, partitions int) {
	apiCfg.Reader, apiCfg.Checkpoints, apiCfg.Partitions = reader, projections.NewCheckpoints(pool, partitions), partitions
	// The server's rebuild.Watcher drops caches after any swap (see apiServer).
	apiCfg.Rebuilds = newRebuilder(ctx, cfg, log, pool, store, reg, nil)
	if hot != nil {
		// One value for transaction details and stock levels: api.Config
		// has no field of its own for the latter, the API finds it on
		// HotReads (api.StockGetter).
		apiCfg.HotReads = hotReads{cache.NewReader(hot, reader), cache.NewStockReader(hot, reader)}
		apiCfg.HotDailySales = cache.NewDailySalesReader(hot, reader)
		addReadyCheck(&apiCfg.OptionalChecks, "cache", hot.Ping)
	}
}

// readSide opens the queries' pool (closed when ctx ends), returns the
// cache of hot reads (nil when off), sets apiCfg's
// Reader, Checkpoints and Partitions, and starts over pool, until ctx ends,
// a projections runner that keeps the read models up to date and the
// process managers' runner, which sends its commands through h: through
// NATS or in process, see startProjections (none with POS_READ_SIDE=off:
// other processes keep the read models). The returned channel is closed
// once the workers have stopped, after ctx ended (at once when there are
// none).
func readSide(ctx context.Context, cfg config, log *slog.Logger, apiCfg *api.Config, store eventstore.Store, pool *pgxpool.Pool, reg *eventstore.Registry, h *commands.Handlers) (workersStopped <-chan struct{}, hot *cache.Cache, err error) {
	key, err := cursorKey(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	qpool, err := queries.Connect(ctx, cfg.APIDatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	context.AfterFunc(ctx, qpool.Close)
	if err := apiCfg.Telemetry.ObservePool("queries", qpool); err != nil {
		return nil, nil, err
	}
	addReadyCheck(&apiCfg.ReadyChecks, "read_store", qpool.Ping)
	reader, err := queries.New(qpool, key)
	if err != nil {
		return nil, nil, err
	}
	// What the workers use (their pool, and the cache they invalidate after
	// each commit) closes after they stop, not when ctx ends: a consumer
	// finishes the messages it holds first (see consume.Run).
	wdone := make(chan struct{})
	defer func() {
		if err != nil {
			close(wdone)
		}
	}()
	closing, closeWorkers := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, func() { <-wdone; closeWorkers() })
	hot, err = readCache(closing, cfg, log, apiCfg)
	if err != nil {
		return nil, nil, err
	}
	if cfg.ReadSide == readSideOff {
		// The API alone: the read models are kept by other processes.
		apiReads(ctx, cfg, log, apiCfg, pool, store, reg, reader, hot, projections.DefaultPartitions)
		close(wdone)
		return wdone, hot, nil
	}
	opts := projections.Options{Meter: apiCfg.Telemetry.Meter("pos/projections")} // lag and events applied
	if hot != nil {
		opts.AfterCommit = hot.Invalidate
	}
	// The workers (projections and process managers) get a pool of their
	// own: on the commands' pool they waited behind every request and fell
	// minutes behind under load.
	wpool, err := pgstore.ConnectSized(ctx, cfg.AppDatabaseURL, workerPoolSize)
	if err != nil {
		return nil, nil, err
	}
	context.AfterFunc(closing, wpool.Close)
	if err := apiCfg.Telemetry.ObservePool("workers", wpool); err != nil {
		return nil, nil, err
	}
	upcasting := eventstore.Upcasting{Store: store, Registry: reg}
	runner, err := projections.NewRunner(wpool, upcasting, opts, projections.All()...)
	if err != nil {
		return nil, nil, err
	}
	apiReads(ctx, cfg, log, apiCfg, pool, store, reg, reader, hot, runner.Partitions())
	procs, err := processWorker(ctx, cfg, log, wpool, upcasting, h, apiCfg.Telemetry.Meter("pos/processes"))
	if err != nil {
		return nil, nil, err
	}
	brokerUp := func(url string) error {
		check, err := brokerReadyCheck(ctx, url)
		if err == nil {
			addReadyCheck(&apiCfg.ReadyChecks, "broker", check)
		}
		return err
	}
	stopped, err := startProjections(ctx, cfg, log, []worker{projectionWorker(runner), procs}, store, pool, reg, apiCfg.Telemetry, brokerUp)
	if err != nil {
		return nil, nil, err
	}
	go func() { <-stopped; close(wdone) }()
	return stopped, hot, nil
}

// hotReads is the cached transaction details and first pages of stock
// levels, as api.Config.HotReads (an api.TransactionGetter that is also an
// api.StockGetter).
type hotReads struct {
	*cache.Reader
	*cache.StockReader
}

// The API finds the stock levels' cache by this interface; without it
// GET /v1/stock would quietly read PostgreSQL only.
var _ interface {
	api.TransactionGetter
	api.StockGetter
} = hotReads{}

// readCache returns the Redis cache of hot reads on REDIS_URL (nil when it
// is empty or POS_CACHE is off), its client closed when ctx ends. The projections runner
// invalidates it after each commit (cache.Cache.Invalidate); invalidating
// is needed wherever projections run, whichever process serves the cached
// reads. Redis need not be up: every failure falls back to PostgreSQL.
func readCache(ctx context.Context, cfg config, log *slog.Logger, apiCfg *api.Config) (*cache.Cache, error) {
	if cfg.Cache == cacheOff { // loadConfig allows on and off only
		log.Warn("POS_CACHE is off: hot reads are not cached, and this process invalidates no cache entry")
		return nil, nil
	}
	if cfg.RedisURL == "" {
		log.Warn("REDIS_URL is empty: hot reads are not cached")
		return nil, nil
	}
	cache.LogTo(log)
	rdb, err := cache.NewClient(cfg.RedisURL, 0)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = rdb.Close() })
	opts := cache.Options{Log: log, Meter: apiCfg.Telemetry.Meter("pos/cache")}
	return cache.New(rdb, opts)
}

// lowestCheckpoint is the smallest checkpoint over every partition and of
// the worker's projectors: following the feed from there misses nothing
// (what was applied already is skipped).
func lowestCheckpoint(ctx context.Context, w worker) (eventstore.Position, error) {
	c := w.runner.Checkpoints()
	var low eventstore.Position
	first := true
	for partition := range w.runner.Partitions() {
		for _, name := range w.names {
			pos, err := c.Position(ctx, name, partition)
			if err != nil {
				return eventstore.Position{}, err
			}
			if first || pos.Less(low) {
				low, first = pos, false
			}
			if low == eventstore.Start {
				return low, nil
			}
		}
	}
	return low, nil
}

// followProjections runs the worker's runner over the store's feed from its
// lowest checkpoint until ctx ends, logging and restarting (with backoff) on
// error.
func followProjections(ctx context.Context, log *slog.Logger, w worker) {
	const maxBackoff = 30 * time.Second
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		from, err := lowestCheckpoint(ctx, w)
		if err == nil {
			log.Info("following the event store", "worker", w.name, "from", from.String())
			err = w.runner.Follow(ctx, from, eventstore.FollowOptions{})
		}
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return
		}
		log.Error("runner stopped; restarting", "worker", w.name, "err", err, "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}
