// Package projections builds the read models (migrations/00006_read_models.sql)
// from the event store's events, and keeps the bookkeeping that makes doing so
// safe under at-least-once delivery.
//
// Delivery is at least once; effects are exactly once. Events reach the
// Runner from a broker that may redeliver, reorder across partitions or lose
// an acknowledged message (SPEC §2), or from the store's own feed (Catchup,
// Follow) when rebuilding. For every projector the Runner records, in the
// same PostgreSQL transaction as the projector's writes, the last version of
// each stream it applied (projection_streams) and the greatest feed position
// it reached per merchant partition (projection_checkpoints). An event at or
// below a stream's applied version is a redelivery and changes nothing; an
// event more than one version ahead reveals a gap, which the Runner fills
// from the event store (ReadStream) before applying the event. A message
// that carries the previous position of its partition (Delivery.PrevPosition)
// also lets the Runner fill gaps across streams; see HandleDeliveries.
//
// The Runner's transactions commit synchronously, and must: a message is
// acknowledged once its transaction commits, and the Runner remembers in
// memory what it committed per partition (Committed), skipping copies and
// the checkpoint read of every delivery that continues it. An asynchronous
// commit lost to a PostgreSQL crash would leave that memory ahead of the
// checkpoints, so that the process, still running, would never fill the
// lost events in (a restarted one would).
//
// Projectors therefore never see an event twice nor out of stream order, and
// need not be idempotent themselves; they must, however, write only through
// the transaction they are given, and only rows of the event's merchant (the
// Runner sets pos.merchant_id for the transaction, and row-level security
// refuses any other merchant's row).
package projections

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"pos/eventstore"
	"pos/internal/pgtx"
)

// DefaultPartitions is the number of merchant partitions when Options does
// not say.
const DefaultPartitions = 16

// DefaultBatchSize bounds how many events one transaction applies when
// Options does not say: large enough that a replay's statements per event
// vanish (BatchProjector), small enough that a transaction's row locks and
// memory stay modest.
const DefaultBatchSize = 1000

// maxTxAttempts bounds the retries of a transaction that lost a deadlock or
// serialization race.
const maxTxAttempts = 8

// Errors.
var (
	// ErrStreamGap reports a gap in a stream that the event store could not
	// fill (the missing versions are not there). Nothing was applied; the
	// delivery should be retried later.
	ErrStreamGap = errors.New("projections: stream gap cannot be filled from the store")
	// ErrPositionGap reports a delivery whose PrevPosition the partition's
	// checkpoints have not reached, and that the store's feed could not fill
	// yet (its horizon is behind a transaction still running). Nothing of the
	// delivery was applied; retry it later.
	ErrPositionGap = errors.New("projections: position gap cannot be filled yet")
	// ErrBadEvent reports an event whose stream name does not carry a
	// merchant, or whose metadata names another merchant than its stream.
	ErrBadEvent = errors.New("projections: event has no valid merchant")
)

// Projector turns events into one read model.
//
// Delivery is at least once, but the Runner makes effects exactly once: it
// calls Apply once per event and projector (or hands it to ApplyBatch, see
// BatchProjector), in stream version order, inside the PostgreSQL
// transaction that also records the projector's progress. A
// projector is thus written as if every event arrived exactly once, in
// order within its stream (not across streams: two transactions' events may
// interleave in any order). Apply must write only through tx; when it fails,
// the transaction rolls back and the delivery is retried.
//
// Renaming a projector (Name) makes the Runner treat it as new: its
// bookkeeping starts empty and every stream it sees is replayed from the
// store on its next event (the read model must then be emptied first).
type Projector interface {
	// Name identifies the projector's bookkeeping; stable and unique within
	// a Runner.
	Name() string
	// Handles reports whether Apply wants events of this type. Events it
	// does not handle still advance the projector's stream versions.
	Handles(eventType string) bool
	// Apply writes the event's effect on the read model in tx. The
	// transaction's pos.merchant_id is the event's merchant.
	Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error
}

// BatchProjector is optionally implemented by a Projector that applies many
// events in a few statements (read the rows they touch at once, change them
// in memory, write them back at once) rather than a few statements per
// event. The Runner then calls ApplyBatch instead of Apply, once per
// merchant segment of a transaction. The events it is given are all of one
// merchant (pos.merchant_id is set to it), of the projector's categories
// and of types it Handles; each comes exactly once, and in version order
// within its stream, though streams interleave. A merchant's settings event
// (SettingsCategory) always starts a new segment, so a projector that reads
// rm_merchant_settings reads the settings that held for every event of the
// batch. Apply must behave as ApplyBatch of one event.
type BatchProjector interface {
	Projector
	ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error
}

// CategoryScoped is optionally implemented by a Projector that reads only
// streams of some categories (eventstore.StreamName's first part). The Runner
// then neither calls it for nor keeps stream bookkeeping of other streams;
// its checkpoints still advance with every event, so Reached answers for any
// position.
type CategoryScoped interface {
	Categories() []string
}

// ActsOutside is optionally implemented by a Projector whose Apply of some
// events has effects outside the runner's transaction (a process manager's
// commands), and of others only writes in it. With
// Options.MaxHandledPerRun, only the events acted on outside (by it, or by
// any projector that does not implement ActsOutside) count towards the
// bound, and each of them starts a new run unless no event of the run is
// handled before it; after it, the run takes handled events of its merchant
// only. Its effects then happen before the transaction has written
// anything (so it holds no transaction id, which would hold back the
// store's feed, while they run), and the events that only write in the
// transaction share it instead of paying one each. Gap fills apply the
// events they read as they come.
type ActsOutside interface {
	ActsOutside(eventType string) bool
}

