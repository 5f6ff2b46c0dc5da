// Package relay publishes the event store's global feed to NATS JetStream
// through a Watermill publisher: the bus half of SPEC §2 (the store is the
// record, the broker only carries it).
//
// Delivery is at least once. The relay follows the feed from its checkpoint,
// publishes each batch, waits for the broker's acknowledgement of every
// message (Publisher) and only then moves the checkpoint, written at most
// every Options.CheckpointEvery (and when the leadership ends). A crash in
// between republishes what followed the last write: JetStream drops
// copies whose Nats-Msg-Id (the event id) it saw within the stream's
// duplicate window, and every consumer is idempotent beyond it. The broker
// itself may lose acknowledged messages (its fsync is periodic), so each
// message carries PrevPosition, the previous event of its merchant
// partition, for consumers to notice a gap and fill it from the store.
//
// Subjects: one topic per merchant partition, DefaultTopicPrefix plus two
// digits ("pos_events_p07"), partition = projections.Partition(merchant, N).
// Topics contain no '.', so each is a single NATS subject token and a valid
// JetStream stream name. The publisher of NewPublisher creates one stream
// per topic, named like it, as watermill-nats AutoProvision does, with the
// server's defaults (file storage, limits retention, 2-minute duplicate
// window); consumers bind to a partition's stream. Per-partition streams
// are what AutoProvision can make (it names the stream after the topic and
// would fail on a second stream overlapping its subjects), and consumers are
// split by partition anyway; the price is no single ordered stream across
// partitions, which nothing needs (order only matters within a partition).
//
// Only one relay publishes at a time: the leader holds a PostgreSQL session
// advisory lock on a dedicated connection, standbys retry every
// Options.LockRetry, and the checkpoint is written on that same connection,
// so a relay that lost its session (and so its lock) cannot move it. A
// leader whose context ends closes the connection, which hands the lock
// over at once; a leader that dies is noticed when PostgreSQL drops its
// session.
package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"pos/eventstore"
	"pos/internal/telemetry"
	"pos/projections"
)

// Defaults of Options.
const (
	DefaultName        = "default"
	DefaultPartitions  = 16
	DefaultTopicPrefix = "pos_events_p"
	DefaultLockRetry   = 500 * time.Millisecond
	DefaultLockCheck   = time.Second
	DefaultRetryDelay  = time.Second
	// DefaultIdle is how long the relay waits at the head of the feed
	// before reading again: every event another process appends (this
	// process's appends wake it, Options.Wake) waits up to that long before
	// it is published, so it is a floor under projection lag.
	DefaultIdle = 10 * time.Millisecond
	// DefaultMaxIdle is how long that wait grows to while the feed stays
	// quiet (eventstore.FollowOptions.MaxIdle): an idle relay reads the
	// feed 10 times a second rather than 100.
	DefaultMaxIdle = 100 * time.Millisecond
	// DefaultCheckpointEvery is how often, at most, the leader writes its
	// checkpoint (see Options.CheckpointEvery).
	DefaultCheckpointEvery = 100 * time.Millisecond
)

