package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"

	"pos/api"
	"pos/api/auth"
	"pos/audit"
	"pos/cache"
	"pos/commands"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/internal/telemetry"
	"pos/rebuild"
)

// verifier builds the JWT verifier the configuration asks for.
func verifier(ctx context.Context, cfg config, log *slog.Logger) (*auth.Verifier, error) {
	if cfg.JWKSURL != "" {
		return auth.NewJWKS(ctx, cfg.JWKSURL)
	}
	secret := cfg.JWTSecret
	if secret == "" {
		log.Warn("POS_JWT_SECRET is not set: using the development secret; set it in production", "secret", devJWTSecret)
		secret = devJWTSecret
	}
	v, err := auth.NewHS256([]byte(secret))
	if err != nil {
		return nil, fmt.Errorf("POS_JWT_SECRET: %w", err)
	}
	return v, nil
}

// apiServer wires the API over an opened store and pool; anchors verifies
// audit anchor signatures. The returned channel is closed once the read
// side's workers have stopped, after ctx ended; the pools they share with
// the commands (transaction codes, stock ledgers) close when pools ends.
func apiServer(ctx, pools context.Context, cfg config, log *slog.Logger, tel *telemetry.Telemetry, store eventstore.Store, pool *pgxpool.Pool, anchors audit.PublicKey) (*api.Server, <-chan struct{}, error) {
	reg, err := commands.Registry()
	if err != nil {
		return nil, nil, err
	}
	v, err := verifier(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	// Transaction codes lease blocks on a pool of their own (see
	// commands.NewCodes); it lives as long as the process.
	codesPool, err := pgstore.ConnectSized(ctx, cfg.AppDatabaseURL, 2)
	if err != nil {
		return nil, nil, err
	}
	context.AfterFunc(pools, codesPool.Close)
	if err := tel.ObservePool("codes", codesPool); err != nil {
		return nil, nil, err
	}
	meter := tel.Meter("pos/commands")
	ledgers, err := ledgerStore(ctx, pools, cfg, tel, store, reg)
	if err != nil {
		return nil, nil, err
	}
	deps := commandDeps(ledgers, commands.NewCodes(codesPool), meter, tel.Tracer("pos/commands"))
	apiCfg := api.Config{
		Log:       log,
		Store:     store,
		Verifier:  v,
		Pool:      pool,
		Telemetry: tel,
		Commands: func(s eventstore.Store) *commands.Handlers {
			return commands.New(eventstore.Upcasting{Store: s, Registry: reg}, deps)
		},
		Audit:           &audit.Auditor{Store: store, Ledger: audit.NewLedger(pool), Key: anchors},
		Registry:        reg,
		ConsistencyWait: cfg.ConsistencyWait,
	}
	// Taken before the read side starts: a swap after this is one to act on.
	watcher, err := rebuild.NewWatcher(ctx, pool)
	if err != nil {
		return nil, nil, err
	}
	stopped, hot, err := readSide(ctx, cfg, log, &apiCfg, store, pool, reg, processHandlers(eventstore.Upcasting{Store: store, Registry: reg}, deps))
	if err != nil {
		return nil, nil, err
	}
	if pg, ok := store.(*pgstore.Store); ok {
		apiCfg.TxStore = func(tx pgx.Tx) eventstore.Store { return pg.InTx(tx) }
	}
	if apiCfg.Rebuilds != nil {
		if apiCfg.Operators = cfg.Operators; len(cfg.Operators) == 0 {
			log.Warn("POS_OPERATOR_MERCHANTS is not set: any merchant's ADMIN may rebuild projections, which replays every merchant's history; set it in production")
		}
	}
	srv := api.New(apiCfg)
	if apiCfg.Rebuilds != nil {
		// A rebuild run here, by `pos rebuild` or by another server swaps
		// tables in under this one: it stops serving details it rendered
		// before, and drops the cache's entries of the old tables, twice
		// (see cache.Forget); the bodies rendered between the two drops go
		// with the second.
		go watcher.Run(ctx, time.Second, log, func(ctx context.Context) {
			srv.ReadModelsReplaced()
			if hot == nil {
				return
			}
			forgetCache(ctx, log, hot, cache.CachedTables)
			select {
			case <-time.After(cache.ForgetAgainAfter):
			case <-ctx.Done():
				return
			}
			forgetCache(ctx, log, hot, cache.CachedTables)
			srv.ReadModelsReplaced()
		})
	}
	return srv, stopped, nil
}

func serve(ctx context.Context, cfg config, log *slog.Logger) error {
	if err := checkServeSettings(ctx, cfg); err != nil {
		return err
	}
	v, err := migrate(ctx, cfg)
	if err != nil {
		return err
	}
	log.Info("migrations applied", "schema_version", v)
	pool, store, closeStore, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()

	tel, closeTel, err := startTelemetry(cfg, log)
	if err != nil {
		return err
	}
	defer closeTel()
	if err := tel.ObservePool("store", pool); err != nil {
		return err
	}
	key, err := anchorKey(cfg, log)
	if err != nil {
		return err
	}
	// Components live until the HTTP server has drained, not until the
	// signal: a request still running must find its pools open.
	life, endLife := context.WithCancel(context.WithoutCancel(ctx))
	defer endLife()
	pools, closePools := context.WithCancel(context.WithoutCancel(ctx))
	defer closePools()
	srv, workersStopped, err := apiServer(life, pools, cfg, log, tel, store, pool, key.Public())
	if err != nil {
		return err
	}
	// The workers finish the messages they hold (their commands included)
	// before the pools and the store close (deferred above, so they run
	// after this), within the grace period.
	defer func() {
		endLife()
		select {
		case <-workersStopped:
		case <-time.After(cfg.ShutdownGrace):
			log.Warn("read-side workers still running at the end of the shutdown grace period")
		}
	}()
	go srv.PurgeKeys(life, time.Hour)
	startAnchorer(life, cfg, log, store, pool, key)

	// A request's whole read (headers and a body of at most 1 MiB) is
	// bounded, so a client trickling its body cannot hold a connection and
	// its handler forever; responses are not (an audit export streams for
	// as long as it takes).
	httpSrv := &http.Server{Addr: cfg.Addr, Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: requestReadTimeout, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.ListenAndServe() }()
	log.Info("serving", "addr", cfg.Addr, "event_store", storeName(cfg), "read_side", cfg.ReadSide)
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := httpSrv.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
		// A stop all the same, as asked: said, not a failure of the
		// process (a client that lost its answer retries its key).
		log.Warn("requests still running at the end of the shutdown grace were cut off", "grace", cfg.ShutdownGrace.String())
		_ = httpSrv.Close()
		return nil
	} else if err != nil {
		return fmt.Errorf("serve: shut down: %w", err)
	}
	return nil
}