// Options tune a Runner.
type Options struct {
	// Partitions is the number of merchant partitions checkpoints are kept
	// for (see Partition); 0 means DefaultPartitions. Every process that
	// reads or writes the same checkpoints must use the same number:
	// changing it re-keys every checkpoint.
	Partitions int
	// BatchSize bounds how many consecutive events of one partition one
	// transaction applies; 0 means DefaultBatchSize.
	BatchSize int
	// MaxHandledPerRun, when positive, also bounds how many events that
	// some projector handles one transaction applies; the events no
	// projector handles join the run of the handled event before them (or,
	// leading a batch, of the first one), and only their bookkeeping is
	// written. For projectors whose Apply has effects outside the
	// transaction (a process manager's commands), so that one event's work
	// is committed before the next one's starts, without paying a
	// transaction for every event they ignore.
	MaxHandledPerRun int

	// AfterCommit, when set, is called after each transaction that applied
	// events has committed, with the events of that transaction (delivered
	// ones; redeliveries included, gap fills not). It runs on the applying
	// goroutine, before HandleDeliveries goes on, and cannot fail the
	// delivery: it is for side effects outside PostgreSQL, such as
	// invalidating caches of the read models just written. Its context
	// carries the delivery's values but not its cancellation: the commit
	// happened, and so must its side effects (bound them with timeouts).
	AfterCommit func(ctx context.Context, events []eventstore.RecordedEvent)

	// Meter, when set, receives two instruments, recorded right after each
	// commit (before AfterCommit) for the delivered events that transaction
	// applied for the first time (redeliveries and per-stream gap fills are
	// not counted):
	//
	//   - pos.projection.lag, a histogram in seconds of the time from the
	//     event's RecordedAt in the store to the commit that made it visible
	//     in the read models; buckets ten per decade from 0.5 ms to 1 s, then
	//     up to five minutes. RecordedAt is the store's clock and the commit time
	//     this process's, so keep clocks in sync; a replay of old events
	//     (Catchup) records their age.
	//   - pos.projection.events, a counter of those events;
	//   - pos.projection.gap_fills, a counter of the gaps filled from the
	//     store (a delivery whose PrevPosition the partition had not
	//     reached: a lost message, one still in flight past the consumer's
	//     reorder wait, or another worker's), and
	//     pos.projection.gap_fill_reads, of the events those fills read;
	//   - pos.projection.run_events, a histogram of the events each
	//     transaction of HandleDeliveries took (deliveries, and the gap
	//     fills and catch-ups that go through it; copies of what this
	//     Runner committed are left out before): how well events batch.
	//
	// All carry the attribute projectors, the projectors' names joined by
	// "+" (as "merchant_settings+transactions"), so that two runners in one
	// process stay apart (the Prometheus exporter drops the meter's name).
	Meter metric.Meter

	// Shadow marks a runner that writes a rebuild's shadow tables (package
	// rebuild) under the same projector names as the live runners: its
	// stream locks are kept apart from theirs, so that a live transaction
	// waiting on a table the rebuild has locked for its swap never holds a
	// lock the rebuild's last catch-up needs.
	Shadow bool
}

// Tabled is implemented by a Projector whose read model can be rebuilt
// (package rebuild): Tables names the tables it alone writes, in schema
// public, and Reads the projectors whose tables it reads while applying
// events (their state at each event must be rebuilt beside it).
type Tabled interface {
	Tables() []string
	Reads() []string
}

// LagBuckets returns the bucket boundaries of pos.projection.lag (see
// lagBuckets), for the other lags measured from an event's append.
func LagBuckets() []float64 { return slices.Clone(lagBuckets) }

// lagBuckets are the bucket boundaries (seconds) of pos.projection.lag: ten
// per decade from 0.5 ms to 1 s (each about 25 % above the last, so a
// quantile interpolated within a bucket is off by at most that much), then
// coarser up to five minutes.
var lagBuckets = []float64{
	.0005, .00063, .0008,
	.001, .00125, .0016, .002, .0025, .0032, .004, .005, .0063, .008,
	.01, .0125, .016, .02, .025, .032, .04, .05, .063, .08,
	.1, .125, .16, .2, .25, .32, .4, .5, .63, .8,
	1, 2, 5, 10, 30, 60, 120, 300,
}

// Delivery is one event as a consumer received it.
type Delivery struct {
	Event eventstore.RecordedEvent
	// PrevPosition, when set, is the position of the event before this one
	// in the same merchant partition (as the relay that published it saw
	// the feed); Start for the partition's first event. It lets the Runner
	// notice a message lost in between, even of another stream.
	PrevPosition *eventstore.Position
}

// Runner applies events to its projectors. Delivery to it is at least once
// (redelivered, lost, late); its effects are exactly once: see the package
// documentation. It is safe for concurrent use, though one partition is
// best handled by one worker at a time: concurrent deliveries of one stream
// queue on its lock, and every transaction of a partition updates the
// partition's checkpoint row.
type Runner struct {
	pool       *pgxpool.Pool
	store      eventstore.Store
	projectors []Projector
	scopes     [][]string // per projector; nil when not scoped
	names      []string   // per projector, its Name
	index      map[string]int
	partitions int
	batch      int
	maxHandled int // Options.MaxHandledPerRun
	lockClass  int32
	// tellsOutside: some projector implements ActsOutside, and each event
	// acted on outside then starts its run.
	tellsOutside bool
	// afterCommit is Options.AfterCommit.
	afterCommit func(context.Context, []eventstore.RecordedEvent)
	// lag and applied are Options.Meter's instruments, recorded with
	// metricAttrs; nil without a Meter.
	lag         metric.Float64Histogram
	applied     metric.Int64Counter
	fills       metric.Int64Counter
	fillReads   metric.Int64Counter
	runSize     metric.Int64Histogram
	metricAttrs metric.MeasurementOption

	// committed holds, per partition, the greatest position this Runner
	// itself committed: a lower bound of the partition's checkpoint, so a
	// delivery whose PrevPosition it covers needs no checkpoint read.
	mu        sync.Mutex
	committed map[int]eventstore.Position
}

// NewRunner returns a runner that applies events to projectors, in the order
// given, all in the same transaction per batch (so a projector may read
// tables an earlier one wrote for the same event). pool must work as the
// projector role, pos_app (pgstore.Connect); store is where gaps are filled
// from, and should upcast (eventstore.Upcasting) like the events delivered.
func NewRunner(pool *pgxpool.Pool, store eventstore.Store, opts Options, projectors ...Projector) (*Runner, error) {
	if len(projectors) == 0 {
		return nil, errors.New("projections: a runner needs at least one projector")
	}
	index := make(map[string]int, len(projectors))
	names := make([]string, len(projectors))
	scopes := make([][]string, len(projectors))
	for i, p := range projectors {
		name := p.Name()
		if _, dup := index[name]; name == "" || dup {
			return nil, fmt.Errorf("projections: projector name %q is empty or used twice", name)
		}
		index[name], names[i] = i, name
		if s, ok := p.(CategoryScoped); ok {
			scopes[i] = slices.Clone(s.Categories())
		}
	}
	r := &Runner{pool: pool, store: store, projectors: slices.Clone(projectors), scopes: scopes, names: names, index: index,
		partitions: opts.Partitions, batch: opts.BatchSize, maxHandled: opts.MaxHandledPerRun, afterCommit: opts.AfterCommit, committed: map[int]eventstore.Position{}}
	for _, p := range projectors {
		if _, ok := p.(ActsOutside); ok {
			r.tellsOutside = true
		}
	}
	if r.partitions <= 0 {
		r.partitions = DefaultPartitions
	}
	r.lockClass = streamLockClass
	if opts.Shadow {
		r.lockClass = shadowLockClass
	}
	if r.batch <= 0 {
		r.batch = DefaultBatchSize
	}
	if m := opts.Meter; m != nil {
		r.metricAttrs = metric.WithAttributeSet(attribute.NewSet(attribute.String("projectors", strings.Join(names, "+"))))
		var err error
		r.lag, err = m.Float64Histogram("pos.projection.lag", metric.WithUnit("s"),
			metric.WithDescription("time from an event's recording in the store to the commit that applied it to the read models"),
			metric.WithExplicitBucketBoundaries(lagBuckets...))
		if err != nil {
			return nil, fmt.Errorf("projections: lag histogram: %w", err)
		}
		r.applied, err = m.Int64Counter("pos.projection.events",
			metric.WithDescription("delivered events applied to the read models (redeliveries not counted)"))
		if err != nil {
			return nil, fmt.Errorf("projections: events counter: %w", err)
		}
		r.fills, err = m.Int64Counter("pos.projection.gap_fills",
			metric.WithDescription("gaps in a partition's deliveries filled from the event store"))
		if err != nil {
			return nil, fmt.Errorf("projections: gap fills counter: %w", err)
		}
		r.fillReads, err = m.Int64Counter("pos.projection.gap_fill_reads",
			metric.WithDescription("events read from the event store to fill gaps (every partition's, before filtering)"))
		if err != nil {
			return nil, fmt.Errorf("projections: gap fill reads counter: %w", err)
		}
		r.runSize, err = m.Int64Histogram("pos.projection.run_events",
			metric.WithDescription("events a runner transaction applied (deliveries, gap fills, catch-ups)"),
			metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
		if err != nil {
			return nil, fmt.Errorf("projections: run size histogram: %w", err)
		}
	}
	return r, nil
}

// Partition returns the partition of merchant among n: FNV-1a (32 bits) of
// the merchant id's canonical text form (lower-case, hyphenated UUID), modulo
// n. It is stable across processes and releases; n ≤ 0 is treated as 1.
func Partition(merchant string, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(merchant))
	return int(h.Sum32() % uint32(n))
}