// Options tunes a Relay. The zero value is usable.
type Options struct {
	// Name identifies the relay's checkpoint row and advisory lock: relays
	// with the same name are one leader and its standbys. Default "default".
	Name string
	// Partitions is the number of merchant partitions (topics); it must
	// match the consumers'. Default 16. Changing it makes the recorded
	// partition heads unknown: the next message of each partition carries
	// an empty prev_position.
	Partitions int
	// TopicPrefix is prepended to the two-digit partition number. It must
	// be a valid JetStream stream name prefix (no '.', '*', '>', spaces).
	// Default "pos_events_p".
	TopicPrefix string
	// BatchSize, Idle and MaxIdle tune eventstore.Follow. Idle defaults to
	// DefaultIdle; MaxIdle to DefaultMaxIdle with Wake and to no growth
	// without it.
	BatchSize int
	Idle      time.Duration
	MaxIdle   time.Duration
	// Wake, when set, cuts Follow's idle wait short.
	Wake <-chan struct{}
	// CheckpointEvery bounds how often the leader writes its checkpoint
	// (and partition heads): after a batch it writes at once when the last
	// write is at least that old, and otherwise at most that much later, so
	// that a batch a commit woke it for costs no statement of its own. A
	// crash republishes what followed the last write, which the broker and
	// the consumers absorb; the tail check (consume.Options.Heads) sees a
	// partition's head that much later. Default DefaultCheckpointEvery; a
	// negative value writes after every batch.
	CheckpointEvery time.Duration
	// LockRetry is how often a standby tries the lock. Default 500ms.
	LockRetry time.Duration
	// LockCheck is how often the leader checks its lock connection is
	// alive. Default 1s.
	LockCheck time.Duration
	// RetryDelay is the pause after a failure (broker or database down)
	// before trying again. Default 1s.
	RetryDelay time.Duration
	// Logger receives leadership changes and failures. Default slog.Default.
	Logger *slog.Logger
	// Tracer, when set, gives each published event a producer span, a
	// child of the trace context in the event's metadata (the request that
	// wrote it), ended when the broker answered; the message carries
	// that span's context, so a consumer's span is its child.
	Tracer trace.Tracer
	// Meter, when set, records pos.relay.lag: how long after its append
	// (the recorded_at of its transaction's start) each event's
	// publication was acknowledged by the broker. Beside
	// pos.projection.lag (append to the read models' commit) it tells
	// whether a lag builds before the broker (the command's transaction,
	// the feed's horizon, the relay, JetStream) or after it (delivery,
	// the projections). A batch that fails is recorded once published;
	// one published again after a crash or a hand-over is recorded again.
	Meter metric.Meter
	// SkipEvent is for tests only: an event for which it returns true is
	// not published (the checkpoint and partition heads still move past
	// it), simulating a message the broker lost. Never set it in
	// production.
	SkipEvent func(eventstore.RecordedEvent) bool
}

// Relay publishes the event feed to a Watermill publisher; see the package
// documentation. Run it in one goroutine.
type Relay struct {
	pool    *pgxpool.Pool
	store   eventstore.Store
	pub     message.Publisher
	opts    Options
	lockKey int64
	leading atomic.Bool
	lag     metric.Float64Histogram // nil without Options.Meter
}

// New returns a relay that reads store, publishes to pub and keeps its lock
// and checkpoint in pool's database (table relay_checkpoints; the role
// needs SELECT, INSERT, UPDATE on it). Run holds one of pool's connections
// all along, as leader or standby. pub must publish synchronously,
// returning only after the broker acknowledged, as NewPublisher's does.
func New(pool *pgxpool.Pool, store eventstore.Store, pub message.Publisher, opts Options) (*Relay, error) {
	if pool == nil || store == nil || pub == nil {
		return nil, errors.New("relay: pool, store and publisher are required")
	}
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.Partitions <= 0 {
		opts.Partitions = DefaultPartitions
	}
	if opts.Partitions > 100 {
		return nil, fmt.Errorf("relay: at most 100 partitions, not %d", opts.Partitions)
	}
	if opts.TopicPrefix == "" {
		opts.TopicPrefix = DefaultTopicPrefix
	}
	for _, c := range opts.TopicPrefix {
		if c == '.' || c == '*' || c == '>' || c == ' ' || c == '/' || c == '\\' || c < ' ' {
			return nil, fmt.Errorf("relay: topic prefix %q: no '.', '*', '>', '/', '\\' or whitespace", opts.TopicPrefix)
		}
	}
	if opts.LockRetry <= 0 {
		opts.LockRetry = DefaultLockRetry
	}
	if opts.LockCheck <= 0 {
		opts.LockCheck = DefaultLockCheck
	}
	if opts.Idle <= 0 {
		opts.Idle = DefaultIdle
	}
	if opts.MaxIdle == 0 && opts.Wake != nil {
		// Without Wake every event is found by a read at the head: no
		// growth, so none waits longer than Idle.
		opts.MaxIdle = DefaultMaxIdle
	}
	if opts.CheckpointEvery == 0 {
		opts.CheckpointEvery = DefaultCheckpointEvery
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = DefaultRetryDelay
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte("pos/relay:" + opts.Name))
	r := &Relay{
		pool:    pool,
		store:   store,
		pub:     pub,
		opts:    opts,
		lockKey: int64(h.Sum64()),
	}
	if opts.Meter != nil {
		var err error
		r.lag, err = opts.Meter.Float64Histogram("pos.relay.lag", metric.WithUnit("s"),
			metric.WithDescription("time from an event's recording in the store to the broker's acknowledgement of its publication"),
			metric.WithExplicitBucketBoundaries(projections.LagBuckets()...))
		if err != nil {
			return nil, fmt.Errorf("relay: lag histogram: %w", err)
		}
	}
	return r, nil
}

