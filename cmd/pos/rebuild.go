package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/schollz/progressbar/v3"

	"pos/api"
	"pos/cache"
	"pos/commands"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/projections"
	"pos/rebuild"
)

// newRebuilder wires a rebuild.Rebuilder: the upcasting store the live
// runners read, a count of events when the store can give one, and, when
// hot is set, the cache's entries of the swapped tables dropped once after
// a swap (`pos rebuild`: a running serve drops them again itself, see
// rebuild.Watcher in apiServer). Rebuilds started in the background stop
// when life ends.
func newRebuilder(life context.Context, cfg config, log *slog.Logger, pool *pgxpool.Pool, store eventstore.Store, reg *eventstore.Registry, hot *cache.Cache) *rebuild.Rebuilder {
	opts := rebuild.Options{Log: log} // the live runners' partitions: the default
	if pg, ok := store.(*pgstore.Store); ok {
		opts.Count = pg.CountAfter
	}
	if hot != nil {
		opts.AfterSwap = func(ctx context.Context, tables []string) { forgetCache(ctx, log, hot, tables) }
	}
	return rebuild.New(life, pool, cfg.AppDatabaseURL, eventstore.Upcasting{Store: store, Registry: reg}, opts)
}

// rebuildCommand is `pos rebuild <projection|all>`: it rebuilds and swaps in
// the projection, showing progress, and returns when it is done. serve (or
// the projector workers) may run meanwhile: queries keep reading the live
// tables until the swap.
func rebuildCommand(ctx context.Context, cfg config, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quiet := fs.Bool("quiet", false, "no progress bar")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pos rebuild [-quiet] <%s|%s>\n", strings.Join(rebuild.Rebuildable(projections.All()), "|"), rebuild.All)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("rebuild: name one projection, or all")
	}
	reg, err := commands.Registry()
	if err != nil {
		return err
	}
	pool, store, closeStore, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	cacheLife, closeCache := context.WithCancel(context.WithoutCancel(ctx))
	defer closeCache()
	hot, err := readCache(cacheLife, cfg, log, &api.Config{})
	if err != nil {
		return err
	}
	// The progress bar and the last line say what the rebuild's INFO lines
	// would; warnings and errors still show.
	warnings := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b := newRebuilder(ctx, cfg, warnings, pool, store, reg, hot)

	progress := func(rebuild.Progress) {}
	finish := func() {}
	if !*quiet {
		var bar *progressbar.ProgressBar
		progress = func(p rebuild.Progress) {
			if bar == nil {
				total := int64(-1)
				if p.Total > 0 {
					total = int64(p.Total)
				}
				// Against the count taken at start: events appended
				// meanwhile are replayed too.
				bar = eventsBar(stderr, total, "rebuilding "+strings.Join(p.Projections, ", "))
			}
			_ = bar.Set64(int64(p.Done))
		}
		finish = func() {
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(stderr)
			}
		}
	}
	p, err := b.Run(ctx, fs.Arg(0), progress)
	finish()
	if err != nil {
		return err
	}
	secs := p.FinishedAt.Sub(p.StartedAt).Seconds()
	fmt.Fprintf(stdout, "rebuilt %s from %d events in %.1f s (%.0f events/s, setup and swap included), swapped in (locked %d ms); rebuild_id %s\n",
		strings.Join(p.Projections, ", "), p.Done, secs, p.Rate(), p.Locked.Milliseconds(), p.ID)
	return nil
}

// forgetCache drops hot's entries of tables after a rebuild swapped them in
// (cache.Forget); a failure is logged: the entries then expire within their
// TTL.
func forgetCache(ctx context.Context, log *slog.Logger, hot *cache.Cache, tables []string) {
	if err := hot.Forget(ctx, tables); err != nil {
		log.Warn("rebuild: could not drop all the cache's entries of the rebuilt tables; the rest expire within their TTL", "err", err)
	}
}