// Partitions returns the number of merchant partitions of r's checkpoints.
func (r *Runner) Partitions() int { return r.partitions }

// Checkpoints returns a reader of r's checkpoints.
func (r *Runner) Checkpoints() *Checkpoints { return NewCheckpoints(r.pool, r.partitions) }

// Handle applies events, in the order given, to every projector; see
// HandleDeliveries. Without PrevPosition only per-stream gaps are detected
// and filled.
//
// Events of different partitions are independent (each partition has its
// own checkpoint), so Handle groups the events by partition, keeping their
// order within each, and applies the groups concurrently (at most
// handleParallel at a time, each in as few transactions as the batch size
// allows): a feed page that interleaves many merchants costs one
// transaction per partition, not one per merchant switch, and keeps both
// this process and PostgreSQL busy. On error, other partitions' groups may
// be committed; handling the same events again is safe.
func (r *Runner) Handle(ctx context.Context, events []eventstore.RecordedEvent) error {
	groups := map[int][]Delivery{}
	var order []int
	for _, e := range events {
		p := -1 // no valid merchant: HandleDeliveries refuses it
		if m, err := merchantOf(e); err == nil {
			p = Partition(m, r.partitions)
		}
		if _, ok := groups[p]; !ok {
			order = append(order, p)
		}
		groups[p] = append(groups[p], Delivery{Event: e})
	}
	if bad, ok := groups[-1]; ok {
		return r.HandleDeliveries(ctx, bad) // before applying any of the page
	}
	if len(order) == 1 {
		return r.HandleDeliveries(ctx, groups[order[0]])
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(handleParallel)
	for _, p := range order {
		g.Go(func() error { return r.HandleDeliveries(gctx, groups[p]) })
	}
	return g.Wait()
}

// handleParallel bounds the partitions Handle applies at once: enough to
// overlap this process's decoding with PostgreSQL's writing, few enough to
// leave the pool's other users connections.
const handleParallel = 3

// HandleDeliveries applies deliveries, in the order given, to every
// projector. Consecutive events of one partition are applied in one
// transaction (up to the batch size), with each event's merchant set as
// pos.merchant_id transaction-locally while it is applied; each
// transaction also records the streams' applied versions and the
// partition's checkpoint. When it returns nil,
// every delivery's effect is committed: acknowledge them then, not before.
// On error, a prefix of the deliveries may be committed; redelivering all of
// them is safe.
//
// A delivery whose PrevPosition lies beyond the smallest checkpoint of its
// partition (among the projectors) reveals a lost message: the Runner first
// applies the partition's events from the store's feed up to PrevPosition
// (reading the whole feed from that checkpoint, every merchant's, so a
// projection with no checkpoint yet back-fills its partition's history), or
// answers ErrPositionGap when the feed does not reach it yet.
func (r *Runner) HandleDeliveries(ctx context.Context, deliveries []Delivery) error {
	deliveries = r.dropCommitted(deliveries)
	for len(deliveries) > 0 {
		first := deliveries[0].Event
		merchant, err := merchantOf(first)
		if err != nil {
			return err
		}
		partition := Partition(merchant, r.partitions)
		merchants := []string{merchant}
		n := 1
		// With MaxHandledPerRun: the events of the run counted against it
		// (see ActsOutside), whether any event of the run is handled, and
		// the merchant of the run's event acted on outside (with a
		// projector that tells).
		counted, anyHandled, outsideOf := 0, false, ""
		if handled, outside := r.handling(first); r.maxHandled > 0 && handled {
			anyHandled = true
			if outside {
				counted = 1
				if r.tellsOutside {
					outsideOf = merchant
				}
			}
		}
		for n < len(deliveries) && n < r.batch {
			d := deliveries[n]
			m, err := merchantOf(d.Event)
			if err != nil {
				return err
			}
			// A PrevPosition that is not the event just before starts a new
			// run, so that it is checked against committed checkpoints.
			if Partition(m, r.partitions) != partition || (d.PrevPosition != nil && *d.PrevPosition != deliveries[n-1].Event.Position) {
				break
			}
			if handled, outside := r.handling(d.Event); r.maxHandled > 0 && handled {
				if outside {
					if counted++; counted > r.maxHandled || r.tellsOutside && anyHandled {
						break
					}
					if r.tellsOutside {
						outsideOf = m
					}
				} else if outsideOf != "" && m != outsideOf {
					// Its merchant's segment could be applied before the
					// outside event's (segmentsOf gathers each merchant's
					// events), writing before the outside effects run.
					break
				}
				anyHandled = true
			}
			merchants = append(merchants, m)
			n++
		}
		if prev := deliveries[0].PrevPosition; prev != nil && r.committedBefore(partition, *prev) {
			if err := r.fillPartition(ctx, partition, *prev); err != nil {
				return err
			}
		}
		events := make([]eventstore.RecordedEvent, n)
		for i := range n {
			events[i] = deliveries[i].Event
		}
		fresh, advanced, err := r.advanceOnly(ctx, partition, events)
		if err != nil {
			return err
		}
		if !advanced {
			if fresh, err = r.applyRun(ctx, partition, merchants, events); err != nil {
				return err
			}
		}
		r.noteCommitted(partition, events)
		if r.runSize != nil {
			r.runSize.Record(ctx, int64(n), r.metricAttrs)
		}
		r.record(ctx, events, fresh)
		if r.afterCommit != nil {
			// Not cancelled with the delivery: its redelivery, dropped as
			// a copy, would never call it again, and a cache entry the
			// commit made stale would outlive it.
			r.afterCommit(context.WithoutCancel(ctx), events)
		}
		deliveries = deliveries[n:]
	}
	return nil
}

// handling reports whether some projector in scope handles e, and
// whether one of them does so with effects outside the transaction: one
// that says so (ActsOutside), or one that does not tell (every handled
// event counts, as MaxHandledPerRun says).
func (r *Runner) handling(e eventstore.RecordedEvent) (handled, outside bool) {
	category, _, _, _ := eventstore.ParseStreamName(e.Stream)
	for i, p := range r.projectors {
		if !r.inScope(i, category) || !p.Handles(e.Type) {
			continue
		}
		handled = true
		if a, ok := p.(ActsOutside); !ok || a.ActsOutside(e.Type) {
			return true, true
		}
	}
	return handled, false
}

// Handles reports whether some projector of r acts on e: applying an event
// none handles only moves r's bookkeeping past it.
func (r *Runner) Handles(e eventstore.RecordedEvent) bool {
	handled, _ := r.handling(e)
	return handled
}

// PartitionOf returns the partition of e's merchant, or ErrBadEvent when e
// names no valid merchant.
func (r *Runner) PartitionOf(e eventstore.RecordedEvent) (int, error) {
	m, err := merchantOf(e)
	if err != nil {
		return 0, err
	}
	return Partition(m, r.partitions), nil
}

// Stored reports whether e is an event of the Runner's store (the same id at
// its stream and version), not a message from elsewhere that only looks
// like one.
func (r *Runner) Stored(ctx context.Context, e eventstore.RecordedEvent) (bool, error) {
	got, err := r.store.ReadStream(ctx, e.Stream, e.Version, 1)
	if err != nil {
		return false, fmt.Errorf("projections: look up event %s: %w", e.ID, err)
	}
	return len(got) == 1 && got[0].ID == e.ID && got[0].Version == e.Version, nil
}

// Checkpoint returns how far every projector of the Runner has applied
// partition: the smallest of their checkpoints (Start when one has none).
func (r *Runner) Checkpoint(ctx context.Context, partition int) (eventstore.Position, error) {
	return r.minCheckpoint(ctx, partition)
}

// FillPartition applies, from the store's feed, the events of partition
// after its checkpoints up to upTo: for a partition whose last messages the
// broker lost, which no later message will reveal (see consume's tail
// check). It is safe beside deliveries of the same partition, in this
// process or another: effects stay exactly once.
func (r *Runner) FillPartition(ctx context.Context, partition int, upTo eventstore.Position) error {
	return r.fillPartition(ctx, partition, upTo)
}

// Committed returns the greatest position this Runner itself committed in
// partition: every event of the partition up to it has been applied. It
// reports false before the Runner committed anything there.
func (r *Runner) Committed(partition int) (eventstore.Position, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.committed[partition]
	return p, ok
}

// dropCommitted leaves out the deliveries at or below what this Runner
// itself committed in their partition: a run is committed only once every
// event of its partition before it was applied (PrevPosition checked, or the
// feed read in order), so such a delivery is a copy and needs no statement.
// Only deliveries with a PrevPosition (the relay's) are left out, so that a
// caller feeding Handle events out of feed order still gets each looked at.
func (r *Runner) dropCommitted(deliveries []Delivery) []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var kept []Delivery
	dropped := false
	for i, d := range deliveries {
		drop := false
		if d.PrevPosition != nil {
			if m, err := merchantOf(d.Event); err == nil {
				c, ok := r.committed[Partition(m, r.partitions)]
				drop = ok && !c.Less(d.Event.Position)
			}
		}
		switch {
		case drop && !dropped:
			kept, dropped = slices.Clone(deliveries[:i]), true
		case !drop && dropped:
			kept = append(kept, d)
		}
	}
	if !dropped {
		return deliveries
	}
	return kept
}

