package consume_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"pos/consume"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/relay"
)

const natsURL = "nats://127.0.0.1:4222"

const partitions = 4

var t0 = time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC)

// env is one test's database and store, a runner over them, and unique
// topics on a NATS server.
type env struct {
	t      *testing.T
	db     *projtest.Env
	runner *projections.Runner
	url    string
	prefix string
}

func newEnv(t *testing.T, url string) *env {
	t.Helper()
	db := projtest.New(t)
	runner, err := projections.NewRunner(db.Pool, db.Store, projections.Options{Partitions: partitions}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	e := &env{t: t, db: db, runner: runner, url: url, prefix: "pos_ctest_" + hex.EncodeToString(b[:]) + "_p"}
	t.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, err := nc.JetStream()
		if err != nil {
			return
		}
		for p := range partitions {
			_ = js.DeleteStream(relay.Topic(e.prefix, p))
		}
		_ = js.DeleteStream(consume.DeadLetterTopic(e.prefix))
	})
	return e
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// relay runs a relay until the test ends.
func (e *env) relay(opts relay.Options) {
	e.t.Helper()
	pub, err := relay.NewPublisher(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	opts.Partitions, opts.TopicPrefix = partitions, e.prefix
	opts.Idle, opts.LockCheck, opts.RetryDelay = 20*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	opts.Logger = e.logger()
	r, err := relay.New(e.db.Pool, e.db.Store, pub, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			e.t.Errorf("relay Run: %v", err)
		}
		_ = pub.Close()
	})
}

// consumer runs a consumer until the test ends and waits until it runs.
func (e *env) consumer(opts consume.Options) *consume.Consumer {
	e.t.Helper()
	c, _ := e.startConsumer(opts)
	return c
}

