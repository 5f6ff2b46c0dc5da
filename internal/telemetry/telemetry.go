// Package telemetry builds the service's OpenTelemetry providers: metrics
// exported in Prometheus text at /metrics, traces with W3C Trace Context
// propagation, and a slog handler that stamps log lines with the trace and
// span ids of their context. Nothing here is global: callers pass the
// providers to what they instrument.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Telemetry holds the providers. It is safe for concurrent use.
type Telemetry struct {
	registry *prometheus.Registry
	Meters   *sdkmetric.MeterProvider
	Tracers  *sdktrace.TracerProvider
	// Propagator reads and writes W3C traceparent/tracestate.
	Propagator propagation.TextMapPropagator
	// Exporting says whether spans leave the process (Config.TracesURL):
	// without it, HTTP servers need no span of their own per request, only
	// the caller's trace context passed on.
	Exporting bool
}

// Config says where spans go.
type Config struct {
	// TracesURL, when set, is an OTLP/HTTP traces endpoint (such as
	// http://collector:4318/v1/traces): spans are exported there in
	// batches, and every trace is recorded unless the caller's traceparent
	// says not sampled (the SDK's default sampler). Empty: spans are
	// exported nowhere, and only those whose caller's traceparent says
	// sampled are recorded (ParentBased(NeverSample)): recording every
	// request's span, for no one, cost about 5 % of a cached read's CPU.
	// Either way every span has its ids, which logs and events carry, and
	// OTEL_TRACES_SAMPLER (the SDK's standard variable), when set, decides
	// instead. The exporter honours the SDK's OTEL_EXPORTER_OTLP_HEADERS,
	// _TIMEOUT, _COMPRESSION and _CERTIFICATE variables and the batch
	// processor's OTEL_BSP_*.
	TracesURL string
}

// New returns providers whose metrics go to a private Prometheus registry
// (with Go runtime and process collectors) and whose spans go where cfg
// says, named for the service "pos" and the host (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES add to or override that).
func New(cfg Config) (*Telemetry, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	// A malformed OTEL_RESOURCE_ATTRIBUTES leaves out what it cannot parse
	// (ErrPartialResource) rather than stopping the service.
	res, err := resource.New(context.Background(),
		resource.WithAttributes(attribute.String("service.name", "pos")), resource.WithFromEnv(), resource.WithHost())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.TracesURL != "" {
		spans, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(cfg.TracesURL))
		if err != nil {
			return nil, fmt.Errorf("telemetry: traces exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(spans))
	} else if os.Getenv("OTEL_TRACES_SAMPLER") == "" { // an option would override the variable
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	return &Telemetry{
		registry:   reg,
		Meters:     sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)),
		Tracers:    sdktrace.NewTracerProvider(opts...),
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Exporting:  cfg.TracesURL != "",
	}, nil
}

// Tracer returns a tracer for an instrumentation scope; on a nil
// Telemetry, one whose spans record nothing.
func (t *Telemetry) Tracer(name string) trace.Tracer {
	if t == nil {
		return noop.Tracer{}
	}
	return t.Tracers.Tracer(name)
}

// EndSpan ends span, with err recorded on it if any; failed marks the span
// failed too (a refusal the caller caused, as a 4xx, is recorded but is no
// failure).
func EndSpan(span trace.Span, err error, failed bool) {
	if err != nil {
		span.RecordError(err)
		if failed {
			span.SetStatus(codes.Error, "")
		}
	}
	span.End()
}

// Meter returns a meter for an instrumentation scope; on a nil Telemetry,
// one whose instruments record nothing.
func (t *Telemetry) Meter(name string) metric.Meter {
	if t == nil {
		return metricnoop.Meter{}
	}
	return t.Meters.Meter(name)
}

// ObservePool reports pool's statistics (pgxpool.Stat, through otelpgx:
// connections acquired, idle and in all, acquires, and the time spent by
// those that found the pool empty), labelled pool=name, at every scrape
// (read at most once a second) for as long as t lives: a pool closed
// before then goes on being reported, with no connections. Names must be
// unique: a second pool of the same name hides the first. A pool too small
// for its work, or one whose connections are held idle (a transaction
// waiting on another pool), shows first as
// pgxpool_empty_acquire_wait_time_nanoseconds_total. Nil t reports nothing.
func (t *Telemetry) ObservePool(name string, pool *pgxpool.Pool) error {
	if t == nil {
		return nil
	}
	if err := otelpgx.RecordStats(pool, otelpgx.WithStatsMeterProvider(t.Meters),
		otelpgx.WithStatsAttributes(attribute.String("pool", name))); err != nil {
		return fmt.Errorf("telemetry: observe the %s pool: %w", name, err)
	}
	return nil
}

// MetricsHandler serves the registry in Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.Meters.Shutdown(ctx), t.Tracers.Shutdown(ctx))
}

// Inject returns the W3C traceparent and tracestate of ctx's span, for
// event metadata; both are empty without a span.
func (t *Telemetry) Inject(ctx context.Context) (traceparent, tracestate string) {
	c := propagation.MapCarrier{}
	t.Propagator.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}

// LogHandler wraps h so that every record logged with a context carrying a
// span gets trace_id and span_id attributes.
func LogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