// Topic returns the topic (and subject, and stream name) of partition p.
func (r *Relay) Topic(p int) string { return Topic(r.opts.TopicPrefix, p) }

// Topic returns prefix plus p in two digits.
func Topic(prefix string, p int) string { return fmt.Sprintf("%s%02d", prefix, p) }

// Partitions returns the number of merchant partitions.
func (r *Relay) Partitions() int { return r.opts.Partitions }

// Leading reports whether r holds the lock and publishes.
func (r *Relay) Leading() bool { return r.leading.Load() }

var errLockLost = errors.New("relay: lock connection lost")

// Run waits for the lock, then publishes the feed from the checkpoint until
// ctx ends, and returns ctx's error. Failures (broker or database down, the
// lock lost) are logged; Run then gives up the lock, waits RetryDelay and
// tries again.
func (r *Relay) Run(ctx context.Context) error {
	log := r.opts.Logger.With("relay", r.opts.Name)
	for {
		err := r.lead(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Error("relay failed; retrying", "err", err, "after", r.opts.RetryDelay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.opts.RetryDelay):
		}
	}
}

// lead acquires the lock on a dedicated connection and publishes until an
// error or ctx's end. The connection is closed, not returned to the pool,
// so the session lock can never outlive the leadership.
func (r *Relay) lead(ctx context.Context) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("relay: acquire lock connection: %w", err)
	}
	defer func() {
		r.leading.Store(false)
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Conn().Close(cctx) // ends the session: releases the lock
		conn.Release()
	}()
	log := r.opts.Logger.With("relay", r.opts.Name)
	standby := false
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", r.lockKey).Scan(&ok); err != nil {
			return fmt.Errorf("relay: try lock: %w", err)
		}
		if ok {
			break
		}
		if !standby {
			standby = true
			log.Info("relay standing by: another relay holds the lock")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.opts.LockRetry):
		}
	}

	// The checkpoint needs no flush to disk before the next batch: one
	// lost in a database crash only republishes what followed the last
	// one that reached the disk, which the broker drops as duplicates
	// (Nats-Msg-Id) and every consumer applies once anyway. The session
	// ends with the leadership, so the setting goes no further.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return fmt.Errorf("relay: set up lock connection: %w", err)
	}
	l := &leader{r: r, conn: conn.Conn()}
	if err := l.load(ctx); err != nil {
		return err
	}
	r.leading.Store(true)
	log.Info("relay leading", "from", l.pos.String())

	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() { l.watch(lctx, cancel) })
	err = eventstore.Follow(lctx, r.store, l.pos, eventstore.FollowOptions{
		BatchSize: r.opts.BatchSize,
		Idle:      r.opts.Idle,
		MaxIdle:   r.opts.MaxIdle,
		Wake:      r.opts.Wake,
	}, l.publish)
	cancel(nil)
	wg.Wait()
	if cause := context.Cause(lctx); errors.Is(cause, errLockLost) {
		return cause
	}
	// What was published since the last write, so that the next leader
	// does not publish it again (best effort: it would be harmless).
	if ferr := l.flush(ctx); ferr != nil {
		log.Warn("relay: last checkpoint not written; the next leader republishes what followed the one before", "err", ferr)
	}
	return err
}

// leader is the state of one leadership: the lock connection, the
// checkpoint and the partition heads.
type leader struct {
	r *Relay
	// mu serialises use of conn (a pgx.Conn is not safe for concurrent use)
	// between the checkpoint writes and the liveness checks, and guards
	// what the checkpoint writes.
	mu    sync.Mutex
	conn  *pgx.Conn
	pos   eventstore.Position
	heads []string // per partition: last published position, "" unknown
	// dirty: pos and heads moved since the last write, at written.
	dirty   bool
	written time.Time
}

