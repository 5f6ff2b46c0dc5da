package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"pos/eventstore"
	"pos/internal/telemetry"
	"pos/projections"
	"pos/relay"
)

// relayOnly runs the relay alone until ctx ends: it follows the event store
// and publishes to NATS_URL, for deployments that run the API (serve with
// POS_READ_SIDE=off) and the projector workers (`pos projector`) apart.
// Relays are one leader and its standbys (package relay): a second
// `pos relay`, or a serve with its own relay, waits and takes over within
// seconds when the leader dies. Migrations are serve's job.
func relayOnly(ctx context.Context, cfg config, log *slog.Logger) error {
	pool, store, tel, closeAll, err := brokerProcess(ctx, cfg, log, "relay", "relay") // the relay's own pool, as in serve
	if err != nil {
		return err
	}
	defer closeAll()
	pub, err := relay.NewPublisher(cfg.NATSURL)
	if err != nil {
		return fmt.Errorf("relay publisher: %w", err)
	}
	defer func() { _ = pub.Close() }()
	// As many partitions as the workers' runners use (their default).
	rel, err := relay.New(pool, store, pub, relay.Options{Partitions: projections.DefaultPartitions, Logger: log, Tracer: tel.Tracer("pos/relay"), Meter: tel.Meter("pos/relay")})
	if err != nil {
		return err
	}
	log.Info("relay running", "url", redactURL(cfg.NATSURL), "partitions", projections.DefaultPartitions)
	if err := rel.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("relay: %w", err)
	}
	log.Info("relay stopped")
	return nil
}

// brokerProcess opens what a process of the read side without the API
// (`pos projector`, `pos relay`: name) needs: NATS_URL, which it requires
// (an embedded server lives in serve's process), the store and its pool,
// telemetry, and /metrics on POS_METRICS_ADDR, where the pool is reported
// as poolName. closeAll closes them, last opened first.
func brokerProcess(ctx context.Context, cfg config, log *slog.Logger, name, poolName string) (pool *pgxpool.Pool, store eventstore.Store, tel *telemetry.Telemetry, closeAll func(), err error) {
	if cfg.NATSURL == "" {
		return nil, nil, nil, nil, fmt.Errorf("%s: NATS_URL is required (an embedded server lives in serve's process)", name)
	}
	pool, store, closeStore, err := openStore(ctx, cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	tel, closeTel, err := startTelemetry(cfg, log)
	if err != nil {
		closeStore()
		return nil, nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := tel.ObservePool(poolName, pool); err != nil {
		closeTel()
		closeStore()
		return nil, nil, nil, nil, err
	}
	closeMetrics, err := serveMetrics(cfg, log, tel, name)
	if err != nil {
		closeTel()
		closeStore()
		return nil, nil, nil, nil, err
	}
	return pool, store, tel, func() { closeMetrics(); closeTel(); closeStore() }, nil
}

// serveMetrics serves /metrics and /healthz on POS_METRICS_ADDR for a
// process without the API (`pos projector`, `pos relay`) until the
// returned function closes it. A port another worker on the host holds is
// an error, not silence.
func serveMetrics(cfg config, log *slog.Logger, tel *telemetry.Telemetry, name string) (func(), error) {
	ln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("%s: POS_METRICS_ADDR: %w", name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", tel.MetricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(name+": metrics server stopped", "err", err)
		}
	}()
	log.Info(name+" metrics", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