// committedBefore reports whether this Runner has not itself committed the
// partition up to prev (then the checkpoints must be read: another worker
// may have, or a message was lost).
func (r *Runner) committedBefore(partition int, prev eventstore.Position) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.committed[partition].Less(prev)
}

// noteCommitted records the greatest position of a committed run.
func (r *Runner) noteCommitted(partition int, events []eventstore.RecordedEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		if r.committed[partition].Less(e.Position) {
			r.committed[partition] = e.Position
		}
	}
}

// advanceOnly is the fast path of a run of one event that no projector
// handles (for a runner with MaxHandledPerRun, such events mostly ride
// along with a handled one instead): when every in-scope
// projector's stream row is at the version just before the event (no gap,
// not a redelivery), one statement moves them and the partition's
// checkpoint, all or nothing, without a transaction of its own. Otherwise
// it reports advanced false and the caller takes the general path.
func (r *Runner) advanceOnly(ctx context.Context, partition int, events []eventstore.RecordedEvent) (fresh []bool, advanced bool, err error) {
	if len(events) != 1 {
		return nil, false, nil
	}
	e := events[0]
	if handled, _ := r.handling(e); handled {
		return nil, false, nil
	}
	category, _, _, _ := eventstore.ParseStreamName(e.Stream)
	var names []string
	for i := range r.projectors {
		if r.inScope(i, category) {
			names = append(names, r.names[i])
		}
	}
	if len(names) == 0 || e.Version < 2 {
		return nil, false, nil // a new stream's row does not exist yet
	}
	var ok bool
	err = r.pool.QueryRow(ctx, `
        WITH ready AS (
            SELECT count(*) = cardinality($1::text[]) AS ok FROM projection_streams
            WHERE projection = ANY($1::text[]) AND stream_name = $2 AND version = $3 - 1
        ), moved AS (
            UPDATE projection_streams SET version = $3
            WHERE projection = ANY($1::text[]) AND stream_name = $2 AND version = $3 - 1 AND (SELECT ok FROM ready)
        ), checkpoint AS (
            INSERT INTO projection_checkpoints AS c (projection, partition, major, minor, updated_at)
            SELECT name, $4, $5, $6, now() FROM unnest($7::text[]) AS name WHERE (SELECT ok FROM ready)
            ON CONFLICT (projection, partition) DO UPDATE SET major = excluded.major, minor = excluded.minor, updated_at = now()
            WHERE (c.major, c.minor) < (excluded.major, excluded.minor)
        )
        SELECT ok FROM ready`, names, e.Stream, int64(e.Version), partition, int64(e.Position.Major), int64(e.Position.Minor), r.names).Scan(&ok)
	if err != nil {
		return nil, false, fmt.Errorf("projections: advance past %s %s@%d: %w", e.Type, e.Stream, e.Version, err)
	}
	return []bool{ok}, ok, nil
}

