package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"pos/consume"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/internal/telemetry"
	"pos/projections"
	"pos/relay"
)

// The bus (SPEC §2): the relay publishes the store's feed to NATS JetStream,
// projector workers (package consume) apply it to the read models.

// broker returns the NATS server to use: NATS_URL, or else an embedded one
// (JetStream in DataDir/nats, on 127.0.0.1:POS_NATS_PORT or a free port)
// that is shut down when ctx ends and done is closed (after the clients
// that use it have stopped). down is closed once the embedded server has
// stopped, its streams flushed to disk (at once for NATS_URL's): the
// process must not exit before.
func broker(ctx context.Context, cfg config, log *slog.Logger, done <-chan struct{}) (url string, down <-chan struct{}, err error) {
	stopped := make(chan struct{})
	if cfg.NATSURL != "" {
		close(stopped)
		return cfg.NATSURL, stopped, nil
	}
	dir := filepath.Join(cfg.DataDir, "nats")
	srv, err := consume.StartEmbedded(dir, cfg.NATSPort)
	if err != nil {
		return "", nil, err
	}
	log.Info("embedded NATS JetStream started", "url", srv.URL(), "store_dir", dir)
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-done: // never started its clients
		}
		<-done
		srv.Shutdown()
		log.Info("embedded NATS stopped")
	}()
	return srv.URL(), stopped, nil
}

// worker is a runner the read side keeps fed with events: the projections,
// or the process managers. Each has its own JetStream durable (and queue
// group), so each sees every event.
type worker struct {
	name    string
	runner  *projections.Runner
	durable string
	// names are its projectors' names, for lowestCheckpoint.
	names []string
	// maxAckPending is its consumers' window per partition; 0 means
	// consume's default.
	maxAckPending int
	// holdUnhandled is its consumers' consume.Options.HoldUnhandled.
	holdUnhandled time.Duration
}

// consumerOptions are w's consumer options, in serve and in pos projector
// alike; the tail check reads the default relay's heads on pool.
func consumerOptions(w worker, partitions int, log *slog.Logger, reg *eventstore.Registry, pool *pgxpool.Pool, meter metric.Meter, tracer trace.Tracer) consume.Options {
	return consume.Options{Partitions: partitions, Logger: log, Meter: meter, Tracer: tracer, Upcast: reg.Upcast, Durable: w.durable, MaxAckPending: w.maxAckPending, HoldUnhandled: w.holdUnhandled,
		Heads: func(ctx context.Context) ([]eventstore.Position, error) {
			return relay.PublishedHeads(ctx, pool, relay.DefaultName, partitions)
		}}
}

// relayPoolSize is the connections of serve's relay: one holds its lease
// and writes its checkpoints (package relay), the others read the feed.
const relayPoolSize = 3

