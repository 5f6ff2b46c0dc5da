package consume_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"pos/consume"
	"pos/eventstore"
	"pos/internal/testlog"
	"pos/projections"
	"pos/projections/projtest"
	"pos/relay"
)

// A worker stopped while it holds messages finishes them: each is applied
// once and acknowledged before Run returns (none is left to come back after
// AckWait), and the shutdown logs no error.
func TestStoppedWorkerAcknowledgesTheMessagesItHolds(t *testing.T) {
	e := newEnv(t, natsURL)
	m := projtest.NewID(t)
	topic := relay.Topic(e.prefix, projections.Partition(m.String(), partitions))
	var sales []*projtest.Sale
	for i := range 6 {
		sales = append(sales, e.sale(m, fmt.Sprintf("000-%03d", i)))
	}
	n := len(e.feed()) // all of them on m's partition
	if n < 2 || n > consume.DefaultMaxAckPending {
		t.Fatalf("%d events, want 2..%d (all of them in flight at once)", n, consume.DefaultMaxAckPending)
	}

	// Slow handling: the first transaction, once committed, holds its
	// handlers until gate opens, so that the worker is stopped with every
	// message of the partition delivered, one transaction of them held and
	// none acknowledged.
	gate, held := make(chan struct{}), make(chan struct{})
	var openGate sync.Once
	open := func() { openGate.Do(func() { close(gate) }) }
	var commits atomic.Int64
	runner, err := projections.NewRunner(e.db.Pool, e.db.Store, projections.Options{
		Partitions: partitions,
		AfterCommit: func(context.Context, []eventstore.RecordedEvent) {
			if commits.Add(1) == 1 {
				close(held)
				<-gate
			}
		},
	}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	e.runner = runner

	const ackWait = 30 * time.Second // the default: far longer than the test
	logs := &testlog.Buffer{}
	c, err := consume.New(e.url, runner, consume.Options{
		Partitions: partitions, TopicPrefix: e.prefix, AckWait: ackWait,
		RetryInterval: 10 * time.Millisecond, NakDelay: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var stopped sync.Once
	stop := func() (err error) {
		stopped.Do(func() {
			open()
			cancel()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				err = fmt.Errorf("Run did not return within 20s")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("consumer Run: %v", err)
		}
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("consumer Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("consumer not running after 20s")
	}

	js := jetStream(t)
	info := func() *nats.ConsumerInfo {
		t.Helper()
		ci, err := js.ConsumerInfo(topic, consume.DefaultDurable)
		if err != nil {
			t.Fatal(err)
		}
		return ci
	}
	describe := func(ci *nats.ConsumerInfo) string {
		return fmt.Sprintf("%d ack pending, %d pending, %d redelivered, delivered %d (consumer seq %d), ack floor %d, push bound %v",
			ci.NumAckPending, ci.NumPending, ci.NumRedelivered, ci.Delivered.Stream, ci.Delivered.Consumer, ci.AckFloor.Stream, ci.PushBound)
	}
	// poll polls the durable's info until ok (true) or timeout (false).
	poll := func(timeout time.Duration, ok func(*nats.ConsumerInfo) bool) (*nats.ConsumerInfo, bool) {
		t.Helper()
		for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
			ci := info()
			if ok(ci) {
				return ci, true
			}
			if time.Now().After(deadline) {
				return ci, false
			}
		}
	}

	e.relay(relay.Options{})
	if ci, ok := poll(20*time.Second, func(ci *nats.ConsumerInfo) bool {
		return ci.NumAckPending == n && ci.NumPending == 0
	}); !ok {
		t.Fatalf("not all %d messages delivered to the worker and held within 20s: %s", n, describe(ci))
	}
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("no transaction committed within 20s")
	}
	if h := c.Handled(); h != 0 {
		t.Fatalf("%d messages handled before the stop, want 0 (the first transaction is held)", h)
	}

	// Stop the worker; let its handlers go on only once it has stopped
	// taking messages.
	cancel()
	if ci, ok := poll(10*time.Second, func(ci *nats.ConsumerInfo) bool { return !ci.PushBound }); !ok {
		t.Fatalf("the worker still subscribed 10s after its context ended: %s", describe(ci))
	}
	select {
	case err := <-done:
		done <- err // for stop
		t.Errorf("Run returned (%v) while a transaction of its messages was still held", err)
	default:
	}
	open()
	if err := stop(); err != nil {
		t.Errorf("consumer Run: %v, want nil", err)
	}

	// Acknowledged: nothing pending at the broker soon after Run returned,
	// long before AckWait would bring anything back.
	if ci, ok := poll(2*time.Second, func(ci *nats.ConsumerInfo) bool { return ci.NumAckPending == 0 }); !ok {
		t.Errorf("held messages not acknowledged 2s after Run returned (AckWait %s): %s", ackWait, describe(ci))
	} else if ci.NumPending != 0 || ci.NumRedelivered != 0 || ci.Delivered.Consumer != uint64(n) || ci.AckFloor.Stream != ci.Delivered.Stream {
		t.Errorf("durable after the stop: %s; want all %d delivered once and acknowledged", describe(ci), n)
	}

	// A quiet shutdown.
	var errs []string
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "level=ERROR") {
			errs = append(errs, strings.TrimSpace(line))
		}
	}
	if len(errs) > 0 {
		t.Errorf("consumer logged %d errors, the first:\n%s", len(errs), strings.Join(errs[:min(len(errs), 3)], "\n"))
	}

	// Applied, each once.
	if h := c.Handled(); h != int64(n) {
		t.Errorf("handled %d messages, want %d", h, n)
	}
	e.checkSales(sales)
	e.checkDailySalesOnce(len(sales))

	e.waitApplied(time.Second) // applied already (if at all): checkpoints at the head
}

// A worker stopped while it is still subscribing (a SIGTERM during
// startup) stops cleanly: Run returns nil and nothing is logged as an
// error.
func TestWorkerStoppedWhileSubscribingStopsCleanly(t *testing.T) {
	e := newEnv(t, natsURL)
	logs := &testlog.Buffer{}
	c, err := consume.New(e.url, e.runner, consume.Options{
		Partitions: partitions, TopicPrefix: e.prefix,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // before Run: it is stopped while it subscribes
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run stopped while subscribing: %v, want nil", err)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n > 0 {
		t.Fatalf("%d errors logged stopping a subscribing worker:\n%s", n, logs.String())
	}
}
