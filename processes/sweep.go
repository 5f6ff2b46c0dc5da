package processes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/commands"
	"pos/domain"
	"pos/domain/transaction"
)

// Defaults of Sweeper.
const (
	DefaultSweepInterval = 10 * time.Second
	// sweepBatch bounds the deadlines one sweep claims.
	sweepBatch = 100
	// claimLease is how long a claimed deadline is hidden from other
	// sweepers; a sweeper that dies with it lets it reappear after that.
	claimLease = time.Minute
	// maxBackoff caps the wait before a failed deadline is tried again.
	maxBackoff = 5 * time.Minute
	// recheckPaying is when a sale past its deadline that holds a payment
	// (see errHoldsPayment) is looked at again.
	recheckPaying = 5 * time.Minute
)

// errHoldsPayment reports a sale pending payment past its deadline that
// holds money: a settled part payment, or one awaiting its gateway. Voiding
// it would lose that money (a confirmation would then be refused), so it
// keeps its stock until it is paid, declined or voided by a person.
var errHoldsPayment = errors.New("the sale holds a payment")

// Sweeper acts on the stock process manager's deadlines past due: a sale
// still pending payment with no payment taken or awaited is voided (its
// units then come back through the process manager, and directly here as
// well), exactly as the sweeper saw it (If-Match: a payment landing meanwhile
// wins); one holding a payment is looked at again every recheckPaying; a draft left holding units by
// a checkout that failed half way releases them, and a sale that moved on
// meanwhile gets what the process manager would have done (idempotently).
//
// Several sweepers (one per worker process) may run at once: each claims
// rows for a lease (FOR UPDATE SKIP LOCKED), acts on them outside any
// database transaction, and deletes a row only if nobody re-armed it
// meanwhile. A failure is logged and retried with backoff (the row keeps the
// error and the attempt count for operators); nothing is dropped.
type Sweeper struct {
	Pool     *pgxpool.Pool
	Handlers *commands.Handlers
	// Now is the clock; it decides what is past due.
	Now func() time.Time
	// Interval between sweeps; 0 means DefaultSweepInterval.
	Interval time.Duration
	Log      *slog.Logger
}

