package main

import (
	"context"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"pos/api"
	"pos/commands"
	"pos/consume"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/projections"
)

// projector runs projector workers only, against NATS_URL, until ctx ends.
// Every worker joins the same durable consumers and queue group, so
// running several splits the partitions' messages between them (see
// package consume). Migrations are serve's job; the relay runs in serve, or
// alone (`pos relay`).
func projector(ctx context.Context, cfg config, log *slog.Logger) error {
	// The workers' metrics (lag, dead letters, conflicts) are scraped on
	// POS_METRICS_ADDR.
	pool, store, tel, closeAll, err := brokerProcess(ctx, cfg, log, "projector", "store")
	if err != nil {
		return err
	}
	defer closeAll()
	reg, err := commands.Registry()
	if err != nil {
		return err
	}
	meter, procMeter := tel.Meter("pos/consume"), tel.Meter("pos/processes")
	opts := projections.Options{Meter: tel.Meter("pos/projections")}
	// The workers invalidate the cache of what they apply, as serve's do;
	// its client closes after they have stopped (they finish the messages
	// they hold first, see consume.Run).
	cacheLife, closeCache := context.WithCancel(context.WithoutCancel(ctx))
	defer closeCache()
	hot, err := readCache(cacheLife, cfg, log, &api.Config{})
	if err != nil {
		return err
	}
	if hot != nil {
		opts.AfterCommit = hot.Invalidate
	}
	// The pools split as serve's do: the runners on the workers' own, the
	// stock ledgers on theirs, the process manager's commands on the
	// store's. On one pool, transactions of the process manager holding a
	// connection each while their commands wait for another could take
	// every connection and wait forever.
	pools, closePools := context.WithCancel(context.WithoutCancel(ctx))
	defer closePools() // after the workers stopped (g.Wait below)
	wpool, err := pgstore.ConnectSized(ctx, cfg.AppDatabaseURL, workerPoolSize)
	if err != nil {
		return err
	}
	context.AfterFunc(pools, wpool.Close)
	if err := tel.ObservePool("workers", wpool); err != nil {
		return err
	}
	ledgers, err := ledgerStore(ctx, pools, cfg, tel, store, reg)
	if err != nil {
		return err
	}
	upcasting := eventstore.Upcasting{Store: store, Registry: reg}
	runner, err := projections.NewRunner(wpool, upcasting, opts, projections.All()...)
	if err != nil {
		return err
	}
	// The process managers run here too, on their own durable; their
	// deadline sweeper stops with ctx.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	procs, err := processWorker(ctx, cfg, log, wpool, upcasting, processHandlers(upcasting, commandDeps(ledgers, nil, procMeter, tel.Tracer("pos/processes"))), procMeter)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, w := range []worker{projectionWorker(runner), procs} {
		c, err := consume.New(cfg.NATSURL, w.runner, consumerOptions(w, runner.Partitions(), log, reg, pool, meter, tel.Tracer("pos/consume")))
		if err != nil {
			cancel()
			_ = g.Wait() // the workers already running stop before the pools close
			return err
		}
		log.Info("workers consuming", "worker", w.name, "url", redactURL(cfg.NATSURL), "partitions", runner.Partitions())
		g.Go(func() error { return c.Run(gctx) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("workers stopped")
	return nil
}