// startProjections keeps the workers' runners fed until ctx ends, as
// POS_READ_SIDE says: "inprocess", each runner follows the store's feed in
// this process (followProjections); otherwise the relay publishes the feed
// to NATS (NATS_URL or an embedded server) and consumers in this process feed
// each runner from its durable, with any `pos projector` workers sharing the
// partitions. brokerUp, when set, is told the broker's URL once it is known
// (readiness checks it). The returned channel is closed once, after ctx
// ended, every worker has stopped and the embedded NATS server, if any, is
// down: the pools the workers use must stay open until then, and the process
// must not exit before the broker has flushed its streams.
func startProjections(ctx context.Context, cfg config, log *slog.Logger, workers []worker, store eventstore.Store, pool *pgxpool.Pool, reg *eventstore.Registry, tel *telemetry.Telemetry, brokerUp func(url string) error) (<-chan struct{}, error) {
	meter := tel.Meter("pos/consume") // dead letters, stalled partitions
	switch cfg.ReadSide {
	case readSideInProcess:
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Go(func() { followProjections(ctx, log, w) })
		}
		stopped := make(chan struct{})
		go func() { wg.Wait(); close(stopped) }()
		return stopped, nil
	case readSideNATS:
	default:
		return nil, fmt.Errorf("POS_READ_SIDE %q: want %q, %q or %q", cfg.ReadSide, readSideNATS, readSideInProcess, readSideOff)
	}
	done := make(chan struct{})
	url, down, err := broker(ctx, cfg, log, done)
	if err == nil && brokerUp != nil {
		err = brokerUp(url)
	}
	if err != nil {
		close(done)
		return nil, err
	}
	var wg sync.WaitGroup
	stop := func() {
		wg.Wait()
		close(done)
	}
	partitions := workers[0].runner.Partitions()
	pub, err := relay.NewPublisher(url)
	if err != nil {
		go stop()
		return nil, fmt.Errorf("relay publisher: %w", err)
	}
	ropts := relay.Options{Partitions: partitions, Logger: log, Tracer: tel.Tracer("pos/relay"), Meter: tel.Meter("pos/relay")}
	if n, ok := store.(interface{ Appended() <-chan struct{} }); ok {
		ropts.Wake = n.Appended() // this process's appends are published at once
	}
	// The relay works on a pool of its own: on the requests' it held one
	// connection for its lease, and under overload its reads of the feed
	// queued behind every request waiting for another, and the read side
	// starved (233 events/s applied while 906 commands/s were served,
	// docs/performance.md).
	rpool, err := pgstore.ConnectSized(ctx, cfg.AppDatabaseURL, relayPoolSize)
	if err != nil {
		_ = pub.Close()
		go stop()
		return nil, err
	}
	if err := tel.ObservePool("relay", rpool); err != nil {
		rpool.Close()
		_ = pub.Close()
		go stop()
		return nil, err
	}
	rstore := store
	if _, ok := store.(*pgstore.Store); ok {
		rstore = pgstore.New(rpool)
	}
	rel, err := relay.New(rpool, rstore, pub, ropts)
	if err != nil {
		rpool.Close()
		_ = pub.Close()
		go stop()
		return nil, err
	}
	consumers := make([]*consume.Consumer, len(workers))
	for i, w := range workers {
		copts := consumerOptions(w, partitions, log, reg, pool, meter, tel.Tracer("pos/consume"))
		if consumers[i], err = consume.New(url, w.runner, copts); err != nil {
			for _, c := range consumers[:i] {
				c.Close()
			}
			rpool.Close()
			_ = pub.Close()
			go stop()
			return nil, err
		}
	}
	wg.Go(func() {
		defer rpool.Close()
		defer func() { _ = pub.Close() }()
		if err := rel.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("relay stopped", "err", err)
		}
	})
	for i, w := range workers {
		copts := consumerOptions(w, partitions, log, reg, pool, meter, tel.Tracer("pos/consume"))
		wg.Go(func() {
			keepConsuming(ctx, log, consumers[i], func() (*consume.Consumer, error) { return consume.New(url, w.runner, copts) })
		})
		log.Info("workers consuming NATS", "worker", w.name, "durable", w.durable, "url", redactURL(url), "partitions", partitions)
	}
	go stop()
	stopped := make(chan struct{})
	go func() { <-done; <-down; close(stopped) }()
	return stopped, nil
}

// keepConsuming runs c until ctx ends; a consumer that fails (it cannot
// subscribe, NATS went away) is replaced by a new one, with backoff, so the
// read models do not silently stop following. `pos projector` instead exits
// with the error and leaves restarting to its supervisor.
func keepConsuming(ctx context.Context, log *slog.Logger, c *consume.Consumer, renew func() (*consume.Consumer, error)) {
	wait := time.Second
	for {
		err := c.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		for {
			log.Error("projector workers stopped; the read models are not being updated; retrying", "err", err, "in", wait.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 30*time.Second)
			if c, err = renew(); err == nil {
				break
			}
		}
		wait = time.Second
	}
}
