package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"pos/commands"
	"pos/eventstore"
	"pos/processes"
	"pos/projections"
)

// processDurable is the JetStream durable (and queue group) of the process
// managers: apart from the projectors', so each sees every event.
const processDurable = "pos_process"

// commandDeps are the command handlers' collaborators; codes may be nil
// where no transaction is opened (the process managers). With a meter,
// lost append races are counted as pos.command.conflicts by stream
// category.
func commandDeps(codes *commands.Codes, meter metric.Meter) *commands.Deps {
	deps := &commands.Deps{
		Now:   func() time.Time { return time.Now().UTC() },
		NewID: func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		Codes: codes,
		// Stock ledgers of popular SKUs grow with every sale.
		Snapshots: commands.NewSnapshots(0),
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
	return worker{name: "projections", runner: runner, durable: "", names: names}
}

// processWorker builds the stock process manager's runner over pool, sending
// its commands through h, and starts its deadline sweeper until ctx ends.
// Its runner applies one event per transaction (see processes.Stock).
func processWorker(ctx context.Context, cfg config, log *slog.Logger, pool *pgxpool.Pool, store eventstore.Store, h *commands.Handlers, meter metric.Meter) (worker, error) {
	opts := projections.Options{BatchSize: 1, Meter: meter}
	runner, err := projections.NewRunner(pool, store, opts, &processes.Stock{Handlers: h, Timeout: cfg.ReservationTimeout})
	if err != nil {
		return worker{}, err
	}
	sweeper := &processes.Sweeper{Pool: pool, Handlers: h, Now: func() time.Time { return time.Now().UTC() }, Log: log}
	go sweeper.Run(ctx)
	return worker{name: "processes", runner: runner, durable: processDurable, names: []string{processes.Name}}, nil
}
