package consume_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"pos/consume"
)

// A consumer whose connection closed for good (its reconnect budget spent
// during a broker outage) says so: Run returns an error, on which serve
// renews the consumer and `pos projector` exits to its supervisor, rather
// than consuming nothing more in silence. The budget is bounded here so
// the test runs in seconds; by default it is unbounded.
func TestConsumerNoticesItsConnectionClosed(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	srv, c := embeddedConsumer(t, dir, port, nats.MaxReconnects(2))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Ready()
	srv.Shutdown()
	time.Sleep(2 * time.Second) // the budget is spent: the connection closes
	srv, err := consume.StartEmbedded(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("Run returned nil, want the closed connection said")
		}
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatal("the broker is back, the consumer's connection closed for good, and Run still runs")
	}
}

// A port in use is said by name, not as a server that never became ready.
func TestEmbeddedOnAPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, err := consume.StartEmbedded(t.TempDir(), ln.Addr().(*net.TCPAddr).Port)
	if err == nil {
		srv.Shutdown()
		t.Fatal("started on a port in use")
	}
	// Not "did not start within 10s": the listen error itself.
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("%v, want the port in use named", err)
	}
}

// One embedded server per data directory: a second process (or server) on
// the same POS_DATA_DIR is refused, by name, and the directory is free
// again once the first stops.
func TestEmbeddedOwnsItsDataDirectory(t *testing.T) {
	dir := t.TempDir()
	first, err := consume.StartEmbedded(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	second, err := consume.StartEmbedded(dir, 0)
	if err == nil {
		second.Shutdown()
		first.Shutdown()
		t.Fatal("two embedded servers on one data directory")
	}
	if !strings.Contains(err.Error(), "POS_DATA_DIR") {
		t.Errorf("refusal %q does not say what to change", err)
	}
	first.Shutdown()
	again, err := consume.StartEmbedded(dir, 0)
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	again.Shutdown()
}

// A worker stopped while the broker is unreachable stops at once: nothing
// it holds could be acknowledged, and a drain of each subscription would
// wait for a flush the reconnecting connection answers only once the
// broker is back (10 s a subscription, so the whole AckWait).
func TestStopDuringABrokerOutageIsPrompt(t *testing.T) {
	lost := make(chan struct{}, 8) // one for each of the consumer's connections
	srv, c := embeddedConsumer(t, t.TempDir(), freePort(t), nats.DisconnectErrHandler(func(*nats.Conn, error) {
		select {
		case lost <- struct{}{}:
		default:
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("consumer not running after 20s")
	}
	srv.Shutdown()
	select {
	case <-lost: // the connection is reconnecting
	case <-time.After(20 * time.Second):
		t.Fatal("no disconnection seen 20s after the broker stopped")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("stopping during a broker outage took %s", d.Round(time.Millisecond))
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Run did not return within 90s")
	}
}

// embeddedConsumer starts an embedded NATS server in dir on port and a
// consumer of it (not running) that reconnects every 100ms, with natsOpts.
func embeddedConsumer(t *testing.T, dir string, port int, natsOpts ...nats.Option) (*consume.Embedded, *consume.Consumer) {
	t.Helper()
	srv, err := consume.StartEmbedded(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, srv.URL())
	c, err := consume.New(e.url, e.runner, consume.Options{Partitions: partitions, TopicPrefix: e.prefix, Logger: e.logger(),
		NatsOptions: append([]nats.Option{nats.ReconnectWait(100 * time.Millisecond)}, natsOpts...)})
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}