// merchantOf returns the merchant of e's stream in canonical form (the
// form Partition hashes), checked against its metadata.
func merchantOf(e eventstore.RecordedEvent) (string, error) {
	_, m, _, ok := eventstore.ParseStreamName(e.Stream)
	if !ok {
		return "", fmt.Errorf("%w: stream %q", ErrBadEvent, e.Stream)
	}
	merchant, err := uuid.Parse(m)
	if err != nil {
		return "", fmt.Errorf("%w: stream %q", ErrBadEvent, e.Stream)
	}
	if md, err := uuid.Parse(e.Metadata.MerchantID); e.Metadata.MerchantID != "" && (err != nil || md != merchant) {
		return "", fmt.Errorf("%w: event %s of stream %q says merchant %q", ErrBadEvent, e.ID, e.Stream, e.Metadata.MerchantID)
	}
	return merchant.String(), nil
}

// fillFirstPage is the first page a gap fill reads (see fillPartition).
const fillFirstPage = 64

// fillPartition applies, from the store's feed, the events of partition
// after the partition's smallest checkpoint up to prev.
func (r *Runner) fillPartition(ctx context.Context, partition int, prev eventstore.Position) error {
	from, err := r.minCheckpoint(ctx, partition)
	if err != nil || !from.Less(prev) {
		return err
	}
	// A lost message is rare: wait for the feed to pass every commit up to
	// now, so that the fill reaches prev rather than bounce off the horizon.
	if err := r.store.Settle(ctx); err != nil {
		return fmt.Errorf("projections: fill partition %d: %w", partition, err)
	}
	if r.fills != nil {
		r.fills.Add(ctx, 1, r.metricAttrs)
	}
	// The feed has no upper bound to read to, and a gap is most often a
	// message or two still in flight: pages start small and double, so a
	// short gap costs a short read, not MaxReadLimit events of every
	// partition decoded and thrown away.
	feed, current := rawFeed(r.store)
	for page := fillFirstPage; from.Less(prev); page = min(2*page, eventstore.MaxReadLimit) {
		events, err := feed.ReadAll(ctx, from, eventstore.Filter{}, page)
		if err != nil {
			return fmt.Errorf("projections: fill partition %d after %s: %w", partition, from, err)
		}
		if r.fillReads != nil {
			r.fillReads.Add(ctx, int64(len(events)), r.metricAttrs)
		}
		if len(events) == 0 {
			return fmt.Errorf("%w: partition %d is at %s, the delivery follows %s", ErrPositionGap, partition, from, prev)
		}
		var mine []eventstore.RecordedEvent
		for _, e := range events {
			if prev.Less(e.Position) {
				break
			}
			m, err := merchantOf(e)
			if err != nil {
				// Not this partition's to judge: an event with no valid
				// merchant is refused when it is delivered itself, and must
				// not turn every later fill into a failure.
				continue
			}
			if Partition(m, r.partitions) != partition {
				continue
			}
			if e, err = current(e); err != nil {
				return fmt.Errorf("projections: fill partition %d: %w", partition, err)
			}
			mine = append(mine, e)
		}
		if err := r.Handle(ctx, mine); err != nil {
			return err
		}
		from = events[len(events)-1].Position
	}
	return nil
}

// rawFeed returns the store a gap fill reads every partition's events from,
// and what makes one of them current: through eventstore.Upcasting, the
// store it wraps and its upcaster, so that only the partition's own events
// are upcast. Another partition's event this build cannot read (a newer
// schema version, written by a newer build in a rolling deploy) is that
// partition's to hold; read upcast, it would fail every page it is on, and
// every other partition whose fill spans it would stall behind it.
func rawFeed(s eventstore.Store) (eventstore.Store, func(eventstore.RecordedEvent) (eventstore.RecordedEvent, error)) {
	if u, ok := s.(eventstore.Upcasting); ok {
		return u.Store, u.Registry.Upcast
	}
	return s, func(e eventstore.RecordedEvent) (eventstore.RecordedEvent, error) { return e, nil }
}

func (r *Runner) minCheckpoint(ctx context.Context, partition int) (eventstore.Position, error) {
	// One query for every projector: a projector without a checkpoint row
	// is at Start, and so is the minimum.
	var rows int
	var low []int64
	err := r.pool.QueryRow(ctx, `
        SELECT count(*), coalesce(min(ARRAY[major, minor]), ARRAY[0, 0]::bigint[])
          FROM projection_checkpoints WHERE projection = ANY($1::text[]) AND partition = $2`,
		r.names, partition).Scan(&rows, &low)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("projections: read checkpoints of partition %d: %w", partition, err)
	}
	if rows < len(r.names) || len(low) != 2 {
		return eventstore.Start, nil
	}
	return eventstore.Position{Major: uint64(low[0]), Minor: uint64(low[1])}, nil
}

// record feeds Options.Meter's instruments with the events just committed
// that were fresh (fresh[i]: applied by at least one projector, not a
// redelivery).
func (r *Runner) record(ctx context.Context, events []eventstore.RecordedEvent, fresh []bool) {
	if r.lag == nil {
		return
	}
	now := time.Now()
	n := 0
	for i, e := range events {
		if fresh[i] {
			r.lag.Record(ctx, max(0, now.Sub(e.RecordedAt).Seconds()), r.metricAttrs)
			n++
		}
	}
	if n > 0 {
		r.applied.Add(ctx, int64(n), r.metricAttrs)
	}
}

// applyRun applies events of one partition (merchants[i] is events[i]'s
// merchant) in one transaction, retrying the transaction when it loses a
// deadlock or serialization race. Once committed, fresh[i] reports whether
// events[i] was applied by at least one projector (false for a
// redelivery).
func (r *Runner) applyRun(ctx context.Context, partition int, merchants []string, events []eventstore.RecordedEvent) (fresh []bool, err error) {
	fresh = make([]bool, len(events))
	for attempt := range maxTxAttempts {
		clear(fresh)
		err = r.inTx(ctx, func(tx *pgtx.Lazy) error {
			return r.applyInTx(ctx, tx, partition, merchants, events, fresh)
		})
		if !pgtx.Retryable(err) {
			return fresh, err
		}
		wait := time.Duration(rand.Int64N(int64(time.Millisecond) << attempt))
		select {
		case <-ctx.Done():
			return fresh, ctx.Err()
		case <-time.After(wait):
		}
	}
	return fresh, err
}

// inTx runs fn in a transaction on a connection of the pool. The BEGIN goes
// out with fn's first statement, and fn ends the transaction with its last
// (pgtx.Lazy.ExecCommit): two round trips fewer than pgx.BeginTxFunc. The
// projectors' writes are held back to travel with their next read or the
// COMMIT (pgtx.Lazy.HoldWrites): none of them looks at a write's result,
// and each round trip costs both processes a wakeup. When fn fails, the
// transaction is rolled back. Read committed: lockStreams reads the
// versions in a statement after the locks, which must see what their last
// holder committed.
func (r *Runner) inTx(ctx context.Context, fn func(tx *pgtx.Lazy) error) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("projections: acquire a connection: %w", err)
	}
	defer conn.Release()
	tx := pgtx.BeginTx(conn.Conn(), pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	tx.HoldWrites()
	if err := fn(tx); err != nil {
		_ = tx.Abort(ctx)
		return err
	}
	return nil
}

