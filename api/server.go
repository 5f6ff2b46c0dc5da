// Package api is the HTTP edge: a chi router that authenticates callers,
// enforces tenancy and roles, decodes JSON into commands, runs them through
// the command handlers, and answers as API.md fixes (problem+json errors with
// stable codes, ETag and X-Position on commands, idempotency keys).
//
// The merchant always comes from the token, never from a path or body.
package api

import (
	"context"
	_ "embed"
	"encoding/binary"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"pos/api/auth"
	"pos/audit"
	"pos/commands"
	"pos/eventstore"
	"pos/internal/telemetry"
	"pos/projections"
	"pos/queries"
)

//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns the OpenAPI 3.1 document the API serves at
// /openapi.json, for tests that validate responses against it.
func OpenAPIDocument() []byte { return openAPIDocument }

// Config is what the API is built from; cmd/pos wires it.
type Config struct {
	Log      *slog.Logger
	Store    eventstore.Store
	Verifier *auth.Verifier
	// Pool is PostgreSQL, for idempotency keys and readiness.
	Pool *pgxpool.Pool
	// TxStore, when set, binds the event store to a PostgreSQL transaction
	// so that a command's events commit with its idempotency key. Nil when
	// events live elsewhere (EventStoreDB).
	TxStore func(pgx.Tx) eventstore.Store
	// Commands builds the command handlers over a store (the server's, or
	// one bound to a request's transaction).
	Commands func(eventstore.Store) *commands.Handlers
	// Telemetry, when set, traces every request, measures commands and
	// serves GET /metrics.
	Telemetry *telemetry.Telemetry

	// Audit, when set, verifies hash chains and signed anchors for GET
	// /v1/audit/verify; nil checks the hash chains of Store only.
	Audit *audit.Auditor
	// Registry, when set, upcasts events before the audit state replay, as
	// the command handlers read them; nil replays stored versions as is.
	Registry *eventstore.Registry

	// Reader, when set together with Checkpoints, serves the read routes
	// (GET /v1/transactions, /v1/transactions/{id},
	// /v1/reports/daily-sales); see queries.go.
	Reader *queries.Reader
	// HotReads, when set, serves transaction details from a cache in front
	// of Reader (reads without X-Min-Position only).
	HotReads TransactionGetter
	// HotDailySales, when set, serves daily sales from a cache in front of
	// Reader (reads without X-Min-Position only; the cache decides which
	// ranges it keeps).
	HotDailySales DailySalesGetter
	// Checkpoints tells how far the projections behind Reader have got
	// (X-Position, X-Min-Position).
	Checkpoints *projections.Checkpoints
	// Partitions is the projection runners' number of merchant partitions
	// (projections.Options.Partitions); 0 means the default.
	Partitions int
	// ConsistencyWait bounds how long a query waits for X-Min-Position
	// before answering 503 not_yet_consistent; 0 means 2 s.
	ConsistencyWait time.Duration

	// Rebuilds, when set, serves the projection endpoints (GET
	// /v1/admin/projections, POST /v1/admin/projections/{name}/rebuild;
	// ADMIN only, see admin.go).
	Rebuilds Rebuilds
	// Operators, when not empty, are the only merchants whose ADMIN may use
	// the projection endpoints: they act on every merchant's read models.
	Operators []uuid.UUID

	// ReadyChecks are the dependencies GET /readyz checks besides the event
	// store and the database, by name ("broker", "read_store"): one that
	// fails makes /readyz answer 503. See readyz.go.
	ReadyChecks map[string]ReadyCheck
	// OptionalChecks are dependencies the API serves without, by name
	// ("cache"): one that fails is reported "degraded", and /readyz still
	// answers 200.
	OptionalChecks map[string]ReadyCheck
}

