package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose
	"github.com/schollz/progressbar/v3"

	"pos/eventstore"
	"pos/eventstore/esdbstore"
	"pos/eventstore/pgstore"
	"pos/internal/telemetry"
	"pos/migrations"
)

const usage = `usage: pos <command> [flags]

commands:
  serve     apply migrations, then serve the API on POS_ADDR
  migrate   apply pending database migrations and exit
  verify    recompute every event hash chain; exit 1 on any break
  token     mint a local JWT: token -merchant <uuid> -role CASHIER [-sub u] [-branch <uuid>]... [-ttl 8h]
  help      show this text

Configuration comes from the environment (see README.md): POS_ADDR,
DATABASE_URL, EVENTSTORE_URL, NATS_URL, REDIS_URL, POS_JWT_SECRET, POS_JWKS_URL.
`

// errBreaks makes verify exit non-zero when history does not verify.
var errBreaks = errors.New("verify: hash chain breaks found")

// run is the composition root: it reads configuration, builds every
// component and runs the chosen subcommand until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cfg := loadConfig(getenv)
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(stderr, nil)))
	switch args[0] {
	case "serve":
		return serve(ctx, cfg, log)
	case "migrate":
		v, err := migrate(ctx, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "database at schema version %d\n", v)
		return nil
	case "verify":
		return verify(ctx, cfg, args[1:], stdout, stderr)
	case "token":
		return token(cfg, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func migrate(ctx context.Context, cfg config) (int64, error) {
	db, err := sql.Open("pgx", cfg.DatabaseURL)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer db.Close()
	return migrations.Up(ctx, db)
}

// openStore returns the configured event store and a function closing it:
// EventStoreDB when EVENTSTORE_URL is set, else PostgreSQL on pool.
func openStore(ctx context.Context, cfg config, pool *pgxpool.Pool) (eventstore.Store, func(), error) {
	if cfg.EventStoreURL != "" {
		s, err := esdbstore.Open(ctx, cfg.EventStoreURL)
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
	}
	return pgstore.New(pool), func() {}, nil
}

func verify(ctx context.Context, cfg config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	merchant := fs.String("merchant", "", "verify one merchant (a UUID); all merchants when empty")
	quiet := fs.Bool("quiet", false, "no progress bar")
	if err := fs.Parse(args); err != nil {
		return err
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
	filter := eventstore.Filter{MerchantID: *merchant}

	total := int64(-1)
	if c, ok := store.(interface {
		CountEvents(context.Context, eventstore.Filter) (int64, error)
	}); ok {
		if n, err := c.CountEvents(ctx, filter); err == nil {
			total = n
		}
	}
	opts := eventstore.VerifyOptions{Filter: filter, BatchSize: 5000}
	if !*quiet {
		bar := progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("verifying events"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("events"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
		)
		defer func() { _ = bar.Finish(); fmt.Fprintln(stderr) }()
		opts.Progress = func(done int64) { _ = bar.Set64(done) }
	}
	rep, err := eventstore.Verify(ctx, store, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "streams checked: %d\nevents checked: %d\nbreaks: %d\n", rep.StreamsChecked, rep.EventsChecked, len(rep.Breaks))
	for _, b := range rep.Breaks {
		fmt.Fprintf(stdout, "  %s version %d: %s\n", b.Stream, b.Version, b.Reason)
	}
	if len(rep.Breaks) > 0 {
		return errBreaks
	}
	return nil
}
