package relay_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/internal/pgpool"
	"pos/internal/pgtest"
	"pos/projections"
	"pos/relay"
)

const natsURL = "nats://127.0.0.1:4222"

// env is one test's database, store, NATS connection and unique topics.
type env struct {
	t      *testing.T
	url    string
	pool   *pgxpool.Pool
	store  eventstore.Store
	js     nats.JetStreamContext
	prefix string
	n      int
}

func newEnv(t *testing.T, partitions int) *env {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool, err := pgpool.Open(context.Background(), url, "pos_app", "", 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	js := jetStream(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	e := &env{t: t, url: url, pool: pool, store: pgstore.New(pool), js: js,
		prefix: "pos_test_" + hex.EncodeToString(b[:]) + "_p", n: partitions}
	t.Cleanup(func() {
		for p := range partitions {
			_ = js.DeleteStream(relay.Topic(e.prefix, p))
		}
	})
	return e
}

func (e *env) publisher() message.Publisher {
	e.t.Helper()
	pub, err := relay.NewPublisher(natsURL)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// start runs a relay until the test ends or the returned stop is called.
func (e *env) start(pub message.Publisher, opts relay.Options) (*relay.Relay, func()) {
	e.t.Helper()
	opts.Partitions = e.n
	opts.TopicPrefix = e.prefix
	opts.Idle = 20 * time.Millisecond
	opts.LockCheck = 200 * time.Millisecond
	opts.RetryDelay = 200 * time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(e.t.Output(), nil))
	r, err := relay.New(e.pool, e.store, pub, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return r, stop
}

// appendEvents appends count events, spread over merchants (one stream
// each), and returns them as stored, in feed order.
func (e *env) appendEvents(merchants []string, count int) []eventstore.RecordedEvent {
	e.t.Helper()
	ctx := context.Background()
	for i := range count {
		m := merchants[i%len(merchants)]
		stream := eventstore.StreamName("transaction", m, uuid.NewString())
		_, err := e.store.Append(ctx, stream, eventstore.Any, eventstore.EventData{
			ID:            uuid.Must(uuid.NewV7()),
			Type:          "TestHappened",
			SchemaVersion: 1,
			Data:          json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
			Metadata: eventstore.Metadata{
				MerchantID:  m,
				TraceParent: fmt.Sprintf("00-%032x-%016x-01", i+1, i+1),
				TraceState:  "pos=t",
			},
		})
		if err != nil {
			e.t.Fatalf("append: %v", err)
		}
	}
	return e.feed()
}

func (e *env) feed() []eventstore.RecordedEvent {
	e.t.Helper()
	ctx := context.Background()
	if err := e.store.Settle(ctx); err != nil {
		e.t.Fatal(err)
	}
	all, err := e.store.ReadAll(ctx, eventstore.Start, eventstore.Filter{}, eventstore.MaxReadLimit)
	if err != nil {
		e.t.Fatal(err)
	}
	return all
}

// stored is one message as JetStream holds it.
type stored struct {
	header   nats.Header
	delivery projections.Delivery
}

// messages returns every message in partition p's stream, in stream order.
func (e *env) messages(p int) []stored {
	e.t.Helper()
	name := relay.Topic(e.prefix, p)
	info, err := e.js.StreamInfo(name)
	if errors.Is(err, nats.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("stream %s: %v", name, err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := e.js.GetMsg(name, seq)
		if err != nil {
			e.t.Fatalf("stream %s seq %d: %v", name, seq, err)
		}
		d, err := relay.Decode(m.Data)
		if err != nil {
			e.t.Fatalf("stream %s seq %d: %v", name, seq, err)
		}
		out = append(out, stored{header: m.Header, delivery: d})
	}
	return out
}

func (e *env) count() int {
	n := 0
	for p := range e.n {
		n += len(e.messages(p))
	}
	return n
}

func (e *env) checkpoint() eventstore.Position {
	e.t.Helper()
	var major, minor int64
	err := e.pool.QueryRow(context.Background(),
		"SELECT major, minor FROM relay_checkpoints WHERE name = $1", relay.DefaultName).Scan(&major, &minor)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Start
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return eventstore.Position{Major: uint64(major), Minor: uint64(minor)}
}

// waitCheckpoint waits until the relay checkpointed pos.
func (e *env) waitCheckpoint(pos eventstore.Position, within time.Duration) time.Duration {
	e.t.Helper()
	start := time.Now()
	for e.checkpoint() != pos {
		if time.Since(start) > within {
			e.t.Fatalf("checkpoint %s, want %s after %s", e.checkpoint(), pos, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// countingPublisher counts the messages it passes on.
type countingPublisher struct {
	message.Publisher
	n atomic.Int64
}

func (c *countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	c.n.Add(int64(len(msgs)))
	return c.Publisher.Publish(topic, msgs...)
}

func merchants(k int) []string {
	ms := make([]string, k)
	for i := range ms {
		ms[i] = uuid.NewString()
	}
	return ms
}

func TestPublishesEveryEventOnceInPartitionOrder(t *testing.T) {
	e := newEnv(t, 4)
	events := e.appendEvents(merchants(5), 30)
	e.start(e.publisher(), relay.Options{BatchSize: 7})
	e.waitCheckpoint(events[len(events)-1].Position, 10*time.Second)

	// Want: per partition, the feed's events of that partition, in order.
	want := make(map[int][]eventstore.RecordedEvent)
	for _, ev := range events {
		p := projections.Partition(ev.Metadata.MerchantID, e.n)
		want[p] = append(want[p], ev)
	}
	total := 0
	for p := range e.n {
		got := e.messages(p)
		total += len(got)
		if len(got) != len(want[p]) {
			t.Fatalf("partition %d: %d messages, want %d", p, len(got), len(want[p]))
		}
		prev := eventstore.Start
		for i, m := range got {
			w := want[p][i]
			d := m.delivery
			if d.Event.ID != w.ID || d.Event.Position != w.Position || d.Event.Stream != w.Stream ||
				d.Event.Version != w.Version || string(d.Event.Data) != string(w.Data) ||
				hex.EncodeToString(d.Event.Hash) != hex.EncodeToString(w.Hash) || !d.Event.RecordedAt.Equal(w.RecordedAt) {
				t.Errorf("partition %d message %d: got %+v, want %+v", p, i, d.Event, w)
			}
			if d.PrevPosition == nil || *d.PrevPosition != prev {
				t.Errorf("partition %d message %d: prev_position %v, want %s", p, i, d.PrevPosition, prev)
			}
			prev = w.Position
			for k, v := range map[string]string{
				"Nats-Msg-Id": w.ID.String(),
				"traceparent": w.Metadata.TraceParent,
				"tracestate":  w.Metadata.TraceState,
				"merchant_id": w.Metadata.MerchantID,
				"partition":   fmt.Sprint(p),
			} {
				if got := m.header.Get(k); got != v {
					t.Errorf("partition %d message %d: header %s = %q, want %q", p, i, k, got, v)
				}
			}
		}
	}
	if total != len(events) {
		t.Errorf("%d messages, want %d", total, len(events))
	}

	// More events later are followed.
	more := e.appendEvents(merchants(2), 5)
	e.waitCheckpoint(more[len(more)-1].Position, 10*time.Second)
	if got := e.count(); got != len(more) {
		t.Errorf("after more: %d messages, want %d", got, len(more))
	}
}

func TestRepublishAfterCrashIsDeduplicated(t *testing.T) {
	e := newEnv(t, 4)
	events := e.appendEvents(merchants(3), 20)
	last := events[len(events)-1].Position
	pub := &countingPublisher{Publisher: e.publisher()}
	_, stop := e.start(pub, relay.Options{})
	e.waitCheckpoint(last, 10*time.Second)
	stop()

	// A crash after publishing but before the checkpoint: the checkpoint
	// write is lost, so the next relay publishes everything again.
	admin, err := pgx.Connect(context.Background(), e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(context.Background(), "DELETE FROM relay_checkpoints"); err != nil {
		t.Fatal(err)
	}
	e.start(pub, relay.Options{})
	e.waitCheckpoint(last, 10*time.Second)

	if got := pub.n.Load(); got != int64(2*len(events)) {
		t.Errorf("published %d messages, want %d (everything twice)", got, 2*len(events))
	}
	if got := e.count(); got != len(events) {
		t.Errorf("JetStream holds %d messages, want %d: duplicates not dropped", got, len(events))
	}
}

func TestOneRelayPublishesAndAStandbyTakesOver(t *testing.T) {
	e := newEnv(t, 2)
	a := &countingPublisher{Publisher: e.publisher()}
	b := &countingPublisher{Publisher: e.publisher()}
	ra, stopA := e.start(a, relay.Options{})
	rb, stopB := e.start(b, relay.Options{})
	events := e.appendEvents(merchants(3), 12)
	e.waitCheckpoint(events[len(events)-1].Position, 10*time.Second)

	if ra.Leading() == rb.Leading() {
		t.Fatalf("leading: a %v, b %v; want exactly one", ra.Leading(), rb.Leading())
	}
	leader, standby, stopLeader := a, b, stopA
	standbyRelay := rb
	if rb.Leading() {
		leader, standby, stopLeader = b, a, stopB
		standbyRelay = ra
	}
	if leader.n.Load() != int64(len(events)) || standby.n.Load() != 0 {
		t.Fatalf("published: leader %d, standby %d; want %d and 0", leader.n.Load(), standby.n.Load(), len(events))
	}

	stopLeader()
	all := e.appendEvents(merchants(2), 6)
	took := e.waitCheckpoint(all[len(all)-1].Position, 5*time.Second)
	t.Logf("standby took over and caught up in %s", took)
	if !standbyRelay.Leading() {
		t.Error("standby not leading after the leader stopped")
	}
	if got := standby.n.Load(); got != int64(len(all)-len(events)) {
		t.Errorf("standby published %d, want %d", got, len(all)-len(events))
	}
	if got := e.count(); got != len(all) {
		t.Errorf("JetStream holds %d messages, want %d", got, len(all))
	}
}

func TestSkippedEventLeavesAGapInPrevPosition(t *testing.T) {
	e := newEnv(t, 1)
	events := e.appendEvents(merchants(1), 5)
	skipped := events[2]
	e.start(e.publisher(), relay.Options{
		SkipEvent: func(ev eventstore.RecordedEvent) bool { return ev.ID == skipped.ID },
	})
	e.waitCheckpoint(events[len(events)-1].Position, 10*time.Second)

	got := e.messages(0)
	if len(got) != len(events)-1 {
		t.Fatalf("%d messages, want %d", len(got), len(events)-1)
	}
	for _, m := range got {
		if m.delivery.Event.ID == skipped.ID {
			t.Fatal("skipped event was published")
		}
	}
	after := got[2].delivery
	if after.Event.ID != events[3].ID {
		t.Fatalf("third message is %s, want %s", after.Event.ID, events[3].ID)
	}
	if after.PrevPosition == nil || *after.PrevPosition != skipped.Position {
		t.Errorf("prev_position %v, want the skipped %s", after.PrevPosition, skipped.Position)
	}
	if before := got[1].delivery.Event.Position; *after.PrevPosition == before {
		t.Error("prev_position hides the gap")
	}
}

// pos.relay.lag gets one value per event the broker acknowledged, none for
// an event not published and none for a publication that failed (its batch
// is recorded once published again), each measured from the event's
// append: events appended before the relay started are at least that old
// when published, and none older than the oldest event now.
func TestLagIsRecordedForEachPublishedEvent(t *testing.T) {
	e := newEnv(t, 2)
	events := e.appendEvents(merchants(3), 12)
	skipped := events[5]
	reader := sdkmetric.NewManualReader()
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = meters.Shutdown(context.Background()) })
	started := time.Now()
	e.start(&failingOnce{Publisher: e.publisher()}, relay.Options{
		Meter:     meters.Meter("test"),
		SkipEvent: func(ev eventstore.RecordedEvent) bool { return ev.ID == skipped.ID },
	})
	e.waitCheckpoint(events[len(events)-1].Position, 10*time.Second)
	oldest := time.Since(events[0].RecordedAt).Seconds()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var points []metricdata.HistogramDataPoint[float64]
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "pos.relay.lag" {
				points = append(points, h.DataPoints...)
			}
		}
	}
	if len(points) != 1 {
		t.Fatalf("pos.relay.lag: %d data points, want 1", len(points))
	}
	p := points[0]
	if p.Count != uint64(len(events)-1) {
		t.Errorf("pos.relay.lag: %d values, want %d (every event but the one not published, once)", p.Count, len(events)-1)
	}
	youngest := started.Sub(events[len(events)-1].RecordedAt).Seconds()
	if lowest, ok := p.Min.Value(); !ok || lowest < youngest {
		t.Errorf("pos.relay.lag: least value %v (%v), want at least %v: the youngest event's age when the relay started", lowest, ok, youngest)
	}
	if highest, ok := p.Max.Value(); !ok || highest > oldest {
		t.Errorf("pos.relay.lag: greatest value %v (%v), want at most %v: the oldest event's age now", highest, ok, oldest)
	}
}

// failingOnce fails its first Publish, as a broker that did not answer.
type failingOnce struct {
	message.Publisher
	failed atomic.Bool
}

func (f *failingOnce) Publish(topic string, msgs ...*message.Message) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("test: the broker did not answer")
	}
	return f.Publisher.Publish(topic, msgs...)
}

// TestKilledLeaderSessionHandsOver ends the leader's database session, as a
// crashed process or a lost network would: PostgreSQL releases the lock, a
// standby takes over, and the old leader notices and stops publishing.
func TestKilledLeaderSessionHandsOver(t *testing.T) {
	e := newEnv(t, 2)
	a := &countingPublisher{Publisher: e.publisher()}
	b := &countingPublisher{Publisher: e.publisher()}
	ra, _ := e.start(a, relay.Options{})
	rb, _ := e.start(b, relay.Options{})
	events := e.appendEvents(merchants(2), 8)
	e.waitCheckpoint(events[len(events)-1].Position, 10*time.Second)

	ctx := context.Background()
	admin, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var killed bool
	err = admin.QueryRow(ctx, `
SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&killed)
	if err != nil || !killed {
		t.Fatalf("terminate the leader's session: %v, %v", killed, err)
	}

	all := e.appendEvents(merchants(2), 6)
	took := e.waitCheckpoint(all[len(all)-1].Position, 5*time.Second)
	t.Logf("caught up %s after the leader's session was killed", took)
	deadline := time.Now().Add(5 * time.Second)
	for ra.Leading() == rb.Leading() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if ra.Leading() == rb.Leading() {
		t.Errorf("leading: a %v, b %v; want exactly one", ra.Leading(), rb.Leading())
	}
	if got := e.count(); got != len(all) {
		t.Errorf("JetStream holds %d messages, want %d", got, len(all))
	}
}

// The leader writes its checkpoint after a batch only when the last write
// is CheckpointEvery old, leaves the rest to later, and writes what it
// published last when its leadership ends.
func TestCheckpointWritesAreSpacedAndTheLastIsKept(t *testing.T) {
	e := newEnv(t, 4)
	first := e.appendEvents(merchants(2), 5)
	pub := &countingPublisher{Publisher: e.publisher()}
	_, stop := e.start(pub, relay.Options{CheckpointEvery: time.Hour})
	// The first batch is written at once: nothing was written before.
	e.waitCheckpoint(first[len(first)-1].Position, 10*time.Second)

	all := e.appendEvents(merchants(2), 5) // the whole feed
	deadline := time.Now().Add(10 * time.Second)
	for pub.n.Load() < int64(len(all)) {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages published, want %d", pub.n.Load(), len(all))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.checkpoint(); got != first[len(first)-1].Position {
		t.Errorf("checkpoint %s right after the next batch, want it still at %s (the last write is not an hour old)", got, first[len(first)-1].Position)
	}
	stop()
	if got, want := e.checkpoint(), all[len(all)-1].Position; got != want {
		t.Errorf("checkpoint %s after the leadership ended, want the last published %s", got, want)
	}
}

// feedReads counts the store's global feed reads.
type feedReads struct {
	eventstore.Store
	n atomic.Int64
}

func (f *feedReads) ReadAll(ctx context.Context, after eventstore.Position, filter eventstore.Filter, limit int) ([]eventstore.RecordedEvent, error) {
	f.n.Add(1)
	return f.Store.ReadAll(ctx, after, filter, limit)
}

// A relay told of its process's appends (Wake) reads a quiet feed less and
// less often, and still publishes what comes after the quiet spell; one
// without Wake keeps reading every Idle.
func TestQuietFeedIsReadLessOften(t *testing.T) {
	for _, wake := range []bool{true, false} {
		t.Run(fmt.Sprintf("wake=%v", wake), func(t *testing.T) {
			e := newEnv(t, 2)
			reads := &feedReads{Store: e.store}
			e.store = reads
			opts := relay.Options{}
			if wake {
				opts.Wake, opts.MaxIdle = make(chan struct{}), 400*time.Millisecond
			}
			e.start(e.publisher(), opts) // Idle 20ms
			time.Sleep(time.Second)
			n := reads.n.Load()
			t.Logf("%d feed reads in a quiet second", n)
			if wake && n >= 10 {
				t.Errorf("%d feed reads of a quiet feed in a second, want about 6 (every 20 ms growing to 400 ms)", n)
			}
			if !wake && n < 15 {
				t.Errorf("%d feed reads of a quiet feed in a second without Wake, want about 50 (every 20 ms)", n)
			}
			events := e.appendEvents(merchants(1), 1)
			e.waitCheckpoint(events[len(events)-1].Position, 10*time.Second)
		})
	}
}
