package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"pos/api"
)

// Readiness (GET /readyz, API.md "Operations"): besides the event store and
// the database, which the API checks itself, serve passes it the broker
// and the read store as required checks and the cache as an optional one.

// addReadyCheck adds check under name to *checks, making the map if needed.
func addReadyCheck(checks *map[string]api.ReadyCheck, name string, check api.ReadyCheck) {
	if *checks == nil {
		*checks = map[string]api.ReadyCheck{}
	}
	(*checks)[name] = check
}

// brokerReadyCheck returns a check that the NATS server at url and its
// JetStream answer. The relay's and the workers' connections are their
// own (inside Watermill), so the check keeps a connection of its own to the
// same server: opened now, reconnecting forever (a broker that is down at
// start is reported, not fatal), closed when ctx ends.
func brokerReadyCheck(ctx context.Context, url string) (api.ReadyCheck, error) {
	nc, err := nats.Connect(url, nats.Name("pos readiness"), nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	if err != nil {
		return nil, fmt.Errorf("readiness: NATS: %w", err)
	}
	context.AfterFunc(ctx, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("readiness: JetStream: %w", err)
	}
	return func(ctx context.Context) error {
		if st := nc.Status(); st != nats.CONNECTED {
			return fmt.Errorf("NATS connection %s", st)
		}
		if _, err := js.AccountInfo(ctx); err != nil {
			return fmt.Errorf("JetStream: %w", err)
		}
		return nil
	}, nil
}
