// Package processes holds the process managers (SPEC §2): Watermill-driven
// handlers that turn events into follow-up commands. They run behind a
// projections.Runner of their own (consumed from NATS by its own durable, see
// cmd/pos), which gives them what projectors get: events of a stream in
// order, gaps filled from the event store, and bookkeeping that commits with
// their own table writes.
//
// Delivery is at least once, and a process manager's commands go to the
// event store, outside the runner's transaction: a transaction that rolls
// back after the commands ran is retried and sends them again. That is safe
// because every command is idempotent (a stock ledger remembers each
// transaction, refund and transfer it handled) and carries event ids derived
// from the source event's id (commands.Meta.DeriveIDsFrom) and the source's
// time, so a second delivery decides nothing or appends nothing new.
package processes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"pos/commands"
	"pos/domain"
	"pos/domain/stock"
	"pos/domain/transaction"
	"pos/eventstore"
)

// Name is the stock process manager's bookkeeping name.
const Name = "stock_process"

// DefaultReservationTimeout is how long a sale may hold reserved units
// without being paid before it is voided and its units released.
const DefaultReservationTimeout = 30 * time.Minute

// Actor is the actor of the commands the process managers send.
const Actor = "system:stock-process"

// Role is the role recorded in their events' metadata.
const Role = "SYSTEM"

// Stock is the stock process manager (SPEC §4.2):
//
//   - CheckedOut: the sale gets a deadline (checkout reserved its units);
//   - TransactionPaid: the reserved units are sold (cost of goods recorded),
//     and reservations of SKUs the sale no longer has are released;
//   - TransactionVoided: every reservation of the sale is released, and,
//     after payment, the sold units are returned;
//   - RefundIssued by lines: the refunded lines' units are returned;
//   - StockReserved: the sale gets a deadline (a checkout that reserved and
//     then crashed leaves a draft holding units);
//   - StockTransferredOut: the transfer's target half is recorded.
//
// Deadlines past due are acted on by Sweep. Stock implements
// projections.Projector; run it with MaxHandledPerRun 1 (or BatchSize 1):
// its runner's transaction holds the streams' locks while its commands
// run, and a transaction id (which holds back the store's feed horizon)
// once it has written a deadline, so keep that to one event's commands.
// Events that only write a deadline share a transaction (ActsOutside).
type Stock struct {
	// Handlers send the commands (over the plain event store, never a
	// request's transaction).
	Handlers *commands.Handlers
	// Timeout is the reservation timeout; 0 means
	// DefaultReservationTimeout.
	Timeout time.Duration
	// ActiveFrom is when the process manager was first started
	// (Activate): events recorded before it are skipped.
	ActiveFrom time.Time
	// Log receives the events it cannot act on; default slog.Default.
	Log *slog.Logger
	// Now is the clock a checkout's timeout counts from when the checkout
	// itself is older (rung up offline, or applied late); default time.Now.
	// It must be the Sweeper's clock.
	Now func() time.Time
}

// Activate records, the first time it is called for name, that the process
// manager starts now, and returns that time (the recorded one on every
// later call). pool must work as pos_app.
func Activate(ctx context.Context, pool *pgxpool.Pool, name string) (time.Time, error) {
	var from time.Time
	err := pool.QueryRow(ctx, `
        WITH new AS (INSERT INTO process_managers (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING active_from)
        SELECT active_from FROM new UNION ALL SELECT active_from FROM process_managers WHERE name = $1
        LIMIT 1`, name).Scan(&from)
	if err != nil {
		return time.Time{}, fmt.Errorf("processes: activate %s: %w", name, err)
	}
	return from, nil
}

// Name implements projections.Projector.
func (*Stock) Name() string { return Name }

// Categories implements projections.CategoryScoped.
func (*Stock) Categories() []string { return []string{"transaction", "stock"} }

// Handles implements projections.Projector.
func (*Stock) Handles(eventType string) bool {
	switch eventType {
	case "CheckedOut", "TransactionPaid", "TransactionVoided", "RefundIssued", "StockReserved", "StockTransferredOut":
		return true
	}
	return false
}

// ActsOutside implements projections.ActsOutside: of the events it
// handles, only the checkout's and a reservation's work is all in the
// runner's transaction (the sale's deadline); the others send commands.
func (*Stock) ActsOutside(eventType string) bool {
	return eventType != "CheckedOut" && eventType != "StockReserved"
}

func (p *Stock) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultReservationTimeout
}

