package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/api"
	"pos/api/auth"
	"pos/commands"
	"pos/domain/settings"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/internal/telemetry"
)

// eventTypes registers every event type with its current schema version.
// Upcasters from older versions are added here when a schema changes.
func eventTypes() (*eventstore.Registry, error) {
	var types []eventstore.EventType
	for _, name := range transaction.EventTypes() {
		types = append(types, eventstore.EventType{Name: name, Current: transaction.SchemaVersion})
	}
	for _, name := range settings.EventTypes() {
		types = append(types, eventstore.EventType{Name: name, Current: 1})
	}
	return eventstore.NewRegistry(types...)
}

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
	return auth.NewHS256([]byte(secret))
}

// apiServer wires the API over an opened store and pool.
func apiServer(ctx context.Context, cfg config, log *slog.Logger, tel *telemetry.Telemetry, store eventstore.Store, pool *pgxpool.Pool) (*api.Server, error) {
	reg, err := eventTypes()
	if err != nil {
		return nil, err
	}
	v, err := verifier(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	deps := &commands.Deps{
		Now:   func() time.Time { return time.Now().UTC() },
		NewID: func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes: commands.NewCodes(pool),
	}
	apiCfg := api.Config{
		Log:       log,
		Store:     store,
		Verifier:  v,
		Pool:      pool,
		Telemetry: tel,
		Commands: func(s eventstore.Store) *commands.Handlers {
			return commands.New(eventstore.Upcasting{Store: s, Registry: reg}, deps)
		},
	}
	if pg, ok := store.(*pgstore.Store); ok {
		apiCfg.TxStore = func(tx pgx.Tx) eventstore.Store { return pg.InTx(tx) }
	}
	return api.New(apiCfg), nil
}

func serve(ctx context.Context, cfg config, log *slog.Logger) error {
	v, err := migrate(ctx, cfg)
	if err != nil {
		return err
	}
	log.Info("migrations applied", "schema_version", v)
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

	tel, err := telemetry.New()
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	srv, err := apiServer(ctx, cfg, log, tel, store, pool)
	if err != nil {
		return err
	}
	go srv.PurgeKeys(ctx, time.Hour)

	httpSrv := &http.Server{Addr: cfg.Addr, Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.ListenAndServe() }()
	log.Info("serving", "addr", cfg.Addr, "event_store", storeName(cfg))
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
	return httpSrv.Shutdown(sctx)
}

func storeName(cfg config) string {
	if cfg.EventStoreURL != "" {
		return "eventstoredb"
	}
	return "postgresql"
}