// checkServeSettings refuses, before anything changes, the settings serve
// would refuse only after migrating: a deploy with a bad one must not move
// the schema and then fail on every restart. (A JWKS URL is fetched later:
// its issuer may come up after this process.)
func checkServeSettings(ctx context.Context, cfg config) error {
	quiet := slog.New(slog.DiscardHandler) // the real start says the warnings
	if cfg.JWKSURL == "" {
		if _, err := verifier(ctx, cfg, quiet); err != nil {
			return err
		}
	}
	if _, err := cursorKey(cfg, quiet); err != nil {
		return err
	}
	_, err := anchorKey(cfg, quiet)
	return err
}

// startTelemetry builds the process's metrics and traces (cfg.TracesURL) and
// sends OpenTelemetry's own failures (an export the collector refused) to
// log. flush flushes the spans still queued, for at most telemetryFlush: a
// collector that accepts connections and never answers must not hold the
// process past its shutdown grace.
func startTelemetry(cfg config, log *slog.Logger) (tel *telemetry.Telemetry, flush func(), err error) {
	tel, err = telemetry.New(telemetry.Config{TracesURL: cfg.TracesURL})
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: %w", err)
	}
	// Process-wide (the SDK has no other way): the last process component
	// started logs them.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "err", err) }))
	return tel, func() {
		ctx, cancel := context.WithTimeout(context.Background(), telemetryFlush)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			log.Warn("telemetry: spans not flushed", "err", err)
		}
	}, nil
}

// telemetryFlush bounds the final flush of queued spans.
const telemetryFlush = 5 * time.Second

// Audit anchors (package audit).

// anchorKey returns the key that signs audit anchors: POS_ANCHOR_KEY, or the
// development key, with a warning when log is set.
func anchorKey(cfg config, log *slog.Logger) (audit.Key, error) {
	if cfg.AnchorKey == "" {
		if log != nil {
			log.Warn("POS_ANCHOR_KEY is not set: audit anchors are signed with the development key, which proves nothing; set it in production",
				"key_id", audit.DevKey().Public().ID())
		}
		return audit.DevKey(), nil
	}
	key, err := audit.ParseKey(cfg.AnchorKey)
	if err != nil {
		return audit.Key{}, fmt.Errorf("POS_ANCHOR_KEY: %w", err)
	}
	return key, nil
}

// startAnchorer signs the merchants' stream heads every AnchorInterval (at
// once first) until ctx ends; POS_ANCHOR_INTERVAL=0 disables it. Each
// anchor is also a log line (msg="audit anchor") to keep outside the
// database.
func startAnchorer(ctx context.Context, cfg config, log *slog.Logger, store eventstore.Store, pool *pgxpool.Pool, key audit.Key) {
	if cfg.AnchorInterval <= 0 {
		log.Warn("POS_ANCHOR_INTERVAL is 0: audit anchoring is off; verify cannot catch deleted tails or streams")
		return
	}
	log.Info("audit anchoring", "interval", cfg.AnchorInterval.String(), "key_id", key.Public().ID(), "public_key", key.Public().String())
	go audit.NewAnchorer(store, audit.NewLedger(pool), key, log).Run(ctx, cfg.AnchorInterval)
}

func storeName(cfg config) string {
	if cfg.EventStoreURL != "" {
		return "eventstoredb"
	}
	return "postgresql"
}

// requestReadTimeout bounds reading one request, body included.
const requestReadTimeout = 30 * time.Second