// Server serves the API. It is safe for concurrent use.
type Server struct {
	log      *slog.Logger
	store    eventstore.Store
	verifier *auth.Verifier
	keys     keyStore
	txStore  func(pgx.Tx) eventstore.Store
	commands func(eventstore.Store) *commands.Handlers
	pool     *pgxpool.Pool
	tel      *telemetry.Telemetry
	// commandDuration and queryDuration are the latency of each command
	// route and of each GET route (nil without telemetry).
	commandDuration metric.Float64Histogram
	queryDuration   metric.Float64Histogram
	auditor         *audit.Auditor
	registry        *eventstore.Registry
	rebuilds        Rebuilds
	operators       []uuid.UUID

	reader        *queries.Reader
	hotReads      TransactionGetter
	hotDailySales DailySalesGetter
	checkpoints   *projections.Checkpoints
	// positions caches checkpoint reads for X-Position (see readPosition).
	positions positionCache
	// rendered keeps the JSON of recently read transaction details by id
	// and version, which fixes their content: a hot read then encodes
	// nothing. Safe for concurrent use.
	rendered *lru.Cache[renderedKey, []byte]
	// renderEpoch is part of every rendered key: ReadModelsReplaced moves
	// it, and the bodies rendered before are never served again.
	renderEpoch     atomic.Uint64
	partitions      int
	consistencyWait time.Duration

	readyChecks, optionalChecks map[string]ReadyCheck
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{
		log:       cfg.Log,
		store:     cfg.Store,
		verifier:  cfg.Verifier,
		keys:      keyStore{pool: cfg.Pool},
		txStore:   cfg.TxStore,
		commands:  cfg.Commands,
		pool:      cfg.Pool,
		tel:       cfg.Telemetry,
		auditor:   cfg.Audit,
		rebuilds:  cfg.Rebuilds,
		operators: cfg.Operators,
		registry:  cfg.Registry,

		reader:          cfg.Reader,
		hotReads:        cfg.HotReads,
		hotDailySales:   cfg.HotDailySales,
		checkpoints:     cfg.Checkpoints,
		partitions:      cfg.Partitions,
		consistencyWait: cfg.ConsistencyWait,

		readyChecks:    maps.Clone(cfg.ReadyChecks),
		optionalChecks: maps.Clone(cfg.OptionalChecks),
	}
	s.rendered, _ = lru.New[renderedKey, []byte](renderedTransactions) // only a size <= 0 fails
	if s.partitions <= 0 {
		s.partitions = projections.DefaultPartitions
	}
	if s.consistencyWait <= 0 {
		s.consistencyWait = DefaultConsistencyWait
	}
	if s.tel != nil {
		histogram := func(name, description string) metric.Float64Histogram {
			h, err := s.tel.Meter("pos/api").Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(description),
				metric.WithExplicitBucketBoundaries(.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
			if err != nil {
				return nil
			}
			return h
		}
		s.commandDuration = histogram("pos.command.duration", "Latency of command requests, by route and status.")
		s.queryDuration = histogram("pos.query.duration", "Latency of GET requests under /v1 (queries, audit), by route and status.")
	}
	return s
}

// Handler returns the router.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { writeProblem(w, errNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { writeProblem(w, errMethodNotAllow) })

	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Get("/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPIDocument)
	})
	if s.tel != nil {
		r.Method(http.MethodGet, "/metrics", s.tel.MetricsHandler())
	}

	r.Route("/v1", func(r chi.Router) {
		r.Use(s.measureGets)
		r.Use(auth.Middleware(s.verifier, func(w http.ResponseWriter, r *http.Request, err error) {
			s.fail(w, r, errUnauthorized)
		}))
		// Command routes live on their own router so that /v1/pos/sync can
		// send each offline command through exactly the same path.
		cmds := chi.NewRouter()
		cmds.NotFound(func(w http.ResponseWriter, r *http.Request) { writeProblem(w, errNotFound) })
		cmds.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { writeProblem(w, errMethodNotAllow) })
		cmds.Route("/v1", func(r chi.Router) {
			r.Use(s.measure(s.commandDuration), commandsOnly)
			// Roles are checked before the idempotency key is, so that a
			// key another role stored is never replayed to this caller.
			r.Group(func(r chi.Router) {
				r.Use(s.idempotent)
				r.Post("/transactions", s.openTransaction)
				r.Post("/transactions/{id}/items", s.addItem)
				r.Delete("/transactions/{id}/items/{line_id}", s.removeItem)
				r.Post("/transactions/{id}/discounts", s.applyDiscount)
				r.Post("/transactions/{id}/checkout", s.checkout)
				r.Post("/transactions/{id}/payments", s.addPayment)
				r.Post("/transactions/{id}/payments/{payment_id}/confirm", s.confirmPayment)
				r.Post("/transactions/{id}/payments/{payment_id}/decline", s.declinePayment)
				r.Post("/transactions/{id}/complete", s.complete)
				r.Post("/stock/receipts", s.receiveStock)
			})
			r.Group(func(r chi.Router) {
				r.Use(onlyRoles(auth.RoleManager, auth.RoleAdmin), s.idempotent)
				r.Post("/transactions/{id}/void", s.void)
				r.Post("/transactions/{id}/refunds", s.refund)
				r.Post("/stock/adjustments", s.adjustStock)
				r.Post("/stock/transfers", s.transferStock)
			})
			r.Group(func(r chi.Router) {
				r.Use(onlyRoles(auth.RoleAdmin), wholeMerchant, s.idempotent)
				r.Put("/settings", s.changeSettings)
			})
		})
		r.Group(func(r chi.Router) {
			r.Use(commandsOnly)
			r.Post("/pos/sync", s.posSync(cmds))
		})
		toCmds := routeAfresh(cmds)
		r.Post("/transactions", toCmds)
		r.Post("/transactions/*", toCmds)
		r.Delete("/transactions/*", toCmds)
		r.Put("/settings", toCmds)
		r.Post("/stock/*", toCmds)
		r.Get("/settings", s.getSettings)
		if s.reader != nil && s.checkpoints != nil {
			r.Group(s.queryRoutes)
		}

		// Audit (SPEC §6): AUDITOR and ADMIN only; see audit.go.
		r.Group(s.auditRoutes)
		// Projections (SPEC §7): ADMIN only; see admin.go.
		if s.rebuilds != nil {
			r.Group(s.adminRoutes)
		}
	})
	if s.tel == nil {
		return r
	}
	if !s.tel.Exporting {
		// Nothing leaves the process, so no recorded request span is worth
		// its cost (otelhttp's work was about a tenth of a cached read's
		// CPU, +9 to +14 % cached reads/s without it in three same-hour pairs):
		// requestTrace gives the request the span context otelhttp would.
		return requestTrace(s.tel.Propagator, r)
	}
	// Its own metrics are left out: pos.command.duration and
	// pos.query.duration say as much, by route, for a third of the cost
	// (three histograms a request, 5 % of a cached read's CPU).
	return otelhttp.NewHandler(r, "pos.http",
		otelhttp.WithTracerProvider(s.tel.Tracers), otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithPropagators(s.tel.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
		// Probes and scrapes are no one's request: no span, no trace.
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return true
		}))
}

