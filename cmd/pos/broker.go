package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"pos/consume"
	"pos/eventstore"
	"pos/projections"
	"pos/relay"
)

// The bus (SPEC §2): the relay publishes the store's feed to NATS JetStream,
// projector workers (package consume) apply it to the read models.

// broker returns the NATS server to use: NATS_URL, or else an embedded one
// (JetStream in DataDir/nats, on 127.0.0.1:POS_NATS_PORT or a free port)
// that is shut down when ctx ends and done is closed (after the clients
// that use it have stopped).
func broker(ctx context.Context, cfg config, log *slog.Logger, done <-chan struct{}) (string, error) {
	if cfg.NATSURL != "" {
		return cfg.NATSURL, nil
	}
	dir := filepath.Join(cfg.DataDir, "nats")
	srv, err := consume.StartEmbedded(dir, cfg.NATSPort)
	if err != nil {
		return "", err
	}
	log.Info("embedded NATS JetStream started", "url", srv.URL(), "store_dir", dir)
	go func() {
		<-ctx.Done()
		<-done
		srv.Shutdown()
		log.Info("embedded NATS stopped")
	}()
	return srv.URL(), nil
}

// startProjections keeps the read models up to date until ctx ends, as
// POS_READ_SIDE says: "inprocess", runner follows the store's feed in this
// process (followProjections); otherwise the relay publishes the feed to
// NATS (NATS_URL or an embedded server) and projector workers in this
// process consume it into runner, with any `pos projector` workers
// sharing the partitions.
func startProjections(ctx context.Context, cfg config, log *slog.Logger, runner *projections.Runner, store eventstore.Store, pool *pgxpool.Pool, reg *eventstore.Registry) error {
	switch cfg.ReadSide {
	case readSideInProcess:
		go followProjections(ctx, log, runner)
		return nil
	case readSideNATS:
	default:
		return fmt.Errorf("POS_READ_SIDE %q: want %q or %q", cfg.ReadSide, readSideNATS, readSideInProcess)
	}
	done := make(chan struct{})
	url, err := broker(ctx, cfg, log, done)
	if err != nil {
		close(done)
		return err
	}
	var wg sync.WaitGroup
	stop := func() {
		wg.Wait()
		close(done)
	}
	pub, err := relay.NewPublisher(url, nil)
	if err != nil {
		go stop()
		return fmt.Errorf("relay publisher: %w", err)
	}
	rel, err := relay.New(pool, store, pub, relay.Options{Partitions: runner.Partitions(), Logger: log})
	if err != nil {
		_ = pub.Close()
		go stop()
		return err
	}
	c, err := consume.New(url, runner, consume.Options{Partitions: runner.Partitions(), Logger: log, Upcast: reg.Upcast})
	if err != nil {
		_ = pub.Close()
		go stop()
		return err
	}
	wg.Go(func() {
		defer func() { _ = pub.Close() }()
		if err := rel.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("relay stopped", "err", err)
		}
	})
	wg.Go(func() { runConsumer(ctx, log, c) })
	go stop()
	log.Info("projections consuming NATS", "url", url, "partitions", runner.Partitions())
	return nil
}

// runConsumer runs c until ctx ends. A consumer that fails (it cannot
// subscribe: NATS is down at start) is logged and the process goes on
// without it; `pos projector` instead exits with the error.
func runConsumer(ctx context.Context, log *slog.Logger, c *consume.Consumer) {
	if err := c.Run(ctx); err != nil {
		log.Error("projector workers stopped; the read models are not being updated", "err", err)
	}
}
