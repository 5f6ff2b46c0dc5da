package main

import (
	"context"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel/metric"

	"pos/api"
	"pos/consume"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/internal/telemetry"
	"pos/projections"
)

// projector runs projector workers only, against NATS_URL, until ctx ends.
// Every worker joins the same durable consumers and queue group, so
// running several splits the partitions' messages between them (see
// package consume). Migrations are serve's job; the relay runs in serve.
func projector(ctx context.Context, cfg config, log *slog.Logger) error {
	if cfg.NATSURL == "" {
		return errors.New("projector: NATS_URL is required (an embedded server lives in serve's process)")
	}
	pool, err := pgstore.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, closeStore, err := openStore(ctx, cfg, pool)
	if err != nil {
		return err
	}
	defer closeStore()
	reg, err := eventTypes()
	if err != nil {
		return err
	}
	var meter metric.Meter
	if tel, err := telemetry.New(); err == nil {
		defer func() { _ = tel.Shutdown(context.Background()) }()
		meter = tel.Meter("pos/consume")
	}
	opts := projections.Options{}
	// The workers invalidate the cache of what they apply, as serve's do.
	hot, err := readCache(ctx, cfg, log, &api.Config{})
	if err != nil {
		return err
	}
	if hot != nil {
		opts.AfterCommit = hot.Invalidate
	}
	runner, err := projections.NewRunner(pool, eventstore.Upcasting{Store: store, Registry: reg}, opts, projections.All()...)
	if err != nil {
		return err
	}
	c, err := consume.New(cfg.NATSURL, runner, consume.Options{Partitions: runner.Partitions(), Logger: log, Meter: meter, Upcast: reg.Upcast})
	if err != nil {
		return err
	}
	log.Info("projector workers consuming", "url", cfg.NATSURL, "partitions", runner.Partitions())
	return c.Run(ctx)
}
