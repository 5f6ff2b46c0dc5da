package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib" // database/sql for goose
	"github.com/schollz/progressbar/v3"

	"pos/audit"
	"pos/eventstore"
	"pos/eventstore/esdbstore"
	"pos/eventstore/pgstore"
	"pos/internal/telemetry"
	"pos/migrations"
)

const usage = `usage: pos <command> [flags]

commands:
  serve     apply migrations, then serve the API on POS_ADDR
  projector run projector workers only: consume the relay's topics on NATS_URL
            (required) and apply them to the read models; run several to split the work
  relay     run the relay only: publish the event store's feed to NATS_URL (required);
            with serve under POS_READ_SIDE=off and projector, each part runs alone
  migrate   apply pending database migrations and exit
  rebuild   rebuild a projection's read model from the event store and swap it in:
            rebuild [-quiet] <projection|all> (pos rebuild -h names them)
  verify    recompute every event hash chain and check each merchant's latest
            signed anchor: verify [-merchant <uuid>] [-public-key <b64>] [-anchor-log file];
            exit 1 on any break
  token     mint a local JWT: token -merchant <uuid> -role CASHIER [-sub u] [-branch <uuid>]... [-ttl 8h]
  help      show this text

Configuration comes from the environment (see README.md): POS_ADDR,
DATABASE_URL, POS_APP_DATABASE_URL, POS_API_DATABASE_URL, EVENTSTORE_URL,
NATS_URL, REDIS_URL, POS_CACHE, POS_JWT_SECRET, POS_JWKS_URL, POS_ANCHOR_KEY,
POS_ANCHOR_INTERVAL, POS_CURSOR_KEY, POS_OPERATOR_MERCHANTS, POS_READ_SIDE, POS_DATA_DIR,
POS_NATS_PORT, POS_RESERVATION_TIMEOUT, POS_CONSISTENCY_WAIT, POS_METRICS_ADDR,
POS_SHUTDOWN_GRACE_SECONDS, OTEL_EXPORTER_OTLP_ENDPOINT.
`

// errBreaks makes verify exit non-zero when history does not verify.
var errBreaks = errors.New("verify: hash chain or anchor breaks found")

// run is the composition root: it reads configuration, builds every
// component and runs the chosen subcommand until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(stderr, nil)))
	switch args[0] {
	case "serve", "projector", "relay", "migrate":
		// Configured by the environment only: a word after the command
		// is a mistake (a flag it does not have), not something to ignore.
		if len(args) == 2 && (args[1] == "-h" || args[1] == "--help") {
			fmt.Fprint(stdout, usage)
			return nil
		}
		if len(args) > 1 {
			return fmt.Errorf("%s: unexpected arguments %q (it takes its settings from the environment)", args[0], args[1:])
		}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, cfg, log)
	case "projector":
		return projector(ctx, cfg, log)
	case "relay":
		return relayOnly(ctx, cfg, log)
	case "migrate":
		v, err := migrate(ctx, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "database at schema version %d\n", v)
		return nil
	case "rebuild":
		return rebuildCommand(ctx, cfg, log, args[1:], stdout, stderr)
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
	// Parsed as a pool's URL, so that pool settings (pool_max_conns…),
	// which a plain connection would send to the server as unknown
	// parameters, are understood and left out.
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return 0, fmt.Errorf("migrate: DATABASE_URL: %w", err)
	}
	if err := ensureDatabase(ctx, pc.ConnConfig); err != nil {
		return 0, err
	}
	db := stdlib.OpenDB(*pc.ConnConfig)
	defer db.Close()
	return migrations.Up(ctx, db)
}

// ensureDatabase creates DATABASE_URL's database when the server says it
// does not exist, connecting to the server's postgres database as the same
// user (who must be allowed to create databases). A database another
// process creates meanwhile is fine.
func ensureDatabase(ctx context.Context, cc *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err == nil {
		return conn.Close(ctx)
	}
	if !pgCode(err, "3D000") { // invalid_catalog_name
		return fmt.Errorf("migrate: connect to DATABASE_URL: %w", err)
	}
	if cc.Database == "" {
		return fmt.Errorf("migrate: DATABASE_URL names no database: %w", err)
	}
	admin := cc.Copy()
	admin.Database = "postgres"
	conn, err = pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("migrate: database %q does not exist, and the server's postgres database to create it from cannot be reached: %w", cc.Database, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cc.Database}.Sanitize())
	// Created meanwhile by another process: duplicate_database, or, when
	// both passed the name check, unique_violation on pg_database.
	if err != nil && !pgCode(err, "42P04") && !pgCode(err, "23505") {
		return fmt.Errorf("migrate: create database %q: %w", cc.Database, err)
	}
	return nil
}

// pgCode reports whether any PostgreSQL error in err's tree has code (a
// connection that tried several hosts joins each host's error).
func pgCode(err error, code string) bool {
	switch e := err.(type) {
	case nil:
		return false
	case *pgconn.PgError:
		return e.Code == code
	case interface{ Unwrap() []error }:
		return slices.ContainsFunc(e.Unwrap(), func(err error) bool { return pgCode(err, code) })
	case interface{ Unwrap() error }:
		return pgCode(e.Unwrap(), code)
	}
	return false
}