// streamKey names one projector's bookkeeping row of one stream.
type streamKey struct {
	projector int
	stream    string
}

// run is the state of one transaction: the stream versions locked and read
// so far, and events read from the store to fill gaps.
type run struct {
	tx      pgx.Tx
	applied map[streamKey]uint64
	dirty   map[streamKey]bool
	filled  map[string][]eventstore.RecordedEvent
}

// decodeMemo holds what this package's projectors decoded of the events of
// one Runner transaction, by event id, so that an event several of them read
// is decoded once (decoding is most of their CPU time). The Runner puts a
// fresh one in the context of each transaction; it is used by one goroutine
// at a time, and holds immutable values only.
type decodeMemo map[uuid.UUID]any

type decodeMemoKey struct{}

func (r *Runner) applyInTx(ctx context.Context, tx *pgtx.Lazy, partition int, merchants []string, events []eventstore.RecordedEvent, fresh []bool) error {
	ctx = context.WithValue(ctx, decodeMemoKey{}, decodeMemo{})
	st := &run{tx: tx, applied: map[streamKey]uint64{}, dirty: map[streamKey]bool{}, filled: map[string][]eventstore.RecordedEvent{}}
	if len(events) == 0 {
		return nil
	}
	segs, segOf := segmentsOf(events, merchants)
	pre := make([][]any, len(r.projectors)) // per projector and segment: a preloader's read
	current, err := r.lockStreams(ctx, st, events, segs[0], func(b *pgx.Batch) string {
		return r.preload(ctx, b, events, segs, segOf, pre)
	})
	if err != nil {
		return err
	}
	// First decide, per projector, what to apply: gaps filled from the store,
	// redeliveries dropped. Each item remembers its segment (see segmentsOf).
	todo := make([][]segEvent, len(r.projectors))
	var last eventstore.Position
	for j, e := range events {
		category, _, _, _ := eventstore.ParseStreamName(e.Stream)
		for i, p := range r.projectors {
			if !r.inScope(i, category) {
				continue
			}
			k := streamKey{i, e.Stream}
			applied, ok := st.applied[k]
			if !ok {
				return fmt.Errorf("projections: %s version of %q read before its row was locked", p.Name(), e.Stream)
			}
			if e.Version <= applied {
				continue // a redelivery
			}
			var pending []eventstore.RecordedEvent
			if e.Version > applied+1 {
				missing, err := r.readGap(ctx, st, e.Stream, applied+1, e.Version-1)
				if err != nil {
					return err
				}
				pending = append(pending, missing...)
			}
			pending = append(pending, e)
			for _, m := range pending {
				if p.Handles(m.Type) {
					todo[i] = append(todo[i], segEvent{segOf[j], m})
				}
			}
			st.applied[k], st.dirty[k] = e.Version, true
			fresh[j] = true
		}
		if last.Less(e.Position) {
			last = e.Position
		}
	}
	// Then apply, segment by segment, every projector in the given order.
	// Segments interleave in the feed; each projector's items are gathered
	// by segment, keeping their order within it.
	for i := range todo {
		slices.SortStableFunc(todo[i], func(a, b segEvent) int { return a.seg - b.seg })
	}
	next := make([]int, len(r.projectors)) // per projector, its first item not yet applied
	batches := make([][]eventstore.RecordedEvent, len(r.projectors))
	for s, merchant := range segs {
		work := false
		for i := range r.projectors {
			batches[i] = nil // not reused: a projector may keep what it was given
			for rest := todo[i][next[i]:]; len(rest) > 0 && rest[0].seg == s; rest = rest[1:] {
				batches[i] = append(batches[i], rest[0].event)
			}
			next[i] += len(batches[i])
			work = work || len(batches[i]) > 0
		}
		if !work {
			continue // a segment of events no projector handles: no round trip
		}
		if merchant != current {
			// Row-level security sees one merchant at a time.
			if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant); err != nil {
				return fmt.Errorf("projections: set merchant: %w", err)
			}
			current = merchant
		}
		for i, p := range r.projectors {
			pctx := ctx
			if pre[i] != nil {
				pctx = withPreload(ctx, pre[i][s])
			}
			if err := r.apply(pctx, tx, p, batches[i]); err != nil {
				return err
			}
		}
	}
	names, streams, versions := make([]string, 0, len(st.dirty)), make([]string, 0, len(st.dirty)), make([]int64, 0, len(st.dirty))
	for k := range st.dirty {
		names = append(names, r.projectors[k.projector].Name())
		streams = append(streams, k.stream)
		versions = append(versions, int64(st.applied[k]))
	}
	// The streams' versions and the checkpoint in one statement, and the
	// COMMIT, in one round trip; a data-modifying WITH runs whether or not
	// it is read.
	if _, err := tx.ExecCommit(ctx, `
        WITH streams AS (
            INSERT INTO projection_streams AS s (projection, stream_name, version)
            SELECT * FROM unnest($5::text[], $6::text[], $7::bigint[])
            ON CONFLICT (projection, stream_name) DO UPDATE SET version = greatest(s.version, excluded.version)
        )
        INSERT INTO projection_checkpoints AS c (projection, partition, major, minor, updated_at)
        SELECT name, $2, $3, $4, now() FROM unnest($1::text[]) AS name
        ON CONFLICT (projection, partition) DO UPDATE SET major = excluded.major, minor = excluded.minor, updated_at = now()
        WHERE (c.major, c.minor) < (excluded.major, excluded.minor)`,
		r.names, partition, int64(last.Major), int64(last.Minor), names, streams, versions); err != nil {
		return fmt.Errorf("projections: record stream versions and checkpoint partition %d: %w", partition, err)
	}
	return nil
}

// segEvent is an event to apply and the segment it belongs to.
type segEvent struct {
	seg   int
	event eventstore.RecordedEvent
}

// segmentsOf splits a run's events into segments applied one after another:
// a segment holds one merchant's events, in feed order, and ends where that
// merchant's next settings event starts a new one (so a projector reading
// the settings reads those of its events' time). It returns each segment's
// merchant and each event's segment. Merchants' events are independent of
// one another, so gathering each merchant's scattered events into one
// segment changes no result but saves statements.
func segmentsOf(events []eventstore.RecordedEvent, merchants []string) (segs []string, segOf []int) {
	segOf = make([]int, len(events))
	open := map[string]int{} // merchant -> its current segment
	for j, e := range events {
		s, ok := open[merchants[j]]
		if category, _, _, _ := eventstore.ParseStreamName(e.Stream); !ok || category == SettingsCategory {
			s = len(segs)
			segs = append(segs, merchants[j])
			open[merchants[j]] = s
		}
		segOf[j] = s
	}
	return segs, segOf
}

