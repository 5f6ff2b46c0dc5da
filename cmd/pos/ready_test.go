package main

import (
	"context"
	"testing"
	"time"

	"pos/consume"
)

func TestBrokerReadyCheck(t *testing.T) {
	srv, err := consume.StartEmbedded(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	check, err := brokerReadyCheck(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	probe := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return check(ctx)
	}
	if err := probe(); err != nil {
		t.Fatalf("broker up: %v", err)
	}
	srv.Shutdown()
	if err := probe(); err == nil {
		t.Fatal("broker down: the check passed")
	}

	// A broker down at start is reported by the check, not fatal.
	down, err := brokerReadyCheck(ctx, "nats://127.0.0.1:1")
	if err != nil {
		t.Fatalf("broker down at start: %v", err)
	}
	if err := down(context.Background()); err == nil {
		t.Fatal("broker down at start: the check passed")
	}
}