// Apply implements projections.Projector: it sends the event's follow-up
// commands, then records or clears the sale's deadline in tx. A command the
// ledger refuses for good (invalid input: a SKU or quantity no ledger
// takes, in a sale from before checkout checked them; an id it used for
// another movement) can never succeed: it is logged as an error and
// skipped, rather than stall the partition forever. Every other failure is
// returned, and the delivery retried.
func (p *Stock) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	if e.RecordedAt.Before(p.ActiveFrom) {
		return nil // history from before stock was tracked
	}
	err := p.apply(ctx, tx, e)
	if permanent(err) {
		log := p.Log
		if log == nil {
			log = slog.Default()
		}
		log.ErrorContext(ctx, "stock process manager: event skipped, its command can never apply",
			"event_id", e.ID, "stream", e.Stream, "type", e.Type, "err", err)
		return nil
	}
	return err
}

// permanent reports an error every part of which can never succeed:
// domain.ErrInvalid, or domain.ErrAlreadyExists (an id the ledger used for
// another movement; its history only grows, so a retry is refused alike,
// and would hold every merchant of the partition behind this event for
// good). The ledgers of a sale's SKUs fail one by one (their errors
// joined): one refused SKU beside a transient failure of another must be
// retried, or the other SKU's units would be lost with the skipped event.
func permanent(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := e.(*domain.ValidationError); e == domain.ErrInvalid || e == domain.ErrAlreadyExists || ok {
			return true
		}
		if is, ok := e.(interface{ Is(error) bool }); ok && (is.Is(domain.ErrInvalid) || is.Is(domain.ErrAlreadyExists)) {
			return true
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			parts := j.Unwrap()
			for _, part := range parts {
				if !permanent(part) {
					return false
				}
			}
			return len(parts) > 0
		}
	}
	return false
}

func (p *Stock) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// releaseReason is why a void releases a sale's units, within what a ledger
// takes (a void's reason may already be as long as that).
func releaseReason(void string) string {
	r := []rune("voided: " + void)
	return string(r[:min(len(r), stock.MaxReasonLen)])
}

func (p *Stock) apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	category, merchantID, streamID, ok := eventstore.ParseStreamName(e.Stream)
	if !ok {
		return fmt.Errorf("processes: stream %q has no merchant", e.Stream)
	}
	merchant, err := uuid.Parse(merchantID)
	if err != nil {
		return fmt.Errorf("processes: stream %q: %w", e.Stream, err)
	}
	meta := commands.Meta{MerchantID: merchant, Actor: Actor, Role: Role, CorrelationID: e.Metadata.CorrelationID,
		CausationID: e.ID.String(), TraceParent: e.Metadata.TraceParent, TraceState: e.Metadata.TraceState, DeriveIDsFrom: e.ID}
	// The commands are traced in the event's trace (the request that wrote
	// it), not in that of the delivery that leads the batch.
	ctx = propagation.TraceContext{}.Extract(trace.ContextWithSpanContext(ctx, trace.SpanContext{}),
		propagation.MapCarrier{"traceparent": e.Metadata.TraceParent, "tracestate": e.Metadata.TraceState})
	if category == "stock" {
		return p.applyStock(ctx, tx, meta, e)
	}
	id, err := uuid.Parse(streamID)
	if err != nil {
		return fmt.Errorf("processes: stream %q: %w", e.Stream, err)
	}
	ev, err := transaction.Decode(e.Type, e.Data)
	if err != nil {
		return err
	}
	t, _, err := p.Handlers.Transaction(ctx, meta, id)
	if err != nil {
		return err
	}
	switch ev := ev.(type) {
	case transaction.CheckedOut:
		// The timeout counts from now when the checkout is older: one rung
		// up offline (its At hours old) still gets the whole of it.
		return setDeadline(ctx, tx, merchant, id, t.BranchID(), skusOf(t), later(ev.At, p.now()).Add(p.timeout()))
	case transaction.TransactionPaid:
		if err := p.Handlers.SellPaid(ctx, meta, t, ev.At); err != nil {
			return err
		}
		// Reservations of SKUs the sale no longer has (a checkout that
		// failed before a line was removed) go back.
		extra, err := reservedSKUs(ctx, tx, merchant, id)
		if err != nil {
			return err
		}
		lines := commands.UnitsBySKU(t.Lines())
		extra = slices.DeleteFunc(extra, func(sku string) bool { _, ok := lines[sku]; return ok })
		if err := p.Handlers.ReleaseReservations(ctx, op(meta, "release"), t.BranchID(), id, extra, "not in the sale", 0, ev.At); err != nil {
			return err
		}
		return clearDeadline(ctx, tx, merchant, id)
	case transaction.TransactionVoided:
		reserved, err := reservedSKUs(ctx, tx, merchant, id)
		if err != nil {
			return err
		}
		all := slices.Compact(slices.Sorted(slices.Values(append(reserved, skusOf(t)...))))
		if err := p.Handlers.ReleaseReservations(ctx, op(meta, "release"), t.BranchID(), id, all, releaseReason(ev.Reason), 0, ev.At); err != nil {
			return err
		}
		if ev.PreviousStatus == transaction.StatusPaid {
			if err := p.Handlers.ReturnUnits(ctx, meta, t.BranchID(), id, id, zeroUnits(t), ev.At); err != nil {
				return err
			}
		}
		return clearDeadline(ctx, tx, merchant, id)
	case transaction.RefundIssued:
		if units := commands.RefundedUnits(t, ev); len(units) > 0 {
			return p.Handlers.ReturnUnits(ctx, meta, t.BranchID(), id, ev.RefundID, units, ev.At)
		}
	}
	return nil
}

