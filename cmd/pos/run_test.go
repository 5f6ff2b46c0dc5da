package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/audit"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/eventstore/storetest"
	"pos/internal/pgtest"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestMigrateBuildsAnEmptyDatabase(t *testing.T) {
	url := pgtest.NewEmptyDatabase(t)
	ctx := context.Background()
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	// The second run finds nothing to do; it also sets a pool size, as the
	// README allows in DATABASE_URL, which a plain connection must not
	// send to the server.
	for i, dbURL := range []string{url, url + sep + "pool_max_conns=4"} {
		var out bytes.Buffer
		if err := run(ctx, []string{"migrate"}, env(map[string]string{"DATABASE_URL": dbURL}), &out, &out); err != nil {
			t.Fatalf("migrate (run %d): %v\n%s", i+1, err, out.String())
		}
		if !strings.Contains(out.String(), "schema version") {
			t.Errorf("migrate printed %q", out.String())
		}
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var tables int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'`).Scan(&tables); err != nil || tables != 1 {
		t.Fatalf("events table count = %d, %v", tables, err)
	}
}

// make run honours DATABASE_URL: a database it names that does not exist
// yet is created, then migrated.
func TestMigrateCreatesAMissingDatabase(t *testing.T) {
	ctx := context.Background()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "pos_test_missing_" + hex.EncodeToString(b[:])
	u, err := neturl.Parse(pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	url := u.String()
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pgtest.AdminURL())
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate"}, env(map[string]string{"DATABASE_URL": url}), &out, &out); err != nil {
		t.Fatalf("migrate into a missing database: %v\n%s", err, out.String())
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("the database was not created: %v", err)
	}
	defer c.Close(ctx)
	var tables int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'`).Scan(&tables); err != nil || tables != 1 {
		t.Fatalf("events table count = %d, %v", tables, err)
	}
}