// Run sweeps every Interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.Log.Error("stock deadlines: sweep failed; retrying next interval", "err", err, "acted", n)
		} else if n > 0 {
			s.Log.Info("stock deadlines acted on", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type deadline struct {
	merchant, id, branch uuid.UUID
	skus                 []string
	attempts             int
	revision             int64
}

// Sweep claims the deadlines past due and acts on each; it returns how many
// it completed. Failures of single deadlines are recorded on their rows and
// joined into the error.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	now := s.Now().UTC()
	until := now.Add(claimLease)
	rows, err := s.Pool.Query(ctx, `
        UPDATE process_deadlines d SET due_at = $2, attempts = d.attempts + 1
        FROM (SELECT merchant_id, transaction_id FROM process_deadlines
              WHERE due_at <= $1 ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) c
        WHERE d.merchant_id = c.merchant_id AND d.transaction_id = c.transaction_id
        RETURNING d.merchant_id, d.transaction_id, d.branch_id, d.skus, d.attempts, d.revision`, now, until, sweepBatch)
	if err != nil {
		return 0, fmt.Errorf("processes: claim deadlines: %w", err)
	}
	var due []deadline
	for rows.Next() {
		var d deadline
		if err := rows.Scan(&d.merchant, &d.id, &d.branch, &d.skus, &d.attempts, &d.revision); err != nil {
			rows.Close()
			return 0, fmt.Errorf("processes: read deadlines: %w", err)
		}
		due = append(due, d)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("processes: claim deadlines: %w", err)
	}
	done := 0
	var errs []error
	for _, d := range due {
		err := s.act(ctx, d)
		if errors.Is(err, errHoldsPayment) {
			s.Log.Info("stock deadline: the sale holds a payment; looking again later", "merchant", d.merchant, "transaction", d.id, "in", recheckPaying.String())
			if _, err := s.Pool.Exec(ctx, `UPDATE process_deadlines SET due_at = $4, attempts = 0, last_error = NULL
                WHERE merchant_id = $1 AND transaction_id = $2 AND revision = $3`,
				d.merchant, d.id, d.revision, s.Now().UTC().Add(recheckPaying)); err != nil {
				errs = append(errs, fmt.Errorf("sale %s: defer deadline: %w", d.id, err))
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("sale %s: %w", d.id, err))
			s.fail(ctx, d, err)
			continue
		}
		// Only the row as claimed: a reservation or checkout seen since
		// re-armed it (a new revision), and that is the next sweep's.
		if _, err := s.Pool.Exec(ctx, `DELETE FROM process_deadlines
            WHERE merchant_id = $1 AND transaction_id = $2 AND revision = $3`, d.merchant, d.id, d.revision); err != nil {
			errs = append(errs, fmt.Errorf("sale %s: delete deadline: %w", d.id, err))
			continue
		}
		done++
	}
	return done, errors.Join(errs...)
}

// act brings the sale's stock to what its status requires.
func (s *Sweeper) act(ctx context.Context, d deadline) error {
	meta := commands.Meta{MerchantID: d.merchant, Actor: Actor, Role: Role, CorrelationID: d.id.String()}
	h := s.Handlers
	at := s.Now().UTC()
	t, _, err := h.Transaction(ctx, meta, d.id)
	if err != nil {
		return err
	}
	switch t.Status() {
	case "": // reservations for a sale that was never opened
		return h.ReleaseReservations(ctx, meta, d.branch, d.id, d.skus, "no such sale", 0, at)
	case transaction.StatusDraft:
		// A checkout that reserved and then failed or died.
		return h.AbandonCheckout(ctx, meta, d.id, d.branch, d.skus, "checkout abandoned")
	case transaction.StatusPendingPayment:
		if t.Paid() > 0 || t.Pending() > 0 {
			return errHoldsPayment
		}
		// Void the sale as loaded: a payment that lands meanwhile changes
		// its version, and wins.
		seen := t.Version()
		voiding := meta
		voiding.IfMatch = &seen
		_, _, err := h.VoidTransaction(ctx, voiding, d.id, transaction.Void{Reason: "payment timeout: reservation released"})
		if err != nil && !errors.Is(err, commands.ErrVersionMismatch) && !errors.Is(err, domain.ErrInvalidState) {
			return err
		}
		// Voided now, or changed meanwhile: reload and settle what it is.
		if t, _, err = h.Transaction(ctx, meta, d.id); err != nil {
			return err
		}
		if t.Status() == transaction.StatusPendingPayment {
			return errHoldsPayment // a payment came in meanwhile
		}
	}
	if t.Status() == transaction.StatusVoided {
		return h.ReleaseReservations(ctx, meta, d.branch, d.id, d.skus, "voided", 0, at)
	}
	// Paid, completed or refunded: the sale stands. Sell what the process
	// manager may not have yet (idempotent) and release reservations of
	// SKUs the sale no longer has.
	if err := h.SellPaid(ctx, meta, t, at); err != nil {
		return err
	}
	lines := commands.UnitsBySKU(t.Lines())
	extra := slices.DeleteFunc(slices.Clone(d.skus), func(sku string) bool { _, ok := lines[sku]; return ok })
	return h.ReleaseReservations(ctx, meta, d.branch, d.id, extra, "not in the sale", 0, at)
}

// fail records a failed attempt and schedules the next one with backoff.
func (s *Sweeper) fail(ctx context.Context, d deadline, cause error) {
	wait := min(time.Duration(1<<min(d.attempts, 16))*time.Second, maxBackoff)
	s.Log.Error("stock deadline failed; will retry", "merchant", d.merchant, "transaction", d.id, "attempt", d.attempts, "retry_in", wait.String(), "err", cause)
	if _, err := s.Pool.Exec(ctx, `UPDATE process_deadlines SET due_at = $4, last_error = $5
        WHERE merchant_id = $1 AND transaction_id = $2 AND revision = $3`,
		d.merchant, d.id, d.revision, s.Now().UTC().Add(wait), cause.Error()); err != nil {
		// The claim lease brings the row back anyway.
		s.Log.Error("stock deadline: recording the failure failed", "transaction", d.id, "err", err)
	}
}