// measure records each request's latency in h by route pattern and status,
// and names the request's span after the route.
func (s *Server) measure(h metric.Float64Histogram) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if h == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			route := r.Method + " " + chi.RouteContext(r.Context()).RoutePattern()
			trace.SpanFromContext(r.Context()).SetName(route)
			h.Record(r.Context(), time.Since(start).Seconds(), metric.WithAttributes(
				attribute.String("route", route), attribute.Int("status", ww.Status())))
		})
	}
}

// measureGets is measure with queryDuration, for GET requests only (the
// commands are measured on their own router, sync's included).
func (s *Server) measureGets(next http.Handler) http.Handler {
	measured := s.measure(s.queryDuration)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			measured.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// recoverer turns a panic into the one 500 problem document, logged with
// its stack, instead of a bare 500 (net/http's http.ErrAbortHandler, used to
// abort a response on purpose, is re-raised).
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.ErrorContext(r.Context(), "panic serving request", "method", r.Method, "path", r.URL.Path,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			writeProblem(w, errInternal)
		}()
		next.ServeHTTP(w, r)
	})
}

// routeAfresh hands a request to another chi router, which then routes the
// full path rather than what is left after the outer router's prefix.
func routeAfresh(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, chi.NewRouteContext())))
	}
}

// wholeMerchant refuses the endpoints that span every branch of the
// merchant (the audit feed, its export and verify; the settings; the
// projection endpoints) to a token limited to branches: a branch limit
// applies whatever the role.
func wholeMerchant(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(principalOf(r).BranchIDs) > 0 {
			writeProblem(w, errForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// onlyRoles refuses a route to every role but roles (void, refund, stock
// adjustments and transfers need MANAGER or ADMIN; settings ADMIN).
func onlyRoles(roles ...auth.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !principalOf(r).HasRole(roles...) {
				writeProblem(w, errForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// commandsOnly refuses every command to AUDITOR, who reads but never acts.
func commandsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !principalOf(r).CanIssueCommands() {
			writeProblem(w, errForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fail writes err as a problem; the one door to writeError.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, r, s.log, mapError, err)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// ReadModelsReplaced tells the server that a projection rebuild swapped
// read-model tables in (package rebuild, in any process): a transaction's
// detail may have changed without a new version, so the bodies it rendered
// before are never served again. Safe for concurrent use.
func (s *Server) ReadModelsReplaced() { s.renderEpoch.Add(1) }

// requestTrace gives each request the trace context a request span would
// have, without recording one: the caller's trace (traceparent,
// tracestate, baggage), or a new one, and a span id of its own. Commands'
// spans are its children, events' metadata and log lines carry it, as with
// otelhttp.
func requestTrace(p propagation.TextMapPropagator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if r.Header.Get("traceparent") != "" || r.Header.Get("baggage") != "" {
			ctx = p.Extract(ctx, propagation.HeaderCarrier(r.Header))
		}
		parent := trace.SpanContextFromContext(ctx)
		sc := trace.SpanContextConfig{TraceID: parent.TraceID(), TraceFlags: parent.TraceFlags(), TraceState: parent.TraceState()}
		if !parent.IsValid() {
			sc = trace.SpanContextConfig{}
			binary.BigEndian.PutUint64(sc.TraceID[:8], rand.Uint64())
			binary.BigEndian.PutUint64(sc.TraceID[8:], rand.Uint64())
		}
		binary.BigEndian.PutUint64(sc.SpanID[:], rand.Uint64()|1) // never the invalid all-zero id
		next.ServeHTTP(w, r.WithContext(trace.ContextWithSpanContext(ctx, trace.NewSpanContext(sc))))
	})
}
