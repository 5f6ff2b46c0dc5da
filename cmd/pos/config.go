package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/api"
	"pos/eventstore/pgstore"
	"pos/processes"
	"pos/queries"
)

// config is every setting, read from the environment (API.md
// "Configuration"); each has a local default so `make run` needs none.
type config struct {
	Addr string // POS_ADDR
	// DatabaseURL (DATABASE_URL) is the login that owns the schema: it
	// applies the migrations. The pools never use it as such: they log in
	// as pos_app (AppDatabaseURL: POS_APP_DATABASE_URL, else DATABASE_URL
	// with that user and no password) and pos_api (APIDatabaseURL:
	// POS_API_DATABASE_URL, likewise), see package pgpool.
	DatabaseURL    string
	AppDatabaseURL string
	APIDatabaseURL string
	EventStoreURL  string // EVENTSTORE_URL: EventStoreDB instead of PostgreSQL when set
	NATSURL        string // NATS_URL: external NATS; empty means embedded (serve)
	RedisURL       string // REDIS_URL
	// Cache (POS_CACHE) is "on" (the default) or "off": off, this process
	// neither reads hot reads from Redis nor invalidates them, as if
	// REDIS_URL were empty (for benchmarks against PostgreSQL alone; do not
	// run it beside instances with the cache on, whose entries it would not
	// invalidate).
	Cache         string
	JWTSecret     string // POS_JWT_SECRET
	JWKSURL       string // POS_JWKS_URL: RS256 against this JWKS instead of HS256
	ShutdownGrace time.Duration

	// AnchorKey (POS_ANCHOR_KEY) is the base64 Ed25519 seed that signs audit
	// anchors; empty means the development key (serve warns).
	AnchorKey string
	// AnchorInterval (POS_ANCHOR_INTERVAL, a Go duration) is how often serve
	// anchors the merchants' stream heads; 0 disables anchoring.
	AnchorInterval time.Duration

	// CursorKey (POS_CURSOR_KEY) is the base64 secret (at least 32 bytes)
	// that signs list cursors; empty means the development key (serve warns).
	CursorKey string

	// Operators (POS_OPERATOR_MERCHANTS, comma-separated UUIDs) are the
	// merchants whose ADMIN may use the deployment-wide projection
	// endpoints; empty means every merchant's ADMIN (serve warns).
	Operators []uuid.UUID

	// ReadSide (POS_READ_SIDE) is how serve keeps the read models up to
	// date: "nats" (the default), the relay and projector workers through
	// NATS JetStream; "inprocess", a runner following the store's feed;
	// "off", not at all: serve is the API alone (queries read what `pos
	// relay` and `pos projector` processes keep up to date).
	ReadSide string
	// DataDir (POS_DATA_DIR) holds local state; the embedded NATS server
	// keeps its streams in DataDir/nats. Default ./data.
	DataDir string
	// NATSPort (POS_NATS_PORT) is the embedded NATS server's port on
	// 127.0.0.1; 0 (the default) picks a free one.
	NATSPort int
	// ReservationTimeout (POS_RESERVATION_TIMEOUT, a Go duration) is how
	// long a sale may hold reserved stock unpaid before the stock process
	// manager voids it and releases the units. Default 30m.
	ReservationTimeout time.Duration
	// ConsistencyWait (POS_CONSISTENCY_WAIT, a Go duration) bounds how long
	// a query waits for X-Min-Position before answering 503
	// not_yet_consistent. Default 2s.
	ConsistencyWait time.Duration
	// MetricsAddr (POS_METRICS_ADDR) is where `pos projector` and `pos relay` serve
	// /metrics and /healthz. Default 127.0.0.1:9464.
	MetricsAddr string
	// TracesURL is where spans are exported over OTLP/HTTP: the SDK's
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or OTEL_EXPORTER_OTLP_ENDPOINT
	// with /v1/traces. Empty (also with OTEL_SDK_DISABLED=true or
	// OTEL_TRACES_EXPORTER=none): spans are exported nowhere.
	TracesURL string
}

