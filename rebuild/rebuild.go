// Package rebuild rebuilds projections from the event store's whole history
// (SPEC §7): into shadow tables first, while queries keep reading the live
// ones, then swapped in at once.
//
// A rebuild of projection P (or of all of them):
//
//  1. claims the one rebuild slot of the database (a session advisory lock
//     held on one connection for the whole rebuild: a second rebuild, in any
//     process, is refused with ErrBusy; losing that connection fails the
//     rebuild) and records itself in projection_rebuilds;
//  2. builds empty shadows of P's tables, and of the tables of the
//     projectors P reads (projections.Tabled), in a schema of its own,
//     pos_rebuild_<id> (pos_rebuild_prepare, migrations 00012 and 00013),
//     dropping any earlier rebuild's;
//  3. replays the store's feed from the start into them with a runner of its
//     own (projections.Options.Shadow, on a pool whose search path is that
//     schema alone), with bookkeeping of its own, in passes until fewer
//     than shortTail events are left, and analyzes the shadows;
//  4. in one transaction on the slot's connection: locks projection_streams
//     and P's live tables (readers and every projection runner wait from
//     here), applies the last events to the shadow, drops the live tables,
//     moves the shadows into public and takes the shadow's checkpoints and
//     stream versions as P's. The shadow has then applied at least every
//     event the live projection had (it read the feed up to its horizon
//     after the lock, and the live runners can only have applied events
//     before it), so the live runners go on from there: what they deliver
//     next that the shadow already applied is a redelivery to them, a
//     no-op;
//  5. runs Options.AfterSwap, and records the outcome. Serving processes
//     notice the swap through a Watcher and drop what they cached of the old
//     tables.
//
// Readers wait only for step 4: at most swapLockWait for its locks, then
// the last tail (at most swapCatchup, else it rolls back and is tried
// again) and the DDL. A failure before the swap leaves the live tables
// untouched and drops its shadows (pos_rebuild_discard, migration 00014;
// the next rebuild drops them if it lost its slot); a crash leaves a row
// 'running' whose lock nobody holds, which the next rebuild marks
// 'abandoned'.
//
// Hazards: the swap copies P's rows of projection_streams (one per stream
// P has seen) while the live tables are locked, so its pause grows with the
// number of sales (Progress.Locked says how long it was; exchanging
// partitions instead was measured and left out, see the README); and the
// process managers are not projections, and are never rebuilt (their
// effects are commands).
package rebuild

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/eventstore"
	"pos/internal/pgpool"
	"pos/projections"
)

// All names every projection at once (one pass over the history).
const All = "all"

// Errors.
var (
	// ErrUnknown reports a name that is neither a rebuildable projection nor
	// All.
	ErrUnknown = errors.New("rebuild: no such projection")
	// ErrBusy reports that another rebuild holds the slot.
	ErrBusy = errors.New("rebuild: another rebuild is running")
)

// lockClass and lockKey name the session advisory lock of the rebuild slot
// (the two-key form, apart from the store's one-key locks).
const (
	lockClass int32 = 0x72626c64 // "rbld"
	lockKey   int32 = 1
)

// Options configure a Rebuilder.
type Options struct {
	// Partitions must be the live runners' (projections.Options.Partitions;
	// 0 means projections.DefaultPartitions): the shadow's checkpoints
	// replace theirs.
	Partitions int
	// Projectors returns fresh projectors to rebuild from, the live
	// runners' set; nil means projections.All.
	Projectors func() []projections.Projector
	// Count, when set, returns how many events the store's feed holds after
	// a position (pgstore.Store.CountAfter): progress then has a total and
	// an ETA, and Status a lag.
	Count func(ctx context.Context, after eventstore.Position) (uint64, error)
	// AfterSwap, when set, runs after a swap committed, with the tables
	// swapped: caches of the read models are dropped there. It cannot fail
	// the rebuild.
	AfterSwap func(ctx context.Context, tables []string)
	// Log, when set, reports each rebuild's start, swap and end.
	Log *slog.Logger
	// ShadowConns sizes the shadow runner's pool; 0 means 8.
	ShadowConns int32
}

