package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"pos/commands"
	"pos/consume"
	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/internal/telemetry"
	"pos/processes"
	"pos/projections"
)

// processDurable is the JetStream durable (and queue group) of the process
// managers: apart from the projectors', so each sees every event.
const processDurable = "pos_process"

// commandDeps are the command handlers' collaborators, with ledgers the
// store stock ledgers are always written to (ledgerStore); codes
// may be nil where no transaction is opened (the process managers). With a
// meter, lost append races are counted as pos.command.conflicts by stream
// category; tracer traces each command and its append.
func commandDeps(ledgers eventstore.Store, codes *commands.Codes, meter metric.Meter, tracer trace.Tracer) *commands.Deps {
	deps := &commands.Deps{
		Now:   func() time.Time { return time.Now().UTC() },
		NewID: func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes: codes,
		// A popular SKU's ledger gains events with every sale: keep it in
		// memory, write it outside requests' transactions, and let this
		// process's commands on it queue rather than race.
		Snapshots: commands.NewSnapshots(0),
		Ledgers:   ledgers,
		Locks:     &commands.StreamLocks{},
		// Ledgers are never written in a request's transaction (ledgers is
		// a pool's store), so a snapshot holds only committed events.
		TrustSnapshots: true,
		Tracer:         tracer,
	}
	if meter != nil {
		if c, err := meter.Int64Counter("pos.command.conflicts",
			metric.WithDescription("appends that lost a race and were decided again, by stream category")); err == nil {
			deps.OnConflict = func(category string) {
				c.Add(context.Background(), 1, metric.WithAttributes(attribute.String("category", category)))
			}
		}
	}
	return deps
}

// projectionWorker is the read models' runner as a worker.
func projectionWorker(runner *projections.Runner) worker {
	var names []string
	for _, p := range projections.All() {
		names = append(names, p.Name())
	}
	return worker{name: "projections", runner: runner, durable: consume.DefaultDurable, names: names}
}

// ledgerPoolSize is the connections of the stock ledgers' own pool.
const ledgerPoolSize = 8

// ledgerStore returns the store stock ledgers are written to (see
// commands.Deps.Ledgers): with PostgreSQL, one over a pool of its own,
// closed when pools ends. Requests holding a connection of the main pool in
// their transaction append to ledgers outside it; on the same pool, as
// many such requests as connections would wait forever for one more.
func ledgerStore(ctx, pools context.Context, cfg config, tel *telemetry.Telemetry, store eventstore.Store, reg *eventstore.Registry) (eventstore.Store, error) {
	sales, ok := store.(*pgstore.Store)
	if !ok {
		return eventstore.Upcasting{Store: store, Registry: reg}, nil
	}
	pool, err := pgstore.ConnectSized(ctx, cfg.AppDatabaseURL, ledgerPoolSize)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(pools, pool.Close)
	if err := tel.ObservePool("ledgers", pool); err != nil {
		return nil, err
	}
	ledgers := pgstore.New(pool)
	ledgers.SignalAppendsTo(sales) // the relay follows both
	return eventstore.Upcasting{Store: ledgers, Registry: reg}, nil
}

// processRetries bounds a process manager command's conflict retries: far
// above a request's, since a process manager has no client to hand a 409 to
// and a failure only stalls its partition until redelivery.
const processRetries = 300

// processHandlers returns handlers for the process managers: deps with
// processRetries, sharing deps' snapshots and locks.
func processHandlers(store eventstore.Store, deps *commands.Deps) *commands.Handlers {
	d := *deps
	d.Retries = processRetries
	return commands.New(store, &d)
}

// processHold is how long the process manager's consumers hold the events
// it ignores (most of a sale's) for one it handles
// (consume.Options.HoldUnhandled), rather than each taking a transaction
// to move the bookkeeping when it arrives alone.
const processHold = 250 * time.Millisecond

// processWorker builds the stock process manager's runner over pool, sending
// its commands through h, and starts its deadline sweeper until ctx ends.
// Its runner applies one handled event per transaction, with the events
// it ignores alongside (see processes.Stock).
func processWorker(ctx context.Context, cfg config, log *slog.Logger, pool *pgxpool.Pool, store eventstore.Store, h *commands.Handlers, meter metric.Meter) (worker, error) {
	active, err := processes.Activate(ctx, pool, processes.Name)
	if err != nil {
		return worker{}, err
	}
	opts := projections.Options{MaxHandledPerRun: 1, Meter: meter}
	runner, err := projections.NewRunner(pool, store, opts, &processes.Stock{Handlers: h, Timeout: cfg.ReservationTimeout, ActiveFrom: active})
	if err != nil {
		return worker{}, err
	}
	sweeper := &processes.Sweeper{Pool: pool, Handlers: h, Now: func() time.Time { return time.Now().UTC() }, Log: log}
	go sweeper.Run(ctx)
	// A window of 32. The runner gives each event that sends commands a
	// transaction of its own (MaxHandledPerRun, with ActsOutside), and the
	// events that only write deadlines, most of them, share one. A window
	// of 8 left the process manager seconds behind at 350 commands/s (lag
	// p50 0.16–0.5 s, p99 5 s, against 0.06–0.08 s and 1–2 s with 64);
	// on a later build, 32 against 64: p99 0.1–0.125 s against 0.25–0.8 s
	// (same-hour pairs; measured with watermill-nats' subscriber, one
	// subscription per message of the window). A wider window only
	// lengthens the wait of a message behind the others' commands towards
	// AckWait, after which it is redelivered and its commands decided
	// again (harmlessly: their event ids are derived, but at a cost when
	// the machine is already slow).
	return worker{name: "processes", runner: runner, durable: processDurable, names: []string{processes.Name}, maxAckPending: 32,
		holdUnhandled: processHold}, nil
}