// load reads the checkpoint. No row means Start with every partition head at
// Start: nothing was published before.
func (l *leader) load(ctx context.Context) error {
	n := l.r.opts.Partitions
	l.heads = make([]string, n)
	var major, minor int64
	var partitions int
	var raw []byte
	err := l.conn.QueryRow(ctx,
		"SELECT major, minor, partitions, partition_heads FROM relay_checkpoints WHERE name = $1",
		l.r.opts.Name).Scan(&major, &minor, &partitions, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		l.pos = eventstore.Start
		for i := range l.heads {
			l.heads[i] = eventstore.Start.String()
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("relay: read checkpoint: %w", err)
	}
	l.pos = eventstore.Position{Major: uint64(major), Minor: uint64(minor)}
	if partitions != n {
		l.r.opts.Logger.Warn("relay partitions changed: partition heads unknown",
			"relay", l.r.opts.Name, "was", partitions, "now", n)
		return nil
	}
	l.heads, err = decodeHeads(raw, n)
	return err
}

// decodeHeads reads a checkpoint's partition_heads for n partitions: each
// partition's head position, "" where it holds none (or no valid one).
func decodeHeads(raw []byte, n int) ([]string, error) {
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("relay: checkpoint partition heads: %w", err)
	}
	heads := make([]string, n)
	for i := range heads {
		if h := m[strconv.Itoa(i)]; h != "" {
			if _, err := eventstore.ParsePosition(h); err == nil {
				heads[i] = h
			}
		}
	}
	return heads, nil
}

// PublishedHeads reads, from relay name's checkpoint, the position of the
// last event the relay published in each of partitions (Start for one it
// published nothing in, or when it used another partition count). Every
// event up to a partition's head was acknowledged by the broker.
func PublishedHeads(ctx context.Context, db projections.Querier, name string, partitions int) ([]eventstore.Position, error) {
	heads := make([]eventstore.Position, partitions)
	var n int
	var raw []byte
	err := db.QueryRow(ctx, "SELECT partitions, partition_heads FROM relay_checkpoints WHERE name = $1", name).Scan(&n, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return heads, nil
	}
	if err != nil {
		return nil, fmt.Errorf("relay: read partition heads: %w", err)
	}
	if n != partitions {
		return heads, nil
	}
	raws, err := decodeHeads(raw, partitions)
	if err != nil {
		return nil, err
	}
	for i, h := range raws {
		if h != "" {
			heads[i], _ = eventstore.ParsePosition(h) // decodeHeads kept only valid ones
		}
	}
	return heads, nil
}

// watch checks the lock connection every LockCheck and cancels the
// leadership when it is gone: the session, and so the lock, may be too.
func (l *leader) watch(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(l.r.opts.LockCheck)
	defer t.Stop()
	// The checkpoint a batch left to later (Options.CheckpointEvery).
	var flushes <-chan time.Time
	if every := l.r.opts.CheckpointEvery; every > 0 {
		f := time.NewTicker(every)
		defer f.Stop()
		flushes = f.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-flushes:
			if err := l.flush(ctx); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%w: checkpoint: %v", errLockLost, err))
				return
			}
			continue
		case <-t.C:
		}
		// Not cut short by the leadership's end: pgx closes a connection
		// whose statement is cancelled, and the last flush needs it.
		pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), l.r.opts.LockCheck+time.Second)
		l.mu.Lock()
		err := l.conn.Ping(pctx)
		l.mu.Unlock()
		pcancel()
		if err != nil && ctx.Err() == nil {
			cancel(fmt.Errorf("%w: %v", errLockLost, err))
			return
		}
	}
}

