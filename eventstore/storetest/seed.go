package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"

	"pos/eventstore"
)

// Payload is a line-item event of about 200 bytes, the size of a typical POS
// event, for benchmarks.
var Payload = json.RawMessage(`{"line_id":"0193a5c1-7a2b-7c3d-8e4f-5a6b7c8d9e0f",` +
	`"sku":"COF-FW-L","name":"Flat white, oat, large","qty":2,` +
	`"unit_price":{"amount":"4.50","currency":"EUR"},"tax_code":"VAT-R","note":"extra hot, no lid"}`)

// Events builds n events of merchant carrying Payload and full metadata,
// each with a fresh UUIDv7 id.
func Events(merchant string, n int) []eventstore.EventData {
	out := make([]eventstore.EventData, n)
	for i := range out {
		out[i] = eventstore.EventData{
			ID:            uuid.Must(uuid.NewV7()),
			Type:          "ItemAdded",
			SchemaVersion: 1,
			Data:          Payload,
			Metadata: eventstore.Metadata{
				MerchantID:    merchant,
				Actor:         "0193a5c2-1111-7222-8333-444455556666",
				Role:          "CASHIER",
				CorrelationID: uuid.NewString(),
				CausationID:   uuid.NewString(),
				TraceParent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			},
		}
	}
	return out
}

// Seed appends total events (a multiple of streamLen) for benchmarks: streams
// of streamLen events, each one append, written by seeders concurrent
// writers that take merchants round-robin, so consecutive streams in the
// feed belong to different merchants.
func Seed(ctx context.Context, store eventstore.Store, merchants []string, total, streamLen, seeders int) error {
	if len(merchants) == 0 || streamLen <= 0 || total%streamLen != 0 {
		return fmt.Errorf("seed: %d events in streams of %d over %d merchants", total, streamLen, len(merchants))
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, seeders)
	for range seeders {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(total/streamLen) {
					return
				}
				m := merchants[int(i)%len(merchants)]
				if _, err := store.Append(ctx, NewStream(m, "transaction"), eventstore.NoStream, Events(m, streamLen)...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
