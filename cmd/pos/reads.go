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
	"pos/eventstore"
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

// readSide opens the queries' pool (closed when ctx ends), sets apiCfg's
// Reader, Checkpoints and Partitions, and starts a projections runner over
// pool that keeps the read models up to date until ctx ends: through NATS or
// in process, see startProjections.
func readSide(ctx context.Context, cfg config, log *slog.Logger, apiCfg *api.Config, store eventstore.Store, pool *pgxpool.Pool, reg *eventstore.Registry) error {
	key, err := cursorKey(cfg, log)
	if err != nil {
		return err
	}
	qpool, err := queries.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, qpool.Close)
	reader, err := queries.New(qpool, key)
	if err != nil {
		return err
	}
	hot, err := readCache(ctx, cfg, log, apiCfg)
	if err != nil {
		return err
	}
	opts := projections.Options{}
	if hot != nil {
		opts.AfterCommit = hot.Invalidate
	}
	runner, err := projections.NewRunner(pool, eventstore.Upcasting{Store: store, Registry: reg}, opts, projections.All()...)
	if err != nil {
		return err
	}
	apiCfg.Reader, apiCfg.Checkpoints, apiCfg.Partitions = reader, runner.Checkpoints(), runner.Partitions()
	if hot != nil {
		apiCfg.HotReads = cache.NewReader(hot, reader)
	}
	return startProjections(ctx, cfg, log, runner, store, pool, reg)
}

// readCache returns the Redis cache of hot reads on REDIS_URL (nil when it
// is empty), its client closed when ctx ends. The projections runner
// invalidates it after each commit (cache.Cache.Invalidate); invalidating
// is needed wherever projections run, whichever process serves the cached
// reads. Redis need not be up: every failure falls back to PostgreSQL.
func readCache(ctx context.Context, cfg config, log *slog.Logger, apiCfg *api.Config) (*cache.Cache, error) {
	if cfg.RedisURL == "" {
		log.Warn("REDIS_URL is empty: hot reads are not cached")
		return nil, nil
	}
	rdb, err := cache.NewClient(cfg.RedisURL, 0)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = rdb.Close() })
	opts := cache.Options{Log: log}
	if apiCfg.Telemetry != nil {
		opts.Meter = apiCfg.Telemetry.Meter("pos/cache")
	}
	return cache.New(rdb, opts)
}

// lowestCheckpoint is the smallest checkpoint over every partition and
// projector: following the feed from there misses nothing (what was applied
// already is skipped).
func lowestCheckpoint(ctx context.Context, runner *projections.Runner) (eventstore.Position, error) {
	c := runner.Checkpoints()
	var low eventstore.Position
	first := true
	for partition := range runner.Partitions() {
		for _, p := range projections.All() {
			pos, err := c.Position(ctx, p.Name(), partition)
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

// followProjections runs the runner over the store's feed from the lowest
// checkpoint until ctx ends, logging and restarting (with backoff) on error.
func followProjections(ctx context.Context, log *slog.Logger, runner *projections.Runner) {
	const maxBackoff = 30 * time.Second
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		from, err := lowestCheckpoint(ctx, runner)
		if err == nil {
			log.Info("projections following the event store", "from", from.String())
			err = runner.Follow(ctx, from, eventstore.FollowOptions{})
		}
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return
		}
		log.Error("projections runner stopped; restarting", "err", err, "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}
