package consume

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gofrs/flock"
	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is an in-process NATS server with JetStream, for `serve` on a
// laptop when NATS_URL is unset (SPEC §8).
type Embedded struct {
	srv  *server.Server
	lock *flock.Flock
}

// StartEmbedded starts a NATS server with JetStream listening on
// 127.0.0.1:port (port 0: a random free port), keeping its streams in dir
// (created if missing), and waits until it accepts connections.
func StartEmbedded(dir string, port int) (*Embedded, error) {
	if dir == "" {
		return nil, errors.New("consume: the embedded NATS server needs a data directory")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("consume: embedded NATS data directory: %w", err)
	}
	// One server per store directory: two (two serve processes left on
	// the default POS_DATA_DIR) would both write its streams, and JetStream
	// does not refuse that itself.
	lock := flock.New(filepath.Join(dir, "pos-embedded.lock"))
	if locked, err := lock.TryLock(); err != nil {
		return nil, fmt.Errorf("consume: embedded NATS data directory: %w", err)
	} else if !locked {
		return nil, fmt.Errorf("consume: embedded NATS: another process keeps its streams in %s (give each its own POS_DATA_DIR)", dir)
	}
	started := false
	defer func() {
		if !started {
			_ = lock.Unlock()
		}
	}()
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// The server, logging nothing, would only fail to become ready:
		// a port in use is said at once, by name.
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("consume: embedded NATS: %w", err)
		}
		_ = ln.Close()
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "pos-embedded",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
		HTTPPort:   0,
	})
	if err != nil {
		return nil, fmt.Errorf("consume: embedded NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("consume: embedded NATS did not start within 10s")
	}
	started = true
	return &Embedded{srv: srv, lock: lock}, nil
}

// URL is the client URL to connect to.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits until it is down (its JetStream
// state flushed to the data directory).
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	_ = e.lock.Unlock()
}