// openStore connects to PostgreSQL (role pos_app) and returns the pool, the
// configured event store (EventStoreDB when EVENTSTORE_URL is set, else
// PostgreSQL on the pool) and a function closing both.
func openStore(ctx context.Context, cfg config) (*pgxpool.Pool, eventstore.Store, func(), error) {
	pool, err := pgstore.Connect(ctx, cfg.AppDatabaseURL)
	if err != nil {
		return nil, nil, nil, err
	}
	if cfg.EventStoreURL != "" {
		s, err := esdbstore.Open(ctx, cfg.EventStoreURL)
		if err != nil {
			pool.Close()
			return nil, nil, nil, err
		}
		return pool, s, func() { _ = s.Close(); pool.Close() }, nil
	}
	return pool, pgstore.New(pool), pool.Close, nil
}

func verify(ctx context.Context, cfg config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	merchant := fs.String("merchant", "", "verify one merchant (a UUID); all merchants when empty")
	quiet := fs.Bool("quiet", false, "no progress bar")
	publicKey := fs.String("public-key", "", "base64 Ed25519 public key the anchors are signed with (default: POS_ANCHOR_KEY's, else the development key's)")
	anchorLog := fs.String("anchor-log", "", `file of logged anchors (the JSON log lines with msg "audit anchor") to check against the database`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// A stray word stops flag parsing: the flags after it would be
		// ignored, and a clean report would not say what it left out.
		return fmt.Errorf("verify: unexpected arguments %q (flags come first: -merchant, -anchor-log, ...)", fs.Args())
	}
	if *merchant != "" {
		id, err := uuid.Parse(*merchant)
		if err != nil {
			return fmt.Errorf("verify: -merchant %q is not a UUID", *merchant)
		}
		*merchant = id.String() // as stored: upper case or braces would match nothing
	}
	var keyGiven bool
	fs.Visit(func(f *flag.Flag) { keyGiven = keyGiven || f.Name == "public-key" })
	if keyGiven && *publicKey == "" {
		// An empty $PUB would otherwise check against the default key and
		// pass, telling an auditor nothing about the key they meant.
		return errors.New("verify: -public-key is empty")
	}
	var pub audit.PublicKey
	if *publicKey != "" {
		var err error
		if pub, err = audit.ParsePublicKey(*publicKey); err != nil {
			return fmt.Errorf("verify: -public-key: %w", err)
		}
	} else {
		key, err := anchorKey(cfg, nil)
		if err != nil {
			return err
		}
		pub = key.Public()
	}
	if pub.Equal(audit.DevKey().Public()) {
		// Anyone can sign with that key: anchors that verify with it
		// prove nothing, and the auditor must know.
		advice := "give -public-key, or set POS_ANCHOR_KEY as the server has it"
		if *publicKey != "" {
			advice = "the server signing with it must be given its own POS_ANCHOR_KEY"
		}
		fmt.Fprintf(stderr, "verify: warning: anchors are checked against the development key (key_id %s), which anyone can sign with; %s\n", pub.ID(), advice)
	}
	pool, store, closeStore, err := openStore(ctx, cfg)
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
	finishBar := func() {}
	if !*quiet {
		// Events done, rate and ETA (against the count taken at start).
		bar := eventsBar(stderr, total, "verifying events")
		finishBar = func() { _ = bar.Finish(); fmt.Fprintln(stderr) }
		opts.Progress = func(done int64) { _ = bar.Set64(done) }
	}
	ledger := audit.NewLedger(pool)
	start := time.Now()
	rep, err := (&audit.Auditor{Store: store, Ledger: ledger, Key: pub}).Verify(ctx, opts)
	finishBar() // the bar's line ends before the report starts
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	logged := 0
	if *anchorLog != "" {
		f, err := os.Open(*anchorLog)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		findings, n, err := audit.CheckLog(ctx, ledger, pub, f, *merchant)
		_ = f.Close()
		if err != nil {
			return err
		}
		rep.Breaks, logged = append(rep.Breaks, findings...), n
		audit.SortFindings(rep.Breaks)
	}
	fmt.Fprintf(stdout, "streams checked: %d\nevents checked: %d\n", rep.StreamsChecked, rep.EventsChecked)
	fmt.Fprintf(stdout, "anchors checked: %d (key %s)\n", len(rep.Anchors), pub.ID())
	if *anchorLog != "" {
		fmt.Fprintf(stdout, "logged anchors checked: %d\n", logged)
	}
	fmt.Fprintf(stdout, "took: %s (%.0f events/s)\n", elapsed.Round(time.Millisecond), float64(rep.EventsChecked)/max(elapsed.Seconds(), 1e-9))
	fmt.Fprintf(stdout, "breaks: %d\n", len(rep.Breaks))
	for _, b := range rep.Breaks {
		switch {
		case b.Stream == "":
			fmt.Fprintf(stdout, "  anchor %d of merchant %s: %s\n", b.AnchorSeq, b.MerchantID, b.Reason)
		case b.AnchorSeq != 0:
			fmt.Fprintf(stdout, "  %s version %d: %s (anchored at version %d by anchor %d)\n", b.Stream, b.Version, b.Reason, b.AnchoredVersion, b.AnchorSeq)
		default:
			fmt.Fprintf(stdout, "  %s version %d: %s\n", b.Stream, b.Version, b.Reason)
		}
	}
	if len(rep.Breaks) > 0 {
		return errBreaks
	}
	return nil
}

// eventsBar is the progress bar of a long pass over events (verify,
// rebuild): events done, the rate and an ETA against total (-1 when
// unknown), written to w.
func eventsBar(w io.Writer, total int64, description string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(200*time.Millisecond),
	)
}