func (p *Stock) applyStock(ctx context.Context, tx pgx.Tx, meta commands.Meta, e eventstore.RecordedEvent) error {
	ev, err := stock.Decode(e.Type, e.Data)
	if err != nil {
		return err
	}
	switch ev := ev.(type) {
	case stock.StockReserved:
		// From now when the reservation is older (see CheckedOut).
		return addDeadlineSKU(ctx, tx, ev.MerchantID, ev.TransactionID, ev.BranchID, ev.SKU, later(ev.At, p.now()).Add(p.timeout()))
	case stock.StockTransferredOut:
		_, _, err := p.Handlers.CompleteTransfer(ctx, meta, ev)
		return err
	}
	return nil
}

// op gives the commands of one kind that a source event causes their own
// event ids, so that two kinds of command on one ledger (a release and a
// return) never derive the same id.
func op(meta commands.Meta, name string) commands.Meta {
	meta.DeriveIDsFrom = uuid.NewSHA1(meta.DeriveIDsFrom, []byte(name))
	return meta
}

// reservedSKUs returns the SKUs the sale's deadline row lists: every SKU a
// checkout of it reserved, lines removed since included.
func reservedSKUs(ctx context.Context, tx pgx.Tx, merchant, id uuid.UUID) ([]string, error) {
	var skus []string
	err := tx.QueryRow(ctx, `SELECT skus FROM process_deadlines WHERE merchant_id = $1 AND transaction_id = $2`, merchant, id).Scan(&skus)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("processes: read deadline: %w", err)
	}
	return skus, nil
}

func skusOf(t *transaction.Transaction) []string {
	return slices.Sorted(maps.Keys(commands.UnitsBySKU(t.Lines())))
}

// zeroUnits maps every SKU of t to 0: "all that is left" for ReturnUnits.
func zeroUnits(t *transaction.Transaction) map[string]int64 {
	units := commands.UnitsBySKU(t.Lines())
	for sku := range units {
		units[sku] = 0
	}
	return units
}

func setDeadline(ctx context.Context, tx pgx.Tx, merchant, id, branch uuid.UUID, skus []string, due time.Time) error {
	_, err := tx.Exec(ctx, `
        INSERT INTO process_deadlines (merchant_id, transaction_id, branch_id, skus, due_at)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (merchant_id, transaction_id) DO UPDATE
           SET skus = ARRAY(SELECT DISTINCT unnest(process_deadlines.skus || EXCLUDED.skus) ORDER BY 1),
               due_at = EXCLUDED.due_at, revision = process_deadlines.revision + 1`, merchant, id, branch, skus, due)
	if err != nil {
		return fmt.Errorf("processes: set deadline: %w", err)
	}
	return nil
}

// addDeadlineSKU records a reservation's SKU; the first one of a sale sets
// the deadline, later ones keep it.
func addDeadlineSKU(ctx context.Context, tx pgx.Tx, merchant, id, branch uuid.UUID, sku string, due time.Time) error {
	_, err := tx.Exec(ctx, `
        INSERT INTO process_deadlines (merchant_id, transaction_id, branch_id, skus, due_at)
        VALUES ($1, $2, $3, ARRAY[$4::text], $5)
        ON CONFLICT (merchant_id, transaction_id) DO UPDATE
           SET skus = ARRAY(SELECT DISTINCT unnest(process_deadlines.skus || EXCLUDED.skus) ORDER BY 1),
               revision = process_deadlines.revision + 1`,
		merchant, id, branch, sku, due)
	if err != nil {
		return fmt.Errorf("processes: record reservation: %w", err)
	}
	return nil
}

func clearDeadline(ctx context.Context, tx pgx.Tx, merchant, id uuid.UUID) error {
	if _, err := tx.Exec(ctx, `DELETE FROM process_deadlines WHERE merchant_id = $1 AND transaction_id = $2`, merchant, id); err != nil {
		return fmt.Errorf("processes: clear deadline: %w", err)
	}
	return nil
}