// Values of config.Cache.
const (
	cacheOn  = "on"
	cacheOff = "off"
)

// maxConsistencyWait bounds POS_CONSISTENCY_WAIT.
const maxConsistencyWait = time.Minute

// Values of config.ReadSide.
const (
	readSideNATS      = "nats"
	readSideInProcess = "inprocess"
	readSideOff       = "off"
)

// devCursorKey signs list cursors when POS_CURSOR_KEY is unset: fine on a
// laptop, never in production (serve warns at start).
const devCursorKey = "pos-development-cursor-key-do-not-use-in-production"

// devJWTSecret is the HS256 secret when POS_JWT_SECRET is unset: fine on a
// laptop, never in production (serve warns at start).
const devJWTSecret = "pos-development-secret-do-not-use-in-production"

// defaultAnchorInterval is how often serve anchors stream heads when
// POS_ANCHOR_INTERVAL is unset.
const defaultAnchorInterval = time.Minute

// minAnchorInterval is the shortest POS_ANCHOR_INTERVAL accepted.
const minAnchorInterval = time.Second

// defaultMetricsAddr is where `pos projector` and `pos relay` serve /metrics and /healthz
// unless POS_METRICS_ADDR says otherwise (serve answers them on POS_ADDR).
const defaultMetricsAddr = "127.0.0.1:9464"

const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/pos?sslmode=disable"

