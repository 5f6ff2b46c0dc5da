package esdbstore_test

import (
	"context"
	"os"
	"testing"
	"time"

	"pos/eventstore"
	"pos/eventstore/esdbstore"
	"pos/eventstore/storetest"
)

// TestConformance runs the eventstore contract suite against the EventStoreDB
// named by EVENTSTORE_URL. Every test of the suite works under a merchant of
// its own, so one shared store (and server) serves them all.
func TestConformance(t *testing.T) {
	url := os.Getenv("EVENTSTORE_URL")
	if url == "" {
		t.Skip("EventStoreDB: skipped, EVENTSTORE_URL is not set (start one with: docker compose up -d eventstoredb; then EVENTSTORE_URL=esdb://127.0.0.1:2113?tls=false make test)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := esdbstore.Open(ctx, url)
	if err != nil {
		t.Fatalf("open EventStoreDB at EVENTSTORE_URL: %v", err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	// HoldAppend and Tamper stay nil: ESDB assigns $all order at commit, so
	// there is no written-but-uncommitted window, and its storage cannot be
	// altered through the client. Event ids are deduplicated per stream only.
	storetest.Run(t, storetest.Backend{
		Name:         "eventstoredb",
		Open:         func(t *testing.T) eventstore.Store { return store },
		IDsPerStream: true,
	})
}