// publish sends one batch, each partition's messages in feed order (the
// partitions at once), and then moves the checkpoint (see flush): only
// after every Publish returned (acknowledged).
func (l *leader) publish(ctx context.Context, events []eventstore.RecordedEvent) error {
	n := l.r.opts.Partitions
	heads := append([]string(nil), l.heads...)
	byPartition := make(map[int][]*message.Message)
	recordedAt := map[int][]time.Time{} // of byPartition's events, for pos.relay.lag
	var order []int
	// The producer spans end when the broker has answered (or nothing was
	// sent): their error is the publication's, not the checkpoint's.
	var spans []trace.Span
	var published error
	endSpans := func() {
		for _, span := range spans {
			telemetry.EndSpan(span, published, published != nil)
		}
		spans = nil
	}
	defer endSpans()
	for _, e := range events {
		p := projections.Partition(merchantOf(e), n)
		var prev *eventstore.Position
		if heads[p] != "" {
			pp, err := eventstore.ParsePosition(heads[p])
			if err != nil {
				return fmt.Errorf("relay: partition %d head: %w", p, err)
			}
			prev = &pp
		}
		heads[p] = e.Position.String()
		if l.r.opts.SkipEvent != nil && l.r.opts.SkipEvent(e) {
			continue
		}
		msg, err := Encode(e, prev, p)
		if err != nil {
			published = err
			return err
		}
		msg.SetContext(ctx)
		if l.r.opts.Tracer != nil {
			spans = append(spans, l.trace(msg, e, p))
		}
		if _, ok := byPartition[p]; !ok {
			order = append(order, p)
		}
		byPartition[p] = append(byPartition[p], msg)
		if l.r.lag != nil {
			recordedAt[p] = append(recordedAt[p], e.RecordedAt)
		}
	}
	// Partitions are independent streams: publish them at once.
	acked := make([]time.Time, len(order)) // by index in order
	g, gctx := errgroup.WithContext(ctx)
	for i, p := range order {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			if err := l.r.pub.Publish(l.r.Topic(p), byPartition[p]...); err != nil {
				return fmt.Errorf("relay: publish to %s: %w", l.r.Topic(p), err)
			}
			acked[i] = time.Now()
			return nil
		})
	}
	published = g.Wait()
	endSpans()
	if published != nil {
		return published // nothing recorded: the batch is published again, and recorded then
	}
	if l.r.lag != nil {
		for i, p := range order {
			for _, at := range recordedAt[p] {
				l.r.lag.Record(ctx, max(0, acked[i].Sub(at).Seconds()))
			}
		}
	}
	l.mu.Lock()
	l.pos, l.heads, l.dirty = events[len(events)-1].Position, heads, true
	due := l.r.opts.CheckpointEvery < 0 || time.Since(l.written) >= l.r.opts.CheckpointEvery
	l.mu.Unlock()
	if due {
		return l.flush(ctx)
	}
	return nil
}

// trace starts e's producer span (see Options.Tracer) and puts its context
// in msg's metadata in place of the event's.
func (l *leader) trace(msg *message.Message, e eventstore.RecordedEvent, partition int) trace.Span {
	carrier := propagation.MapCarrier(msg.Metadata)
	parent := propagation.TraceContext{}.Extract(context.Background(), carrier)
	_, span := l.r.opts.Tracer.Start(parent, "relay publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.destination.name", l.r.Topic(partition)),
			attribute.String("messaging.message.id", e.ID.String()), attribute.String("pos.event_type", e.Type),
			attribute.String("pos.position", e.Position.String())))
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(context.Background(), span), carrier)
	return span
}

// merchantOf returns e's merchant as projections.Runner partitions it: the
// canonical form of the merchant in the stream name, else the metadata's.
func merchantOf(e eventstore.RecordedEvent) string {
	if _, m, _, ok := eventstore.ParseStreamName(e.Stream); ok {
		if id, err := uuid.Parse(m); err == nil {
			return id.String()
		}
	}
	return e.Metadata.MerchantID
}

// flushTimeout bounds a checkpoint write.
const flushTimeout = 5 * time.Second

// flush records what was published (pos and heads) on the lock connection,
// unless that is written already: if the session is gone, so is the lock,
// and the write fails instead of moving a checkpoint another leader now
// owns. Only acknowledged publications are recorded (publish moves pos and
// heads after the broker's answers).
func (l *leader) flush(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.dirty {
		return nil
	}
	// Not cut short by the leadership's end either (see watch).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	pos, heads := l.pos, l.heads
	m := make(map[string]string, len(heads))
	for i, h := range heads {
		m[strconv.Itoa(i)] = h
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("relay: encode partition heads: %w", err)
	}
	_, err = l.conn.Exec(ctx, `
INSERT INTO relay_checkpoints (name, major, minor, partitions, partition_heads, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (name) DO UPDATE SET
    major = excluded.major, minor = excluded.minor, partitions = excluded.partitions,
    partition_heads = excluded.partition_heads, updated_at = excluded.updated_at`,
		l.r.opts.Name, int64(pos.Major), int64(pos.Minor), len(heads), raw)
	if err != nil {
		return fmt.Errorf("relay: write checkpoint: %w", err)
	}
	l.dirty, l.written = false, time.Now()
	return nil
}