// loadConfig reads the environment; a variable set to a value it cannot
// use is an error naming it, never a silent default.
func loadConfig(getenv func(string) string) (config, error) {
	get := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	var errs []error
	number := func(key, def string, lo, hi int) int {
		n, err := strconv.Atoi(get(key, def))
		if err != nil || n < lo || n > hi {
			errs = append(errs, fmt.Errorf("%s=%q: want a whole number from %d to %d", key, getenv(key), lo, hi))
		}
		return n
	}
	duration := func(key string, def time.Duration, zeroOK bool) time.Duration {
		d, err := time.ParseDuration(get(key, def.String()))
		if err != nil || d < 0 || d == 0 && !zeroOK {
			errs = append(errs, fmt.Errorf("%s=%q: want a Go duration such as %s", key, getenv(key), def))
		}
		return d
	}
	grace := number("POS_SHUTDOWN_GRACE_SECONDS", "10", 0, 3600)
	anchorEvery := duration("POS_ANCHOR_INTERVAL", defaultAnchorInterval, true)
	if anchorEvery > 0 && anchorEvery < minAnchorInterval {
		// Each anchoring reads every stream head changed since the last:
		// back to back, it would take a core and the pool for nothing.
		errs = append(errs, fmt.Errorf("POS_ANCHOR_INTERVAL=%q: at least %s, or 0 to disable anchoring", getenv("POS_ANCHOR_INTERVAL"), minAnchorInterval))
	}
	natsPort := number("POS_NATS_PORT", "0", 0, 65535)
	reservation := duration("POS_RESERVATION_TIMEOUT", processes.DefaultReservationTimeout, false)
	consistencyWait := duration("POS_CONSISTENCY_WAIT", api.DefaultConsistencyWait, false)
	if consistencyWait > maxConsistencyWait {
		errs = append(errs, fmt.Errorf("POS_CONSISTENCY_WAIT=%q: at most %s (a query holds a connection's worth of polling meanwhile)", getenv("POS_CONSISTENCY_WAIT"), maxConsistencyWait))
	}
	switch c := get("POS_CACHE", cacheOn); c {
	case cacheOn, cacheOff:
	default:
		errs = append(errs, fmt.Errorf("POS_CACHE=%q: want %q or %q", c, cacheOn, cacheOff))
	}
	switch readSide := get("POS_READ_SIDE", readSideNATS); readSide {
	case readSideNATS, readSideInProcess, readSideOff:
	default:
		errs = append(errs, fmt.Errorf("POS_READ_SIDE=%q: want %q, %q or %q", readSide, readSideNATS, readSideInProcess, readSideOff))
	}
	login := func(key, role string) string {
		u := getenv(key)
		if u == "" {
			return get("DATABASE_URL", defaultDatabaseURL)
		}
		// Neither error repeats the URL: it may hold a password.
		if c, err := pgx.ParseConfig(u); err != nil {
			errs = append(errs, fmt.Errorf("%s: not a usable PostgreSQL connection string", key))
		} else if c.User != role {
			errs = append(errs, fmt.Errorf("%s: its user must be %s", key, role))
		}
		return u
	}
	var operators []uuid.UUID
	for _, f := range strings.Split(getenv("POS_OPERATOR_MERCHANTS"), ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		id, err := uuid.Parse(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("POS_OPERATOR_MERCHANTS: %q is not a merchant UUID", f))
			continue
		}
		operators = append(operators, id)
	}
	appURL := login("POS_APP_DATABASE_URL", pgstore.AppRole)
	apiURL := login("POS_API_DATABASE_URL", queries.Role)
	traces := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if base := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); traces == "" && base != "" {
		traces = strings.TrimRight(base, "/") + "/v1/traces"
	}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || getenv("OTEL_TRACES_EXPORTER") == "none" {
		traces = "" // the SDK's own switches for "export nothing"
	}
	// Only OTLP over HTTP with protobuf is built in: a gRPC endpoint
	// (usually port 4317) would be sent HTTP requests it cannot answer. The
	// traces' own setting wins over the general one, as in the SDK.
	key := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if getenv(key) == "" {
		key = "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	if v := getenv(key); v != "" && v != "http/protobuf" && traces != "" {
		errs = append(errs, fmt.Errorf("%s=%q: only http/protobuf is supported", key, v))
	}
	if u, err := url.Parse(traces); traces != "" && (err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https") {
		errs = append(errs, fmt.Errorf("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT %q: want an http or https URL", traces))
	}
	if err := errors.Join(errs...); err != nil {
		return config{}, err
	}
	return config{
		Addr:           get("POS_ADDR", "127.0.0.1:8080"),
		DatabaseURL:    get("DATABASE_URL", defaultDatabaseURL),
		AppDatabaseURL: appURL,
		APIDatabaseURL: apiURL,
		EventStoreURL:  getenv("EVENTSTORE_URL"),
		NATSURL:        getenv("NATS_URL"),
		RedisURL:       get("REDIS_URL", "redis://127.0.0.1:6379/0"),
		Cache:          get("POS_CACHE", cacheOn),
		JWTSecret:      getenv("POS_JWT_SECRET"),
		JWKSURL:        getenv("POS_JWKS_URL"),
		ShutdownGrace:  time.Duration(grace) * time.Second,

		AnchorKey:      getenv("POS_ANCHOR_KEY"),
		AnchorInterval: anchorEvery,

		CursorKey: getenv("POS_CURSOR_KEY"),
		Operators: operators,

		ReadSide: get("POS_READ_SIDE", readSideNATS),
		DataDir:  get("POS_DATA_DIR", "./data"),
		NATSPort: natsPort,

		ReservationTimeout: reservation,
		ConsistencyWait:    consistencyWait,
		MetricsAddr:        get("POS_METRICS_ADDR", defaultMetricsAddr),
		TracesURL:          traces,
	}, nil
}

// redactURL is u fit for a log line: a password, or a user that stands for
// a token (nats://TOKEN@host), shows as xxxxx, in each URL of a
// comma-separated list (as NATS_URL may be, spaces allowed), with or
// without its scheme (nats.go adds nats://). A URL whose user part it
// cannot tell shows as nothing of it.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, part := range parts {
		parts[i] = redactOne(strings.TrimSpace(part))
	}
	return strings.Join(parts, ",")
}

func redactOne(u string) string {
	if !strings.Contains(u, "://") {
		u = "nats://" + u
	}
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return "(unparsable URL)"
	case p.User == nil:
		if strings.Contains(u, "@") { // a user part url.Parse did not see as one
			return "(unparsable URL)"
		}
		return u
	}
	if _, ok := p.User.Password(); ok {
		return p.Redacted()
	}
	p.User = url.User("xxxxx")
	return p.String()
}