// apply gives p a segment's events: in one call when p is a BatchProjector,
// one by one otherwise.
func (r *Runner) apply(ctx context.Context, tx pgx.Tx, p Projector, events []eventstore.RecordedEvent) error {
	if len(events) == 0 {
		return nil
	}
	if b, ok := p.(BatchProjector); ok {
		if err := b.ApplyBatch(ctx, tx, events); err != nil {
			first := events[0]
			return fmt.Errorf("projections: %s: apply %d events from %s %s@%d: %w", p.Name(), len(events), first.Type, first.Stream, first.Version, err)
		}
		return nil
	}
	for _, e := range events {
		if err := p.Apply(ctx, tx, e); err != nil {
			return fmt.Errorf("projections: %s: apply %s %s@%d: %w", p.Name(), e.Type, e.Stream, e.Version, err)
		}
	}
	return nil
}

func (r *Runner) inScope(i int, category string) bool {
	return r.scopes[i] == nil || slices.Contains(r.scopes[i], category)
}

// lockStreams locks, for the rest of the transaction, every stream of events
// for every projector that reads its category, then reads their applied
// versions (0 for a stream never seen): a concurrent delivery of one of the
// streams waits for this transaction, so each event is applied once. more
// queues further reads in the same round trip (the preloads), after
// merchant is set, and returns the merchant they leave set; lockStreams
// returns it ("" when nothing was sent).
//
// The locks are transaction-scoped advisory locks (the two-key form, whose
// first key is streamLockClass, apart from every one-key lock the store
// takes), not row locks: locking a row would give the transaction an id at
// once, and an open transaction id holds back the store's feed horizon
// (pgstore.ReadAll) for as long as the transaction runs, which for the
// process managers includes their commands. The rows are written once, at
// the end. Locks are taken in key order, so two transactions never wait on
// each other crosswise (a deadlock is retried all the same).
func (r *Runner) lockStreams(ctx context.Context, st *run, events []eventstore.RecordedEvent, merchant string, more func(*pgx.Batch) string) (current string, err error) {
	var names, streams []string
	seen := map[string]bool{}
	for _, e := range events {
		if seen[e.Stream] {
			continue
		}
		seen[e.Stream] = true
		category, _, _, _ := eventstore.ParseStreamName(e.Stream)
		for i := range r.projectors {
			if r.inScope(i, category) {
				names, streams = append(names, r.names[i]), append(streams, e.Stream)
				st.applied[streamKey{i, e.Stream}] = 0
			}
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	// One round trip: the statements of a batch still run one after the
	// other, each read committed statement with a snapshot taken when it
	// starts, so the versions and the preloads are read after the locks
	// are held.
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('pos.merchant_id', $1, true)`, merchant)
	b.Queue(`
        SELECT count(pg_advisory_xact_lock($3, k)) FROM (
            SELECT DISTINCT hashtext(name || '/' || stream) AS k FROM unnest($1::text[], $2::text[]) AS v(name, stream) ORDER BY 1
        ) AS keys`, names, streams, r.lockClass)
	b.Queue(appliedVersionsSQL, names, streams).Query(func(rows pgx.Rows) error {
		var name, stream string
		var v int64
		_, err := pgx.ForEachRow(rows, []any{&name, &stream, &v}, func() error {
			st.applied[streamKey{r.index[name], stream}] = uint64(v)
			return nil
		})
		return err
	})
	current = more(b)
	if err := st.tx.SendBatch(ctx, b).Close(); err != nil {
		return "", fmt.Errorf("projections: lock streams, read their versions and the projectors' first reads: %w", err)
	}
	return current, nil
}

// preload queues on b, after the locks and versions, the reads of the
// projectors that are preloaders (see preloader) for each segment of the run
// (segs, segOf: see segmentsOf) that holds no settings event, and records
// them in pre[projector][segment]. Such a segment is its merchant's first
// (any later one starts with a settings event), so nothing the transaction
// writes before it is applied touches its merchant's rows. b sets the first
// segment's merchant first; preload returns the merchant b leaves set.
func (r *Runner) preload(ctx context.Context, b *pgx.Batch, events []eventstore.RecordedEvent, segs []string, segOf []int, pre [][]any) string {
	skip := make([]bool, len(segs))
	for j, e := range events {
		if category, _, _, _ := eventstore.ParseStreamName(e.Stream); category == SettingsCategory {
			skip[segOf[j]] = true
		}
	}
	n := len(r.projectors)
	want := make([][]eventstore.RecordedEvent, len(segs)*n) // [segment*n + projector]
	for j, e := range events {
		if skip[segOf[j]] {
			continue
		}
		category, _, _, _ := eventstore.ParseStreamName(e.Stream)
		for i, p := range r.projectors {
			if _, ok := p.(preloader); ok && r.inScope(i, category) && p.Handles(e.Type) {
				want[segOf[j]*n+i] = append(want[segOf[j]*n+i], e)
			}
		}
	}
	current := segs[0]
	for s, m := range segs {
		for i, p := range r.projectors {
			if len(want[s*n+i]) == 0 {
				continue
			}
			reads := &pgx.Batch{}
			v := p.(preloader).preload(ctx, reads, uuid.MustParse(m), want[s*n+i])
			if v == nil {
				continue
			}
			if m != current {
				b.Queue(`SELECT set_config('pos.merchant_id', $1, true)`, m)
				current = m
			}
			b.QueuedQueries = append(b.QueuedQueries, reads.QueuedQueries...)
			if pre[i] == nil {
				pre[i] = make([]any, len(segs))
			}
			pre[i][s] = v
		}
	}
	return current
}

// appliedVersionsSQL reads the applied version of each (projection, stream)
// pair of its two arrays, one primary-key lookup per pair. The LIMIT keeps
// the LATERAL subquery from being flattened into a join: a cached generic
// plan assumes ten pairs, and while projection_streams has a few thousand
// rows (a new deployment's first minutes, every benchmark) it prefers a
// hash join over a sequential scan of the whole table, and each connection
// keeps that plan while the table stays small; under load the scan took two
// thirds of the statements' execution time (pg_stat_statements).
const appliedVersionsSQL = `
        SELECT v.name, v.stream, s.version FROM unnest($1::text[], $2::text[]) AS v(name, stream)
        CROSS JOIN LATERAL (
            SELECT version FROM projection_streams WHERE projection = v.name AND stream_name = v.stream LIMIT 1
        ) AS s`

// streamLockClass is the first key of the projections' stream locks, and
// shadowLockClass of a shadow runner's (Options.Shadow).
const (
	streamLockClass int32 = 0x70726f6a // "proj"
	shadowLockClass int32 = 0x70726f73 // "pros"
)

// readGap returns the events of stream with versions from..to, from the
// store (once per transaction and stream).
func (r *Runner) readGap(ctx context.Context, st *run, stream string, from, to uint64) ([]eventstore.RecordedEvent, error) {
	cached := st.filled[stream]
	if len(cached) > 0 && cached[0].Version <= from && cached[len(cached)-1].Version >= to {
		lo := from - cached[0].Version
		return cached[lo : lo+(to-from+1)], nil
	}
	out := make([]eventstore.RecordedEvent, 0, to-from+1)
read:
	for next := from; next <= to; {
		want := int(min(to-next+1, eventstore.MaxReadLimit))
		batch, err := r.store.ReadStream(ctx, stream, next, want)
		if err != nil {
			return nil, fmt.Errorf("projections: fill %q from version %d: %w", stream, next, err)
		}
		for _, e := range batch {
			if e.Version != next || next > to {
				break read // the store itself has a gap
			}
			out = append(out, e)
			next++
		}
		if len(batch) < want {
			break
		}
	}
	if uint64(len(out)) != to-from+1 {
		return nil, fmt.Errorf("%w: %q versions %d..%d, the store has %d of them", ErrStreamGap, stream, from, to, len(out))
	}
	st.filled[stream] = out
	return out, nil
}

// catchupPage is how many events Catchup reads at a time: a page spread over
// the partitions still gives each a batch of a few hundred events.
const catchupPage = 5000

// Catchup settles the store, then applies its whole feed after from up to
// its head, and returns the position of the last event applied (from when
// there was none). It is for rebuilds, back-fills and tests; a live
// deployment consumes the relay's messages, or Follow.
//
// It reads every merchant's events on purpose: a checkpoint covers a whole
// partition, so applying one merchant's feed alone would move it past other
// merchants' events that were never applied.
func (r *Runner) Catchup(ctx context.Context, from eventstore.Position) (eventstore.Position, error) {
	return r.CatchupWith(ctx, from, CatchupOptions{})
}

// CatchupOptions tune CatchupWith.
type CatchupOptions struct {
	// NoSettle reads the feed up to its horizon without settling the store
	// first. Settling waits for every transaction running at the call, so a
	// caller that holds locks such a transaction may be waiting for must not
	// settle (a rebuild's swap). Every event a follower of the feed
	// (the relay) has already read is before the horizon all the same.
	NoSettle bool
	// Progress, when set, is called after each page applied, with the
	// number of events in it.
	Progress func(events int)
}

// CatchupWith is Catchup with options.
func (r *Runner) CatchupWith(ctx context.Context, from eventstore.Position, opts CatchupOptions) (eventstore.Position, error) {
	if !opts.NoSettle {
		if err := r.store.Settle(ctx); err != nil {
			return from, err
		}
	}
	// The next page is read while this one is applied.
	type page struct {
		events []eventstore.RecordedEvent
		err    error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan page, 1)
	go func() {
		defer close(pages)
		for pos := from; ; {
			events, err := r.store.ReadAll(ctx, pos, eventstore.Filter{}, catchupPage)
			if err != nil {
				err = fmt.Errorf("projections: catch up after %s: %w", pos, err)
			}
			select {
			case pages <- page{events, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || len(events) == 0 {
				return
			}
			pos = events[len(events)-1].Position
		}
	}()
	pos := from
	for p := range pages {
		if p.err != nil {
			return pos, p.err
		}
		if len(p.events) == 0 {
			break
		}
		if err := r.Handle(ctx, p.events); err != nil {
			return pos, err
		}
		pos = p.events[len(p.events)-1].Position
		if opts.Progress != nil {
			opts.Progress(len(p.events))
		}
	}
	return pos, ctx.Err()
}

// Follow applies the store's feed after from until ctx ends or a batch
// fails (eventstore.Follow). Restarting from an earlier position is safe:
// what was applied is skipped. opts.Filter must be empty, for the reason
// Catchup gives.
func (r *Runner) Follow(ctx context.Context, from eventstore.Position, opts eventstore.FollowOptions) error {
	if opts.Filter != (eventstore.Filter{}) {
		return errors.New("projections: Follow reads the whole feed; a filter would move checkpoints past unapplied events")
	}
	return eventstore.Follow(ctx, r.store, from, opts, r.Handle)
}

// Querier is what Checkpoints needs of a pool or transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Checkpoints reads how far projections have got, for lag metrics and for
// X-Min-Position (SPEC §5). Its database role must be able to read
// projection_checkpoints (pos_app; pos_api cannot).
type Checkpoints struct {
	db         Querier
	partitions int
}

// NewCheckpoints returns a reader of checkpoints kept for partitions merchant
// partitions (the runners' Options.Partitions; 0 means DefaultPartitions).
func NewCheckpoints(db Querier, partitions int) *Checkpoints {
	if partitions <= 0 {
		partitions = DefaultPartitions
	}
	return &Checkpoints{db: db, partitions: partitions}
}

// Position returns the greatest feed position projection has applied in
// partition, or Start when it has applied none.
func (c *Checkpoints) Position(ctx context.Context, projection string, partition int) (eventstore.Position, error) {
	var major, minor int64
	err := c.db.QueryRow(ctx, `SELECT major, minor FROM projection_checkpoints WHERE projection = $1 AND partition = $2`,
		projection, partition).Scan(&major, &minor)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Start, nil
	}
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("projections: read checkpoint %s/%d: %w", projection, partition, err)
	}
	return eventstore.Position{Major: uint64(major), Minor: uint64(minor)}, nil
}

// Positions returns projection's checkpoint in every partition it has one
// (the others are at Start), in one query.
func (c *Checkpoints) Positions(ctx context.Context, projection string) (map[int]eventstore.Position, error) {
	var partitions []int32
	var majors, minors []int64
	err := c.db.QueryRow(ctx, `
        SELECT coalesce(array_agg(partition ORDER BY partition), '{}'), coalesce(array_agg(major ORDER BY partition), '{}'),
               coalesce(array_agg(minor ORDER BY partition), '{}')
          FROM projection_checkpoints WHERE projection = $1`, projection).Scan(&partitions, &majors, &minors)
	if err != nil {
		return nil, fmt.Errorf("projections: read checkpoints of %s: %w", projection, err)
	}
	out := make(map[int]eventstore.Position, len(partitions))
	for i, p := range partitions {
		out[int(p)] = eventstore.Position{Major: uint64(majors[i]), Minor: uint64(minors[i])}
	}
	return out, nil
}

// Reached reports whether projection has applied merchant's partition up to
// pos: a query of that merchant's read model then reflects every event of
// the merchant at or before pos (given that its stream versions are gapless
// and, with PrevPosition, its partition too).
func (c *Checkpoints) Reached(ctx context.Context, projection, merchant string, pos eventstore.Position) (bool, error) {
	m, err := uuid.Parse(merchant)
	if err != nil {
		return false, fmt.Errorf("projections: merchant %q is not a UUID", merchant)
	}
	cur, err := c.Position(ctx, projection, Partition(m.String(), c.partitions))
	if err != nil {
		return false, err
	}
	return !cur.Less(pos), nil
}