// Rebuilder runs rebuilds. It is safe for concurrent use; only one rebuild
// runs at a time per database, whichever process starts it.
type Rebuilder struct {
	pool  *pgxpool.Pool
	url   string
	store eventstore.Store
	opts  Options
	// life bounds the rebuilds Start runs in the background.
	life context.Context
}

// New returns a Rebuilder. pool logs in as pos_app (pgstore.Connect); url
// is the database URL the shadow pool is opened on (as pos_app, with
// its shadow schema as its search path); store should upcast like the live
// runners' (eventstore.Upcasting). Rebuilds started with Start stop when
// life ends.
func New(life context.Context, pool *pgxpool.Pool, url string, store eventstore.Store, opts Options) *Rebuilder {
	if opts.Partitions <= 0 {
		opts.Partitions = projections.DefaultPartitions
	}
	if opts.Projectors == nil {
		opts.Projectors = projections.All
	}
	if opts.ShadowConns <= 0 {
		opts.ShadowConns = 8
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Rebuilder{pool: pool, url: url, store: store, opts: opts, life: life}
}

// Names returns the projections that can be rebuilt, in the runners' order.
func (b *Rebuilder) Names() []string { return Rebuildable(b.opts.Projectors()) }

// Rebuildable returns the names of the projectors among ps that can be
// rebuilt (projections.Tabled), in order.
func Rebuildable(ps []projections.Projector) []string {
	var out []string
	for _, p := range ps {
		if _, ok := p.(projections.Tabled); ok {
			out = append(out, p.Name())
		}
	}
	return out
}

// Progress is how far a rebuild has got.
type Progress struct {
	ID          uuid.UUID
	Projections []string
	State       string // running, done, failed or abandoned
	Done        uint64 // events applied to the shadow
	Total       uint64 // events in the history when it started, when Counted
	Counted     bool   // whether the store could count them (Options.Count)
	StartedAt   time.Time
	UpdatedAt   time.Time
	FinishedAt  time.Time // zero while running
	// Locked is how long the swap's attempts spent taking and holding
	// their locks, summed: the longest a reader of the swapped tables or a
	// projection runner could have waited on them. Kept by the process
	// that rebuilt, not recorded.
	Locked time.Duration
}

// Rate returns the events applied per second so far (up to the last
// update).
func (p Progress) Rate() float64 {
	end := p.UpdatedAt
	if !p.FinishedAt.IsZero() {
		end = p.FinishedAt
	}
	secs := end.Sub(p.StartedAt).Seconds()
	if secs <= 0 {
		return 0
	}
	return float64(p.Done) / secs
}

// ETA returns the time left at Rate, and false when it cannot tell (no
// total, no rate yet, or finished).
func (p Progress) ETA() (time.Duration, bool) {
	rate := p.Rate()
	if p.State != "running" || !p.Counted || rate <= 0 {
		return 0, false
	}
	left := float64(p.Total) - float64(p.Done)
	if left < 0 {
		left = 0
	}
	return time.Duration(left / rate * float64(time.Second)), true
}

// plan is what one rebuild builds and swaps.
type plan struct {
	names      []string                // the projections swapped in
	projectors []projections.Projector // those and the ones they read, in runner order
	tables     []string                // the live tables swapped
	shadow     []string                // every table built in the shadow
}

func (b *Rebuilder) plan(name string) (plan, error) {
	all := b.opts.Projectors()
	byName := map[string]projections.Projector{}
	var tabled []string
	for _, p := range all {
		if _, ok := p.(projections.Tabled); ok {
			byName[p.Name()] = p
			tabled = append(tabled, p.Name())
		}
	}
	want := map[string]bool{}
	switch {
	case name == All:
		for _, n := range tabled {
			want[n] = true
		}
	case byName[name] != nil:
		want[name] = true
	default:
		return plan{}, fmt.Errorf("%w: %q (one of %v, or %q)", ErrUnknown, name, tabled, All)
	}
	need := map[string]bool{}
	var visit func(n string) error
	visit = func(n string) error {
		if need[n] {
			return nil
		}
		p, ok := byName[n]
		if !ok {
			return fmt.Errorf("rebuild: projection %q reads %q, which is not rebuildable", name, n)
		}
		need[n] = true
		for _, r := range p.(projections.Tabled).Reads() {
			if err := visit(r); err != nil {
				return err
			}
		}
		return nil
	}
	for n := range want {
		if err := visit(n); err != nil {
			return plan{}, err
		}
	}
	var pl plan
	for _, n := range tabled { // runner order: a projector before those that read it
		if !need[n] {
			continue
		}
		p := byName[n]
		pl.projectors = append(pl.projectors, p)
		ts := p.(projections.Tabled).Tables()
		pl.shadow = append(pl.shadow, ts...)
		if want[n] {
			pl.names = append(pl.names, n)
			pl.tables = append(pl.tables, ts...)
		}
	}
	return pl, nil
}

// claim is a rebuild that holds the slot.
type claim struct {
	plan
	id      uuid.UUID
	conn    *pgx.Conn // holds the slot's lock; closed when the rebuild ends
	started time.Time
	// schema is the rebuild's own shadow schema, pos_rebuild_<id in hex>.
	schema string
}

// ErrSchemaChanged reports live tables whose columns no longer match their
// shadows': a migration ran while the rebuild did. A shadow table is made
// LIKE its live one, and swapping it in would undo the migration (a column
// type changed back, say). Run the rebuild again.
var ErrSchemaChanged = errors.New("rebuild: the database was migrated while the rebuild ran; run it again")

// changedTables names the tables, among the swapped ones, whose live
// columns (names and types) differ from their shadows' in schema.
func changedTables(ctx context.Context, tx pgx.Tx, tables []string, schema string) ([]string, error) {
	rows, err := tx.Query(ctx, `
        WITH cols AS (
            SELECT t, n.nspname = 'public' AS live,
                   string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attname) AS columns
            FROM unnest($1::text[]) AS t
            JOIN pg_class c ON c.relname = t
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname IN ('public', $2)
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            GROUP BY t, n.nspname
        )
        SELECT l.t FROM cols l JOIN cols s ON s.t = l.t AND NOT s.live
        WHERE l.live AND l.columns IS DISTINCT FROM s.columns`, tables, schema)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Start claims the slot for a rebuild of name (a projection, or All) and
// runs it in the background; it returns once the rebuild is recorded, with
// its id. Follow it with Status.
func (b *Rebuilder) Start(ctx context.Context, name string) (uuid.UUID, error) {
	c, err := b.claim(ctx, name)
	if err != nil {
		return uuid.Nil, err
	}
	go func() { _ = b.execute(b.life, c, nil) }()
	return c.id, nil
}

// Run rebuilds name (a projection, or All) and returns when it is swapped
// in (or failed). progress, when set, is called about once a second and at
// the end, from Run's goroutine.
func (b *Rebuilder) Run(ctx context.Context, name string, progress func(Progress)) (Progress, error) {
	c, err := b.claim(ctx, name)
	if err != nil {
		return Progress{}, err
	}
	var last Progress
	err = b.execute(ctx, c, func(p Progress) {
		last = p
		if progress != nil {
			progress(p)
		}
	})
	return last, err
}

func (b *Rebuilder) claim(ctx context.Context, name string) (*claim, error) {
	pl, err := b.plan(name)
	if err != nil {
		return nil, err
	}
	pc, err := b.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("rebuild: acquire a connection: %w", err)
	}
	// The slot's lock is a session lock: the connection leaves the pool,
	// and closing it is what surely releases the lock.
	conn := pc.Hijack()
	c := &claim{plan: pl, conn: conn}
	ok := false
	defer func() {
		if !ok {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	if err := b.takeSlot(ctx, conn); err != nil {
		return nil, err
	}
	if c.id, err = uuid.NewV7(); err != nil {
		return nil, fmt.Errorf("rebuild: id: %w", err)
	}
	c.schema = "pos_rebuild_" + hex.EncodeToString(c.id[:])
	// Rows left 'running' by a process that died lost their lock with it.
	// Every time of a rebuild's row is its own process's clock, so that its
	// rate and ETA never mix two clocks.
	c.started = time.Now()
	_, err = conn.Exec(ctx, `
        WITH gone AS (
            UPDATE projection_rebuilds SET state = 'abandoned', finished_at = $3, updated_at = $3
             WHERE state = 'running'
        )
        INSERT INTO projection_rebuilds (rebuild_id, projections, state, started_at, updated_at)
        VALUES ($1, $2, 'running', $3, $3)`, c.id, c.names, c.started)
	if err != nil {
		return nil, fmt.Errorf("rebuild: record: %w", err)
	}
	ok = true
	b.opts.Log.Info("rebuild started", "rebuild_id", c.id, "projections", c.names)
	return c, nil
}

// takeSlot takes the slot's lock on conn, or answers ErrBusy while another
// rebuild runs. A rebuild that has recorded its end may hold the lock a
// little longer (its last writes, its connection closing): while no row is
// running, the lock is tried again for up to slotWait, so a rebuild started
// once the last one shows done is not refused.
func (b *Rebuilder) takeSlot(ctx context.Context, conn *pgx.Conn) error {
	deadline := time.Now().Add(slotWait)
	for {
		var got, running bool
		err := conn.QueryRow(ctx, `
            SELECT pg_try_advisory_lock($1, $2), EXISTS (SELECT FROM projection_rebuilds WHERE state = 'running')`,
			lockClass, lockKey).Scan(&got, &running)
		switch {
		case err != nil:
			return fmt.Errorf("rebuild: claim the slot: %w", err)
		case got:
			return nil
		case running || time.Now().After(deadline):
			return ErrBusy
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// slotWait bounds how long takeSlot waits for a rebuild that has ended to
// let go of the slot.
const slotWait = 5 * time.Second

// execute runs a claimed rebuild to its end and records the outcome.
func (b *Rebuilder) execute(ctx context.Context, c *claim, progress func(Progress)) (err error) {
	p := Progress{ID: c.id, Projections: c.names, State: "running", StartedAt: c.started, UpdatedAt: c.started}
	defer func() {
		bg := context.WithoutCancel(ctx)
		if p.FinishedAt.IsZero() {
			p.FinishedAt = time.Now()
		}
		p.State, p.UpdatedAt = "done", time.Now()
		msg := ""
		if err != nil {
			p.State, msg = "failed", err.Error()
			b.opts.Log.Error("rebuild failed", "rebuild_id", c.id, "projections", c.names, "err", err)
			// Its shadows go now, if the slot is still held (otherwise the
			// next rebuild drops them).
			dctx, cancel := context.WithTimeout(bg, discardTimeout)
			if _, derr := c.conn.Exec(dctx, `SELECT pos_rebuild_discard($1, $2)`, c.shadow, c.schema); derr != nil {
				b.opts.Log.Warn("rebuild: drop the failed rebuild's shadow tables; the next rebuild will", "rebuild_id", c.id, "schema", c.schema, "err", derr)
			}
			cancel()
		} else {
			b.opts.Log.Info("rebuild swapped in", "rebuild_id", c.id, "projections", c.names, "events", p.Done,
				"seconds", p.FinishedAt.Sub(p.StartedAt).Seconds(), "locked_seconds", p.Locked.Seconds())
		}
		// A successful swap recorded 'done' in its own transaction; this
		// records a failure, or the final count.
		// On the pool, not the slot's connection, which may be what failed.
		if _, uerr := b.pool.Exec(bg, `
            UPDATE projection_rebuilds SET state = CASE WHEN state = 'done' THEN state ELSE $2 END, events_done = $3, updated_at = $5,
                   finished_at = coalesce(finished_at, $6), error = nullif($4, '')
             WHERE rebuild_id = $1`, c.id, p.State, int64(p.Done), msg, p.UpdatedAt, p.FinishedAt); uerr != nil {
			b.opts.Log.Warn("rebuild: record the outcome", "rebuild_id", c.id, "err", uerr)
		}
		// Closing returns before the server has ended the session, and
		// with it the lock: unlocked first, the slot is free on return.
		uctx, cancel := context.WithTimeout(bg, 5*time.Second)
		_, _ = c.conn.Exec(uctx, `SELECT pg_advisory_unlock($1, $2)`, lockClass, lockKey)
		cancel()
		_ = c.conn.Close(bg)
		if progress != nil {
			progress(p)
		}
	}()

	// The replay stops at the first failure seen on the slot's connection
	// (a progress write, at most once a second, or analyze): without the
	// slot, another rebuild may claim it and drop this one's shadows.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	// Counted here, not when claimed: a whole store's count takes a while,
	// and Start answers once the rebuild is recorded.
	if b.opts.Count != nil {
		if p.Total, err = b.opts.Count(ctx, eventstore.Start); err != nil {
			return err
		}
		p.Counted = true
		if _, err := c.conn.Exec(ctx, `UPDATE projection_rebuilds SET events_total = $2 WHERE rebuild_id = $1`, c.id, int64(p.Total)); err != nil {
			return fmt.Errorf("rebuild: record: %w", err)
		}
	}
	if _, err := c.conn.Exec(ctx, `SELECT pos_rebuild_prepare($1, $2)`, c.shadow, c.schema); err != nil {
		return fmt.Errorf("rebuild: prepare the shadow tables: %w", err)
	}
	// The shadow schema alone in the search path: a statement can never
	// reach a live table, even if a shadow table went missing (the next
	// rebuild drops this schema if this one lost its slot).
	shadow, err := pgpool.Open(ctx, b.url, "pos_app", "SET search_path = "+pgx.Identifier{c.schema}.Sanitize(), b.opts.ShadowConns)
	if err != nil {
		return fmt.Errorf("rebuild: shadow pool: %w", err)
	}
	defer shadow.Close()
	runner, err := projections.NewRunner(shadow, b.store, projections.Options{Partitions: b.opts.Partitions, Shadow: true}, c.projectors...)
	if err != nil {
		return err
	}

	lastReport := time.Now()
	count := func(n int) {
		p.Done += uint64(n)
		p.UpdatedAt = time.Now()
	}
	step := func(n int) {
		count(n)
		if time.Since(lastReport) < time.Second {
			return
		}
		lastReport = p.UpdatedAt
		if _, err := c.conn.Exec(ctx, `UPDATE projection_rebuilds SET events_done = $2, updated_at = $3 WHERE rebuild_id = $1`,
			c.id, int64(p.Done), p.UpdatedAt); err != nil {
			stop(fmt.Errorf("rebuild: record progress on the slot's connection: %w", err))
			return
		}
		if progress != nil {
			progress(p)
		}
	}
	cause := func(err error) error {
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
			return c
		}
		return err
	}

	// Passes until what is left is short, so that the swap's own catch-up,
	// under the lock, is short too; under a load the replay cannot outrun,
	// the swap goes ahead after maxPasses.
	pos := eventstore.Start
	for pass := 1; ; pass++ {
		before := p.Done
		if pos, err = runner.CatchupWith(ctx, pos, projections.CatchupOptions{Progress: step}); err != nil {
			return cause(fmt.Errorf("rebuild: replay: %w", err))
		}
		left := p.Done - before
		if b.opts.Count != nil {
			n, err := b.opts.Count(ctx, pos)
			if err != nil {
				return cause(err)
			}
			left = n
		}
		if left <= shortTail || pass == maxPasses {
			break
		}
	}
	if _, err := c.conn.Exec(ctx, `SELECT pos_rebuild_analyze($1, $2)`, c.shadow, c.schema); err != nil {
		return cause(fmt.Errorf("rebuild: analyze the shadow tables: %w", err))
	}
	for attempt := 1; ; attempt++ {
		err = b.swap(ctx, c, runner, &pos, count, &p)
		if err == nil {
			break
		}
		if !swapRetryable(err) || attempt == maxSwapAttempts {
			return cause(fmt.Errorf("rebuild: swap: %w", err))
		}
		b.opts.Log.Warn("rebuild: swap waited too long; catching up and trying again", "rebuild_id", c.id, "attempt", attempt, "err", err)
		select {
		case <-time.After(time.Duration(attempt) * time.Second):
		case <-ctx.Done():
			return cause(ctx.Err())
		}
		if pos, err = runner.CatchupWith(ctx, pos, projections.CatchupOptions{Progress: step}); err != nil {
			return cause(fmt.Errorf("rebuild: replay: %w", err))
		}
	}
	if b.opts.AfterSwap != nil { // the rebuild's time ends at the swap (p.FinishedAt)
		b.opts.AfterSwap(context.WithoutCancel(ctx), c.tables)
	}
	return nil
}

// Bounds of the catch-up passes and swap attempts, and of dropping a
// failed rebuild's shadows.
const (
	discardTimeout  = 30 * time.Second
	shortTail       = 2000
	maxPasses       = 10
	maxSwapAttempts = 5
	// swapLockWait bounds the wait for all the swap's locks (the
	// bookkeeping, then each live table): a long query on one holds the
	// swap back, and every reader queued behind the locks taken so far.
	swapLockWait = "3s"
	// swapCatchup bounds the catch-up under the swap's locks, while every
	// reader of the tables and every runner waits; past it the swap rolls
	// back and is tried again after another pass.
	swapCatchup = 10 * time.Second
)

// errSwapCatchup reports a final catch-up that outlasted swapCatchup.
var errSwapCatchup = errors.New("rebuild: the catch-up under the swap's locks took too long")

// swap locks the live tables, catches the shadow up to the feed's horizon
// and swaps it in, in one transaction on the slot's connection (the swap
// functions refuse a session that does not hold the slot).
func (b *Rebuilder) swap(ctx context.Context, c *claim, runner *projections.Runner, pos *eventstore.Position, count func(int), p *Progress) error {
	tx, err := c.conn.Begin(ctx)
	if err != nil {
		return err
	}
	// From the first lock asked for (queued readers and runners wait from
	// there) to the end of the transaction, rolled back or not.
	locking := time.Now()
	defer func() { p.Locked += time.Since(locking) }()
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The transaction idles while the shadow catches up on other
	// connections: the pools' idle timeout must not end it (swapCatchup
	// bounds that time instead).
	// statement_timeout bounds the wait for all the locks together (a
	// lock_timeout would bound each); a Go deadline would not do, since pgx
	// closes a connection whose statement outlives its context, and this
	// one holds the slot.
	if _, err := tx.Exec(ctx, `SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL statement_timeout = '`+swapLockWait+`'`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT pos_rebuild_lock($1)`, c.tables); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
		return err
	}
	// Under the locks, a migration of these tables is either committed
	// (and seen here) or waits for the swap, and then alters the new ones.
	if changed, err := changedTables(ctx, tx, c.tables, c.schema); err != nil {
		return err
	} else if len(changed) > 0 {
		return fmt.Errorf("%w (%s)", ErrSchemaChanged, strings.Join(changed, ", "))
	}
	// No Settle here: it would wait for live transactions that are waiting
	// for this one's locks. Hazard: an ACCESS EXCLUSIVE lock takes a
	// transaction id (it is logged for standbys), so from here to the
	// COMMIT the store's feed horizon cannot pass this transaction: the
	// relay publishes nothing and every Settle waits (the audit anchorer
	// and verification, gap fills). The catch-up below reads up to that
	// same horizon, which the live runners cannot have passed either.
	cctx, cancel := context.WithTimeout(ctx, swapCatchup)
	reached, err := runner.CatchupWith(cctx, *pos, projections.CatchupOptions{NoSettle: true, Progress: count})
	cancel()
	// Pages applied before a failure stay applied: the next attempt goes on
	// after them (and counts none twice).
	*pos = reached
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return errSwapCatchup
		}
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT pos_rebuild_swap($1, $2, $3)`, c.tables, c.names, c.schema); err != nil {
		return err
	}
	finished := time.Now()
	if _, err := tx.Exec(ctx, `
        UPDATE projection_rebuilds SET state = 'done', events_done = $2, finished_at = $3, updated_at = $3
         WHERE rebuild_id = $1`, c.id, int64(p.Done), finished); err != nil {
		return err
	}
	p.FinishedAt, p.UpdatedAt = finished, finished
	// Committed even if ctx ends now; and a COMMIT whose answer was lost
	// may have committed: the record says.
	if err := tx.Commit(context.WithoutCancel(ctx)); err != nil {
		var state string
		if qerr := b.pool.QueryRow(context.WithoutCancel(ctx), `SELECT state FROM projection_rebuilds WHERE rebuild_id = $1`, c.id).Scan(&state); qerr == nil && state == "done" {
			return nil
		}
		return err
	}
	return nil
}

// swapRetryable reports a lock wait past swapLockWait (a statement
// timeout), a lock timeout, a deadlock or a final catch-up that took too
// long: the swap rolled back, and may succeed later.
func swapRetryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, errSwapCatchup) || errors.As(err, &pgErr) && (pgErr.Code == "55P03" || pgErr.Code == "40P01" || pgErr.Code == "57014")
}

// Projection is one projection as GET /v1/admin/projections shows it.
type Projection struct {
	Name string
	// Position is the newest feed position the projection has applied
	// (the greatest of its partitions' checkpoints); Start when none.
	Position eventstore.Position
	// Lag is how many events the feed holds after Position, when Options
	// has Count. A partition behind the others is not counted.
	Lag *uint64
	// Rebuild is the rebuild of it in progress, if any; Last the latest one
	// that ended.
	Rebuild, Last *Progress
}

// Status returns every rebuildable projection, in the runners' order.
func (b *Rebuilder) Status(ctx context.Context) ([]Projection, error) {
	names := b.Names()
	out := make([]Projection, len(names))
	index := map[string]int{}
	for i, n := range names {
		out[i].Name, index[n] = n, i
	}
	rows, err := b.pool.Query(ctx, `
        SELECT DISTINCT ON (projection) projection, major, minor FROM projection_checkpoints
         WHERE projection = ANY ($1) ORDER BY projection, major DESC, minor DESC`, names)
	if err != nil {
		return nil, fmt.Errorf("rebuild: read checkpoints: %w", err)
	}
	var name string
	var major, minor int64
	_, err = pgx.ForEachRow(rows, []any{&name, &major, &minor}, func() error {
		out[index[name]].Position = eventstore.Position{Major: uint64(major), Minor: uint64(minor)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rebuild: read checkpoints: %w", err)
	}
	if b.opts.Count != nil {
		lags := map[eventstore.Position]uint64{} // projections run together share a position
		for i := range out {
			n, ok := lags[out[i].Position]
			if !ok {
				if n, err = b.opts.Count(ctx, out[i].Position); err != nil {
					return nil, err
				}
				lags[out[i].Position] = n
			}
			out[i].Lag = &n
		}
	}
	// Of each projection, the rebuild running (if any) and the latest that
	// ended; a row still 'running' whose slot nobody holds died with its
	// process.
	rows, err = b.pool.Query(ctx, `
        SELECT DISTINCT ON (p, state = 'running') p, rebuild_id, projections, state,
               events_done, events_total, started_at, updated_at, finished_at
          FROM (SELECT p, r.rebuild_id, r.projections, r.events_done, r.events_total, r.started_at, r.updated_at, r.finished_at,
                       CASE WHEN r.state = 'running' AND NOT EXISTS (
                        SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                           AND l.classid = $2::oid AND l.objid = $3::oid AND l.objsubid = 2
                           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
                    THEN 'abandoned' ELSE r.state END AS state
                  FROM projection_rebuilds r CROSS JOIN LATERAL unnest(r.projections) AS p
                 WHERE p = ANY ($1)) AS r
         ORDER BY p, state = 'running', started_at DESC`, names, int64(uint32(lockClass)), int64(uint32(lockKey)))
	if err != nil {
		return nil, fmt.Errorf("rebuild: read rebuilds: %w", err)
	}
	var pr Progress
	var done int64
	var total *int64
	var finished *time.Time
	_, err = pgx.ForEachRow(rows, []any{&name, &pr.ID, &pr.Projections, &pr.State, &done, &total, &pr.StartedAt, &pr.UpdatedAt, &finished}, func() error {
		cp := pr
		cp.Projections = slices.Clone(pr.Projections)
		cp.Done = uint64(done)
		if total != nil {
			cp.Total, cp.Counted = uint64(*total), true
		}
		if finished != nil {
			cp.FinishedAt = *finished
		}
		if cp.State == "running" {
			out[index[name]].Rebuild = &cp
		} else {
			out[index[name]].Last = &cp
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rebuild: read rebuilds: %w", err)
	}
	return out, nil
}

// Watcher tells a process when a rebuild of the database swaps tables in,
// whichever process ran it. What a process keeps of the read models in
// memory or in the cache is dropped then (cmd/pos: api.Server's
// ReadModelsReplaced, cache.Forget).
type Watcher struct {
	db interface {
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	}
	seen int64 // swaps recorded: rows that reached 'done', which no later write changes
}

// NewWatcher returns a Watcher of db's rebuilds, from the latest swap
// recorded now on.
func NewWatcher(ctx context.Context, db interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (*Watcher, error) {
	w := &Watcher{db: db}
	var err error
	if w.seen, err = w.latest(ctx); err != nil {
		return nil, fmt.Errorf("rebuild: read the latest swap: %w", err)
	}
	return w, nil
}

// latest counts the swaps recorded (nothing deletes a projection_rebuilds
// row, and a done one stays done: keep it so). Not the latest finished_at:
// that is the clock of whichever host ran the rebuild, and one swap stamped
// by a clock ahead would hide every later swap until real time caught up.
func (w *Watcher) latest(ctx context.Context) (int64, error) {
	var n int64
	err := w.db.QueryRow(ctx, `SELECT count(*) FROM projection_rebuilds WHERE state = 'done'`).Scan(&n)
	return n, err
}

// Run polls every interval and calls swapped after each swap it sees (several
// swaps between two polls make one call), and after a failed poll, since a
// swap may have happened meanwhile. swapped runs on Run's goroutine, and
// later swaps wait for it. A failed poll is logged once per outage. Run
// returns when ctx ends; it is not safe to call twice at once.
func (w *Watcher) Run(ctx context.Context, every time.Duration, log *slog.Logger, swapped func(context.Context)) {
	failing := false
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		last, err := w.latest(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				log.Warn("rebuild: cannot tell whether a rebuild swapped read models in; trying again", "err", err)
			}
			failing = true
		case err == nil:
			if failing || last != w.seen {
				swapped(ctx)
			}
			w.seen, failing = last, false
		}
	}
}