// startConsumer runs a consumer until the returned stop (or the test's
// end), and waits until it runs.
func (e *env) startConsumer(opts consume.Options) (c *consume.Consumer, stop func()) {
	e.t.Helper()
	opts.Partitions, opts.TopicPrefix = partitions, e.prefix
	opts.RetryInterval, opts.NakDelay, opts.MaxNakDelay = 10*time.Millisecond, 100*time.Millisecond, time.Second
	opts.Logger = e.logger()
	c, err := consume.New(e.url, e.runner, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("consumer Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	select {
	case <-c.Ready():
	case err := <-done:
		once.Do(func() { cancel() })
		e.t.Fatalf("consumer Run: %v", err)
	case <-time.After(20 * time.Second):
		e.t.Fatal("consumer not running after 20s")
	}
	return c, stop
}

// sale rings up a completed cash sale for merchant and returns it.
func (e *env) sale(merchant uuid.UUID, code string) *projtest.Sale {
	e.t.Helper()
	s := e.db.OpenSale(e.t, merchant, projtest.NewID(e.t), code, t0)
	s.AddItem("TEA", 2, 15000, 0, t0)
	s.Checkout(t0)
	s.PayDue(t0)
	s.Complete(t0)
	return s
}

// feed returns every event in the store, in feed order.
func (e *env) feed() []eventstore.RecordedEvent {
	e.t.Helper()
	ctx := context.Background()
	if err := e.db.Store.Settle(ctx); err != nil {
		e.t.Fatal(err)
	}
	all, err := e.db.Store.ReadAll(ctx, eventstore.Start, eventstore.Filter{}, eventstore.MaxReadLimit)
	if err != nil {
		e.t.Fatal(err)
	}
	return all
}

// waitApplied waits until every projection reached the last event of every
// merchant.
func (e *env) waitApplied(timeout time.Duration) {
	e.t.Helper()
	last := map[string]eventstore.Position{}
	for _, ev := range e.feed() {
		last[ev.Metadata.MerchantID] = ev.Position
	}
	cp := e.runner.Checkpoints()
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for m, pos := range last {
			for _, p := range projections.All() {
				ok, err := cp.Reached(context.Background(), p.Name(), m, pos)
				if err != nil {
					e.t.Fatal(err)
				}
				done = done && ok
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("read models did not reach the feed's head within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// row is a sale as rm_transactions holds it.
type row struct {
	status  string
	version uint64
	total   int64
}

// admin connects as the database's creator (no row-level security), until
// the test ends.
func (e *env) admin() *pgx.Conn {
	e.t.Helper()
	c, err := pgx.Connect(context.Background(), e.db.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// rows reads rm_transactions as the superuser (no row-level security).
func (e *env) rows() map[uuid.UUID]row {
	e.t.Helper()
	ctx := context.Background()
	conn := e.admin()
	rs, err := conn.Query(ctx, "SELECT transaction_id, status, version, grand_total FROM rm_transactions")
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[uuid.UUID]row{}
	for rs.Next() {
		var id uuid.UUID
		var r row
		if err := rs.Scan(&id, &r.status, &r.version, &r.total); err != nil {
			e.t.Fatal(err)
		}
		out[id] = r
	}
	if err := rs.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// checkSales checks every sale is in the read model, completed, at its
// stream's last version.
func (e *env) checkSales(sales []*projtest.Sale) {
	e.t.Helper()
	got := e.rows()
	if len(got) != len(sales) {
		e.t.Errorf("rm_transactions has %d rows, want %d", len(got), len(sales))
	}
	for _, s := range sales {
		r, ok := got[s.ID]
		want := s.Aggregate().Version()
		if !ok || r.status != string(transaction.StatusCompleted) || r.version != want || r.total != 30000 {
			e.t.Errorf("sale %s: %+v (present %v), want completed at version %d, total 30000", s.ID, r, ok, want)
		}
	}
}

func merchants(t *testing.T, n int) []uuid.UUID {
	ms := make([]uuid.UUID, n)
	for i := range ms {
		ms[i] = projtest.NewID(t)
	}
	return ms
}

func TestRelayToReadModelThroughNATS(t *testing.T) {
	e := newEnv(t, natsURL)
	e.consumer(consume.Options{})
	e.relay(relay.Options{})
	var sales []*projtest.Sale
	for i, m := range merchants(t, 3) {
		e.db.ChangeSettings(t, m, "Asia/Jakarta", t0)
		sales = append(sales, e.sale(m, "000-00"+string(rune('1'+i))))
	}
	e.waitApplied(20 * time.Second)
	e.checkSales(sales)
}

// relayLosingLastEventOf starts a relay that does not publish s's last
// event, as if the broker lost it; the channel closes once it has skipped it.
func (e *env) relayLosingLastEventOf(s *projtest.Sale) <-chan struct{} {
	e.t.Helper()
	events, err := e.db.Store.ReadStream(context.Background(), s.Stream, 1, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	lost := events[len(events)-1].ID
	skipped := make(chan struct{})
	var once sync.Once
	e.relay(relay.Options{SkipEvent: func(ev eventstore.RecordedEvent) bool {
		if ev.ID == lost {
			once.Do(func() { close(skipped) })
			return true
		}
		return false
	}})
	return skipped
}

func TestSkippedEventIsFilledFromTheStore(t *testing.T) {
	e := newEnv(t, natsURL)
	m := projtest.NewID(t)
	a := e.sale(m, "000-001")
	b := e.sale(m, "000-002")
	// Lose a's last event (Completed): the next message of the partition,
	// b's first, is of another stream, so only PrevPosition reveals it.
	skipped := e.relayLosingLastEventOf(a)
	e.consumer(consume.Options{})
	<-skipped
	e.waitApplied(20 * time.Second)
	e.checkSales([]*projtest.Sale{a, b})
}

// The last message of a partition, lost by the broker, is revealed by no
// later message: the tail check finds the partition behind the relay's
// published head and fills it from the store.
func TestLostTailMessageIsFilledFromTheStore(t *testing.T) {
	e := newEnv(t, natsURL)
	m := projtest.NewID(t)
	a := e.sale(m, "000-001")
	skipped := e.relayLosingLastEventOf(a)
	e.consumer(consume.Options{TailCheck: 100 * time.Millisecond, Heads: func(ctx context.Context) ([]eventstore.Position, error) {
		return relay.PublishedHeads(ctx, e.db.Pool, relay.DefaultName, partitions)
	}})
	<-skipped
	e.waitApplied(20 * time.Second)
	e.checkSales([]*projtest.Sale{a})
}

// A partition that stays behind the relay's head without moving (here a
// head the store cannot reach, so every fill fails) shows in
// pos.projection.stalled, growing from one check to the next.
func TestStalledPartitionShowsInItsGauge(t *testing.T) {
	e := newEnv(t, natsURL)
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	far := eventstore.Position{Major: 1 << 40}
	var stuck atomic.Bool
	stuck.Store(true)
	e.consumer(consume.Options{Meter: meter, TailCheck: 50 * time.Millisecond, Heads: func(context.Context) ([]eventstore.Position, error) {
		heads := make([]eventstore.Position, partitions)
		if stuck.Load() {
			heads[3] = far
		}
		return heads, nil
	}})
	// stalled is the gauge's value; 0 until the consumer's Run observes it.
	stalled := func() float64 {
		v, _ := gauge[float64](t, reader, "pos.projection.stalled")
		return v
	}
	deadline := time.Now().Add(10 * time.Second)
	for stalled() < 0.2 {
		if time.Now().After(deadline) {
			t.Fatalf("pos.projection.stalled %.3f s after 10 s of a stalled partition", stalled())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Caught up (here: the head no longer ahead): back to 0.
	stuck.Store(false)
	deadline = time.Now().Add(10 * time.Second)
	for stalled() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pos.projection.stalled %.3f s after the partition caught up", stalled())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pos.projection.pending counts what the relay published and the durable
// has not applied: the messages of a held partition, and none once it has
// caught up.
func TestHeldMessagesShowInThePendingGauge(t *testing.T) {
	e := newEnv(t, natsURL)
	r := e.withRefuser()
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	m := projtest.NewID(t)
	a := e.sale(m, "000-001")
	r.event.Store(a.Events[1].ID) // a's first item: everything after it in the partition waits
	r.broken.Store(true)
	// A window of 2: most of what waits is not even delivered (NumPending),
	// the rest delivered and unacknowledged (NumAckPending); both count.
	e.consumer(consume.Options{Meter: meter, MaxAckPending: 2, TailCheck: 20 * time.Millisecond})
	e.relay(relay.Options{})
	b := e.sale(m, "000-002")

	// pending is the gauge's value, -1 when it was not observed.
	pending := func() int64 {
		if v, ok := gauge[int64](t, reader, "pos.projection.pending"); ok {
			return v
		}
		return -1
	}
	held := int64(len(a.Events) - 1 + len(b.Events))
	deadline := time.Now().Add(20 * time.Second)
	for pending() != held {
		if time.Now().After(deadline) {
			t.Fatalf("pos.projection.pending = %d while the partition holds, want %d", pending(), held)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.broken.Store(false)
	e.waitApplied(20 * time.Second)
	deadline = time.Now().Add(20 * time.Second)
	for pending() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pos.projection.pending = %d after the partition caught up, want 0", pending())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gauge collects reader and returns the value of the gauge name, if it has
// exactly one data point.
func gauge[N int64 | float64](t *testing.T, reader *sdkmetric.ManualReader, name string) (N, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[N]); ok && m.Name == name && len(g.DataPoints) == 1 {
				return g.DataPoints[0].Value, true
			}
		}
	}
	return 0, false
}

func TestPoisonMessageGoesToDeadLetterAndDoesNotBlock(t *testing.T) {
	e := newEnv(t, natsURL)
	m := projtest.NewID(t)
	p := projections.Partition(m.String(), partitions)
	c := e.consumer(consume.Options{})

	e.publish(p, message.NewMessage(uuid.NewString(), []byte("not an envelope")))
	e.saleAfterOneDeadLetter(c, m)
	js := jetStream(t)
	dlq := consume.DeadLetterTopic(e.prefix)
	info, err := js.StreamInfo(dlq)
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("dead-letter stream has %d messages, want 1", info.State.Msgs)
	}
	msg, err := js.GetMsg(dlq, info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != "not an envelope" || msg.Header.Get("reason_poisoned") == "" {
		t.Errorf("dead letter %q, headers %v", msg.Data, msg.Header)
	}
}

// refuser is a projector that refuses one event as ErrBadEvent while
// broken, as a projector meeting a stored event it cannot apply would.
type refuser struct {
	event    atomic.Value // uuid.UUID: the event refused
	broken   atomic.Bool
	refusals atomic.Int64
}

func (*refuser) Name() string          { return "refuser" }
func (*refuser) Handles(_ string) bool { return true }
func (r *refuser) Apply(_ context.Context, _ pgx.Tx, ev eventstore.RecordedEvent) error {
	if r.broken.Load() && r.event.Load() == ev.ID {
		r.refusals.Add(1)
		return fmt.Errorf("%w: refused %s", projections.ErrBadEvent, ev.ID)
	}
	return nil
}

// orderRecorder records, in the runner's transaction, each event it is
// given in apply_order: what committed is every application, in the order
// the workers made them.
type orderRecorder struct{}

func (orderRecorder) Name() string          { return "order_recorder" }
func (orderRecorder) Handles(_ string) bool { return true }
func (orderRecorder) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	_, err := tx.Exec(ctx, `INSERT INTO apply_order (stream_name, version) VALUES ($1, $2)`, ev.Stream, int64(ev.Version))
	return err
}

// withOrderRecorder gives e's runner an orderRecorder beside every
// projection.
func (e *env) withOrderRecorder() {
	e.t.Helper()
	ctx := context.Background()
	conn := e.admin()
	if _, err := conn.Exec(ctx, `CREATE TABLE apply_order (seq bigserial PRIMARY KEY, stream_name text NOT NULL, version bigint NOT NULL,
            tx xid8 NOT NULL DEFAULT pg_current_xact_id());
        GRANT INSERT, SELECT ON apply_order TO pos_app; GRANT USAGE ON SEQUENCE apply_order_seq_seq TO pos_app`); err != nil {
		e.t.Fatal(err)
	}
	runner, err := projections.NewRunner(e.db.Pool, e.db.Store, projections.Options{Partitions: partitions}, append(projections.All(), orderRecorder{})...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.runner = runner
}

// checkAppliedInOrder checks that the committed applications of each of
// the feed's streams are its versions 1, 2, 3… once each, in that order.
func (e *env) checkAppliedInOrder(feed []eventstore.RecordedEvent) {
	e.t.Helper()
	ctx := context.Background()
	conn := e.admin()
	rows, err := conn.Query(ctx, `SELECT stream_name, version FROM apply_order ORDER BY seq`)
	if err != nil {
		e.t.Fatal(err)
	}
	next := map[string]int64{}
	for rows.Next() {
		var stream string
		var v int64
		if err := rows.Scan(&stream, &v); err != nil {
			e.t.Fatal(err)
		}
		if v != next[stream]+1 {
			e.t.Fatalf("%s: version %d applied after version %d", stream, v, next[stream])
		}
		next[stream] = v
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	last := map[string]int64{}
	for _, ev := range feed {
		last[ev.Stream] = int64(ev.Version)
	}
	for stream, v := range last {
		if next[stream] != v {
			e.t.Errorf("%s: applied up to version %d of %d", stream, next[stream], v)
		}
	}
}

// A partition's backlog is applied a window at a time: the subscriber
// hands a partition's messages to the router as they arrive, so the batcher
// takes them into one transaction. watermill-nats' subscriber, which hands
// a subscription's next message over only after the last one's
// acknowledgement, kept batches at a few messages (the broker spreads a
// partition's messages over the subscriptions at random, and the first
// subscription to draw two holds up the batch behind its second).
func TestABacklogIsAppliedAWindowAtATime(t *testing.T) {
	e := newEnv(t, natsURL)
	e.withOrderRecorder()
	m := projtest.NewID(t)
	e.db.ChangeSettings(t, m, "Asia/Jakarta", t0)
	for i := range 40 {
		e.sale(m, fmt.Sprintf("000-%03d", i))
	}
	feed := e.feed()
	e.relay(relay.Options{})
	// Everything published before any worker runs: a backlog.
	part := projections.Partition(m.String(), partitions)
	deadline := time.Now().Add(20 * time.Second)
	for {
		heads, err := relay.PublishedHeads(context.Background(), e.db.Pool, relay.DefaultName, partitions)
		if err != nil {
			t.Fatal(err)
		}
		if heads[part] == feed[len(feed)-1].Position {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay did not publish the backlog within 20s (head %s)", heads[part])
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.consumer(consume.Options{})
	e.waitApplied(20 * time.Second)
	e.checkAppliedInOrder(feed)
	var txs int
	if err := e.admin().QueryRow(context.Background(), `SELECT count(DISTINCT tx) FROM apply_order`).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	// The backlog fits the window of 256: one transaction, give or take
	// the first messages arriving alone.
	if most := len(feed) / 25; txs > most {
		t.Errorf("%d events applied in %d transactions, want at most %d", len(feed), txs, most)
	}
	t.Logf("%d events applied in %d transactions", len(feed), txs)
}

// publish publishes msg on partition's topic, as if the relay had.
func (e *env) publish(partition int, msg *message.Message) {
	e.t.Helper()
	pub, err := relay.NewPublisher(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(relay.Topic(e.prefix, partition), msg); err != nil {
		e.t.Fatal(err)
	}
}

// saleAfterOneDeadLetter starts the relay, rings up a sale for merchant,
// and checks it reaches the read model while c dead-lettered one message.
func (e *env) saleAfterOneDeadLetter(c *consume.Consumer, merchant uuid.UUID) {
	e.t.Helper()
	e.relay(relay.Options{})
	s := e.sale(merchant, "000-001")
	e.waitApplied(20 * time.Second)
	e.checkSales([]*projtest.Sale{s})
	if got := c.DeadLettered(); got != 1 {
		e.t.Errorf("DeadLettered = %d, want 1", got)
	}
}

// withRefuser gives e's runner a refuser beside every projection.
func (e *env) withRefuser() *refuser {
	e.t.Helper()
	r := &refuser{}
	runner, err := projections.NewRunner(e.db.Pool, e.db.Store, projections.Options{Partitions: partitions}, append(projections.All(), r)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.runner = runner
	return r
}

// A stored event a projector refuses holds its partition: dead-lettering
// it would not help (the next message's gap fill reads it again) and would
// send every later message of the partition to the dead letters too. Once
// the projector applies it, the partition catches up, nothing lost.
func TestEventAProjectorRefusesHoldsItsPartition(t *testing.T) {
	e := newEnv(t, natsURL)
	r := e.withRefuser()
	m := projtest.NewID(t)
	other := projtest.NewID(t) // a merchant of another partition
	for projections.Partition(other.String(), partitions) == projections.Partition(m.String(), partitions) {
		other = projtest.NewID(t)
	}
	a := e.sale(m, "000-001")
	r.event.Store(a.Events[1].ID) // a's first item
	r.broken.Store(true)
	c := e.consumer(consume.Options{})
	e.relay(relay.Options{})
	b := e.sale(m, "000-002") // the same partition, after the refused event
	o := e.sale(other, "000-003")

	deadline := time.Now().Add(20 * time.Second)
	for r.refusals.Load() < 10 && c.DeadLettered() == 0 { // retried, nacked and redelivered
		if time.Now().After(deadline) {
			t.Fatalf("the event was refused %d times in 20s", r.refusals.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.DeadLettered(); got != 0 {
		t.Fatalf("DeadLettered = %d while the partition holds, want 0", got)
	}
	for e.rows()[o.ID].version != o.Aggregate().Version() { // the other partition goes on
		if time.Now().After(deadline) {
			t.Fatalf("the other partition's sale not applied while the first holds: %+v", e.rows()[o.ID])
		}
		time.Sleep(10 * time.Millisecond)
	}
	rows := e.rows()
	if r, ok := rows[a.ID]; ok && r.version >= 2 {
		t.Fatalf("sale a at version %d while its version 2 is refused", r.version)
	}
	if r, ok := rows[b.ID]; ok {
		t.Fatalf("sale b, after the refused event in its partition, applied: %+v", r)
	}
	r.broken.Store(false) // the release that applies it
	e.waitApplied(20 * time.Second)
	e.checkSales([]*projtest.Sale{a, b, o})
	if got := c.DeadLettered(); got != 0 {
		t.Errorf("DeadLettered = %d, want 0", got)
	}
}

// A refused message whose event the store does not hold (another
// environment's, one from before a restore) is poison: no release could
// ever apply it, so it goes to the dead letters and its partition goes on.
func TestRefusedMessageNotInTheStoreIsDeadLettered(t *testing.T) {
	e := newEnv(t, natsURL)
	r := e.withRefuser()
	m := projtest.NewID(t)
	stray := eventstore.RecordedEvent{ID: projtest.NewID(t), Stream: eventstore.StreamName("gadget", m.String(), projtest.NewID(t).String()),
		Version: 1, Position: eventstore.Position{Major: 1 << 40}, Type: "GadgetMade", SchemaVersion: 1, Data: []byte(`{}`),
		Metadata: eventstore.Metadata{MerchantID: m.String()}, RecordedAt: t0}
	r.event.Store(stray.ID)
	r.broken.Store(true)
	c := e.consumer(consume.Options{})
	msg, err := relay.Encode(stray, nil, projections.Partition(m.String(), partitions))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(projections.Partition(m.String(), partitions), msg)
	e.saleAfterOneDeadLetter(c, m)
}

func TestTwoWorkersSplitTheWorkAndApplyEachEventOnce(t *testing.T) {
	e := newEnv(t, natsURL)
	c1 := e.consumer(consume.Options{})
	c2 := e.consumer(consume.Options{})
	e.relay(relay.Options{})
	var sales []*projtest.Sale
	for i, m := range merchants(t, 8) {
		for j := range 2 {
			sales = append(sales, e.sale(m, "00"+string(rune('0'+i))+"-00"+string(rune('1'+j))))
		}
	}
	e.waitApplied(30 * time.Second)
	e.checkSales(sales)
	n := int64(len(e.feed()))
	h1, h2 := c1.Handled(), c2.Handled()
	t.Logf("worker 1 applied %d messages, worker 2 %d, of %d events", h1, h2, n)
	if h1 == 0 || h2 == 0 {
		t.Errorf("work not split: %d and %d", h1, h2)
	}
	// Nothing failed, so nothing was redelivered: each message once.
	if h1+h2 != n {
		t.Errorf("handled %d messages, want %d (each event once)", h1+h2, n)
	}
	// Effects: the daily sales count each sale once.
	e.checkDailySalesOnce(len(sales))
}

// checkDailySalesOnce checks that the daily sales count each of the n
// sales (of 30,000 each) once.
func (e *env) checkDailySalesOnce(n int) {
	e.t.Helper()
	ctx := context.Background()
	conn := e.admin()
	var count, gross int64
	if err := conn.QueryRow(ctx, "SELECT coalesce(sum(count),0), coalesce(sum(gross),0) FROM rm_daily_sales").Scan(&count, &gross); err != nil {
		e.t.Fatal(err)
	}
	if count != int64(n) || gross != 30000*int64(n) {
		e.t.Errorf("daily sales count %d gross %d, want %d and %d", count, gross, n, 30000*n)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestEmbeddedServerRestartLosesNothing(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	srv, err := consume.StartEmbedded(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() }) // after the env's cleanups
	e := newEnv(t, srv.URL())
	c := e.consumer(consume.Options{
		NatsOptions: []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)},
	})
	e.relay(relay.Options{})
	ms := merchants(t, 3)
	var sales []*projtest.Sale
	for i, m := range ms {
		sales = append(sales, e.sale(m, "000-00"+string(rune('1'+i))))
	}
	e.waitApplied(20 * time.Second)

	// Down while the relay publishes and the consumers apply: once the
	// consumer has taken the first of the next sales' messages (not all
	// of them, most of the time): messages in flight, acks lost,
	// publishes refused.
	before := c.Handled()
	for i, m := range ms {
		sales = append(sales, e.sale(m, "000-01"+string(rune('1'+i))))
	}
	for deadline := time.Now().Add(5 * time.Second); c.Handled() == before && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	t.Logf("broker stopped after %d of the next sales' messages were handled", c.Handled()-before)
	srv.Shutdown()
	for i, m := range ms {
		sales = append(sales, e.sale(m, "000-02"+string(rune('1'+i))))
	}
	srv, err = consume.StartEmbedded(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		sales = append(sales, e.sale(m, "000-03"+string(rune('1'+i))))
	}
	e.waitApplied(60 * time.Second)
	e.checkSales(sales)
	e.checkDailySalesOnce(len(sales)) // nothing applied twice
}

func TestThreeWorkersApplyEachEventOnceInOrderAndTakeOverAStoppedOne(t *testing.T) {
	e := newEnv(t, natsURL)
	e.withOrderRecorder()
	// A short AckWait: the stopped worker's in-flight message, if its
	// acknowledgement was lost, goes to another worker within the test.
	const ackWait = 2 * time.Second
	type worker struct {
		c      *consume.Consumer
		cancel context.CancelFunc
		done   chan error
	}
	start := func() *worker {
		t.Helper()
		c, err := consume.New(e.url, e.runner, consume.Options{
			Partitions: partitions, TopicPrefix: e.prefix, AckWait: ackWait,
			RetryInterval: 10 * time.Millisecond, NakDelay: 100 * time.Millisecond,
			Logger: e.logger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		w := &worker{c: c, cancel: cancel, done: make(chan error, 1)}
		go func() { w.done <- c.Run(ctx) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				select {
				case err := <-w.done:
					if err != nil {
						t.Errorf("consumer Run: %v", err)
					}
				case <-time.After(20 * time.Second):
					t.Errorf("consumer did not stop within 20s")
				}
			})
		}
		w.cancel = stop
		t.Cleanup(stop)
		select {
		case <-c.Ready():
		case err := <-w.done:
			t.Fatalf("consumer Run: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("consumer not running after 20s")
		}
		return w
	}
	workers := []*worker{start(), start(), start()}
	handled := func() (sum int64) {
		for _, w := range workers {
			sum += w.c.Handled()
		}
		return sum
	}
	e.relay(relay.Options{})

	// Two merchants on every partition.
	var ms []uuid.UUID
	per := map[int]int{}
	for len(ms) < 2*partitions {
		m := projtest.NewID(t)
		if p := projections.Partition(m.String(), partitions); per[p] < 2 {
			per[p]++
			ms = append(ms, m)
		}
	}
	var sales []*projtest.Sale
	batch := func(b int) {
		for i, m := range ms {
			for j := range 2 {
				sales = append(sales, e.sale(m, fmt.Sprintf("%d%02d-%03d", b, i, j)))
			}
		}
	}
	batch(1)
	first := int64(len(e.feed()))

	// Once some of the first batch is applied, stop the busiest worker.
	deadline := time.Now().Add(15 * time.Second)
	for handled() < first/4 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d messages applied within 15s", handled(), first)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := 0
	for i, w := range workers {
		if w.c.Handled() > workers[stopped].c.Handled() {
			stopped = i
		}
	}
	workers[stopped].cancel()
	atStop := make([]int64, len(workers))
	for i, w := range workers {
		atStop[i] = w.c.Handled()
	}
	if atStop[stopped] == 0 {
		t.Fatalf("stopped worker %d had applied nothing", stopped)
	}

	batch(2)
	e.waitApplied(20 * time.Second)
	e.checkSales(sales)
	feed := e.feed()
	n := int64(len(feed))

	// Counts: the stopped worker applied nothing more, the survivors took
	// over everything else, and every message was handled at least once:
	// the ones the stopped worker held unacknowledged come back after
	// AckWait (by then the runner may have filled them from the store, so
	// they change nothing), at most MaxAckPending per partition.
	for deadline := time.Now().Add(5 * ackWait); handled() < n && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	var total int64
	for i, w := range workers {
		h := w.c.Handled()
		total += h
		t.Logf("worker %d applied %d messages (%d before the stop)", i, h, atStop[i])
		if i == stopped && h != atStop[i] {
			t.Errorf("stopped worker %d applied %d messages after it stopped", i, h-atStop[i])
		}
		if i != stopped && h == 0 {
			t.Errorf("worker %d applied nothing", i)
		}
	}
	if most := n + partitions*consume.DefaultMaxAckPending; total < n || total > most {
		t.Errorf("handled %d messages of %d events, want %d..%d", total, n, n, most)
	}

	// Effects exactly once: the daily sales count each paid sale once.
	e.checkDailySalesOnce(len(sales))
	ctx := context.Background()
	conn := e.admin()

	// In stream order, once each: as the workers applied them.
	e.checkAppliedInOrder(feed)

	// And every projection of the transaction category is at each sale
	// stream's last version.
	var scoped []string
	for _, p := range projections.All() {
		if s, ok := p.(projections.CategoryScoped); ok && slices.Contains(s.Categories(), projections.TransactionCategory) {
			scoped = append(scoped, p.Name())
		}
	}
	if len(scoped) == 0 {
		t.Fatal("no projection reads the transaction category")
	}
	versions := map[string]map[string]uint64{} // stream -> projection -> version
	rs, err := conn.Query(ctx, "SELECT stream_name, projection, version FROM projection_streams")
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var stream, proj string
		var v int64
		if err := rs.Scan(&stream, &proj, &v); err != nil {
			t.Fatal(err)
		}
		if versions[stream] == nil {
			versions[stream] = map[string]uint64{}
		}
		versions[stream][proj] = uint64(v)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	last := map[string]uint64{}
	for _, ev := range feed {
		if ev.Version <= last[ev.Stream] {
			t.Fatalf("feed has %s@%d after version %d", ev.Stream, ev.Version, last[ev.Stream])
		}
		last[ev.Stream] = ev.Version
	}
	for _, s := range sales {
		want := s.Aggregate().Version()
		if last[s.Stream] != want {
			t.Errorf("sale %s: feed ends at version %d, aggregate at %d", s.ID, last[s.Stream], want)
		}
		for _, p := range scoped {
			if got, ok := versions[s.Stream][p]; !ok || got != want {
				t.Errorf("projection %s applied %s up to version %d (row %v), want %d", p, s.Stream, got, ok, want)
			}
		}
	}
}

// jetStream returns a JetStream context on the machine's NATS, its
// connection closed when the test ends.
func jetStream(t *testing.T) nats.JetStreamContext {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	return js
}