func TestVerifyExitsNonZeroOnABreak(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := pgstore.New(pool)
	m := storetest.NewMerchant()
	stream := storetest.NewStream(m, "transaction")
	if _, err := store.Append(ctx, stream, eventstore.NoStream, storetest.Event(m, "A", 1), storetest.Event(m, "B", 2)); err != nil {
		t.Fatal(err)
	}
	vars := env(map[string]string{"DATABASE_URL": url})

	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"verify", "-quiet"}, vars, &out, &errOut); err != nil {
		t.Fatalf("verify on intact history: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "events checked: 2") || !strings.Contains(out.String(), "breaks: 0") {
		t.Errorf("verify printed %q", out.String())
	}
	// Checked against the development key: said so, since anyone can sign
	// with it; with the server's key given, nothing to say.
	if !strings.Contains(errOut.String(), "warning: anchors are checked against the development key") {
		t.Errorf("no warning about the development key: %q", errOut.String())
	}
	errOut.Reset()
	if err := run(ctx, []string{"verify", "-quiet", "-public-key", audit.DevKey().Public().String()}, vars, &out, &errOut); err != nil ||
		!strings.Contains(errOut.String(), "warning: anchors are checked against the development key") ||
		strings.Contains(errOut.String(), "give -public-key") {
		t.Errorf("verify -public-key <the development key's>: %v, stderr %q, want the warning, without asking for the flag given", err, errOut.String())
	}
	errOut.Reset()
	keyed := env(map[string]string{"DATABASE_URL": url, "POS_ANCHOR_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))})
	if err := run(ctx, []string{"verify", "-quiet"}, keyed, &out, &errOut); err != nil || errOut.Len() != 0 {
		t.Fatalf("verify with POS_ANCHOR_KEY: %v, stderr %q", err, errOut.String())
	}

	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE events SET data = '99' WHERE stream_name = $1 AND version = 2`, stream)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = run(ctx, []string{"verify", "-merchant", m}, vars, &out, &errOut)
	if !errors.Is(err, errBreaks) {
		t.Fatalf("verify on tampered history: err = %v, want errBreaks\n%s", err, out.String())
	}
	if want := stream + " version 2: hash_mismatch"; !strings.Contains(out.String(), want) {
		t.Errorf("verify output %q lacks %q", out.String(), want)
	}
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, env(nil), &out, &out); err == nil || !strings.Contains(out.String(), "usage") {
		t.Fatalf("unknown command: err %v, output %q", err, out.String())
	}
}

func TestVerifyRefusesAMalformedMerchant(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var out bytes.Buffer
	err := run(context.Background(), []string{"verify", "-quiet", "-merchant", "acme"}, env(map[string]string{"DATABASE_URL": url}), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "not a UUID") {
		t.Fatalf("verify -merchant acme: err = %v, want a refusal", err)
	}
}

// A word among verify's flags stops their parsing: "pos verify -quiet $M
// -anchor-log f" would check every merchant and skip the log, and report
// clean. It is refused instead.
func TestVerifyRefusesStrayArguments(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var out bytes.Buffer
	err := run(context.Background(), []string{"verify", "-quiet", uuid.NewString(), "-anchor-log", "anchors.log"}, env(map[string]string{"DATABASE_URL": url}), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Fatalf("verify with a stray argument: err = %v, want a refusal", err)
	}
}

// An empty -public-key (a $PUB the shell left empty) is refused, not taken
// for the default key: a check against the development key would pass and
// prove nothing about the key the auditor meant.
func TestVerifyRefusesAnEmptyPublicKey(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var out bytes.Buffer
	err := run(context.Background(), []string{"verify", "-quiet", "-public-key", ""}, env(map[string]string{"DATABASE_URL": url}), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "-public-key is empty") {
		t.Fatalf("verify -public-key '': err = %v, want a refusal", err)
	}
}

// A variable set to a value the service cannot use stops it with the
// variable's name, rather than run on a default the operator did not ask for.
func TestUnusableConfigurationIsRefused(t *testing.T) {
	for _, c := range []struct{ name, value string }{
		{"POS_RESERVATION_TIMEOUT", "30"},
		{"POS_RESERVATION_TIMEOUT", "0s"},
		{"POS_ANCHOR_INTERVAL", "-1m"},
		{"POS_ANCHOR_INTERVAL", "1ns"},
		{"POS_CACHE", "false"},
		{"POS_CONSISTENCY_WAIT", "2"},
		{"POS_CONSISTENCY_WAIT", "0s"},
		{"POS_CONSISTENCY_WAIT", "10m"},
		{"POS_READ_SIDE", "of"},
		{"POS_SHUTDOWN_GRACE_SECONDS", "ten"},
		{"POS_NATS_PORT", "70000"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"},
		{"POS_API_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/pos"}, // the owner, not pos_api
		{"POS_APP_DATABASE_URL", "postgres://pos_api@127.0.0.1:5432/pos"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector/v1/traces"},
		{"POS_OPERATOR_MERCHANTS", "0193a5c0-0000-7000-8000-000000000001,acme"},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), []string{"migrate"}, env(map[string]string{c.name: c.value}), &out, &out)
			if err == nil || !strings.Contains(err.Error(), c.name) {
				t.Fatalf("%s=%s: %v, want an error naming it", c.name, c.value, err)
			}
		})
	}
	cfg, err := loadConfig(env(map[string]string{"POS_ANCHOR_INTERVAL": "0", "POS_RESERVATION_TIMEOUT": "45m", "POS_CONSISTENCY_WAIT": "750ms", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
		"POS_OPERATOR_MERCHANTS": " 0193a5c0-0000-7000-8000-000000000001, 0193a5c0-0000-7000-8000-000000000002"}))
	if err != nil {
		t.Fatalf("usable values refused: %v", err)
	}
	if cfg.ConsistencyWait != 750*time.Millisecond {
		t.Errorf("POS_CONSISTENCY_WAIT read as %v", cfg.ConsistencyWait)
	}
	if def, _ := loadConfig(env(nil)); def.ConsistencyWait != 2*time.Second {
		t.Errorf("the default X-Min-Position bound is %v, want 2s", def.ConsistencyWait)
	}
	if len(cfg.Operators) != 2 || cfg.Operators[1].String() != "0193a5c0-0000-7000-8000-000000000002" {
		t.Errorf("POS_OPERATOR_MERCHANTS read as %v", cfg.Operators)
	}
	if cfg.AppDatabaseURL != defaultDatabaseURL || cfg.APIDatabaseURL != defaultDatabaseURL {
		t.Errorf("pools' URLs %q and %q, want DATABASE_URL's (logged in as their roles by pgpool)", cfg.AppDatabaseURL, cfg.APIDatabaseURL)
	}
	if want := "http://collector:4318/v1/traces"; cfg.TracesURL != want {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: traces go to %q, want %q", cfg.TracesURL, want)
	}
	if _, err := loadConfig(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Errorf("OTLP over gRPC: %v, want an error naming OTEL_EXPORTER_OTLP_PROTOCOL", err)
	}
	if cfg, err := loadConfig(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})); err != nil || cfg.TracesURL == "" {
		t.Errorf("traces over HTTP beside other signals over gRPC: %q, %v; want them taken", cfg.TracesURL, err)
	}
	for _, off := range []map[string]string{{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, {"OTEL_TRACES_EXPORTER": "none"}} {
		off["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318"
		if cfg, err := loadConfig(env(off)); err != nil || cfg.TracesURL != "" {
			t.Errorf("%v: traces go to %q (%v), want nowhere", off, cfg.TracesURL, err)
		}
	}
	app := "postgres://pos_app:s3cret@db:5432/pos"
	if cfg, err = loadConfig(env(map[string]string{"POS_APP_DATABASE_URL": app})); err != nil || cfg.AppDatabaseURL != app {
		t.Errorf("POS_APP_DATABASE_URL: %q (%v), want %q", cfg.AppDatabaseURL, err, app)
	}
	cfg, err = loadConfig(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/otlp"}))
	if want := "https://traces.example/otlp"; err != nil || cfg.TracesURL != want {
		t.Errorf("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: traces go to %q (%v), want %q, as the SDK has it", cfg.TracesURL, err, want)
	}
}

// Broker URLs are logged without their secrets.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                       "nats://127.0.0.1:4222",
		"nats://user:s3cret@127.0.0.1:4222":           "nats://user:xxxxx@127.0.0.1:4222",
		"nats://T0KEN@127.0.0.1:4222":                 "nats://xxxxx@127.0.0.1:4222",
		"nats://user:s3cret@a:4222,nats://T0KEN@b:42": "nats://user:xxxxx@a:4222,nats://xxxxx@b:42",
		"nats://user:s3cret@[::1":                     "(unparsable URL)",
		"nats://a:4222, nats://user:s3cret@b:4222":    "nats://a:4222,nats://user:xxxxx@b:4222",
		"user:s3cret@127.0.0.1:4222":                  "nats://user:xxxxx@127.0.0.1:4222",
		"nats://user:1234#s3cret@127.0.0.1:4222":      "(unparsable URL)",
	} {
		if got := redactURL(in); got != want || strings.Contains(got, "s3cret") || strings.Contains(got, "T0KEN") {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A stray word is refused, not ignored: the flags after it would be lost
// (a token minted for a CASHIER instead of an ADMIN), and the commands
// configured by the environment take no words at all.
func TestCommandsRefuseStrayArguments(t *testing.T) {
	for _, args := range [][]string{
		{"token", "-merchant", uuid.NewString(), "stray", "-role", "ADMIN"},
		{"migrate", "now"},
		{"serve", "-addr", ":9999"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), args, env(map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/none"}), &out, &out)
		if err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
			t.Errorf("%q: err = %v, output %q; want a refusal", args, err, out.String())
		}
	}
}
