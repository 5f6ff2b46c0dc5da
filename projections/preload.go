package projections

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/eventstore"
)

// preloader is implemented by this package's batch projectors whose
// ApplyBatch starts with one read of rows named by its events alone (their
// streams' ids, their reservations), not by anything the batch writes. The
// Runner queues that read in the round trip that locks the streams and
// reads their versions (lockStreams), so that a transaction of a sale's
// events makes two round trips, not one more per projector and merchant;
// under load each round trip is a wait for a core behind every other
// backend and goroutine. ApplyBatch then takes the rows (takePreload)
// instead of reading them.
//
// The read runs after the locks, in a statement of its own (read
// committed), so it sees what the locks' last holders committed, as
// ApplyBatch's own read would. It runs before the transaction writes
// anything, so the Runner preloads only segments without a settings event:
// those are their merchant's first of the run, and no earlier write of the
// transaction can be missing from their rows.
type preloader interface {
	// preload queues on b the read ApplyBatch(events) starts with, to run
	// with merchant set for row-level security, and returns what ApplyBatch
	// will take once b's results are read; nil when there is nothing to
	// read. events may hold some that ApplyBatch will not be given
	// (redeliveries): reading more rows than it needs changes nothing.
	preload(ctx context.Context, b *pgx.Batch, merchant uuid.UUID, events []eventstore.RecordedEvent) any
}

// preload is the value one read ahead produced for a merchant's keys.
type preload[K comparable, V any] struct {
	merchant uuid.UUID
	keys     map[K]bool
	value    V
	read     bool // the statement ran and its rows were scanned
	taken    bool
}

func newPreload[K comparable, V any](merchant uuid.UUID, keys []K) *preload[K, V] {
	p := &preload[K, V]{merchant: merchant, keys: make(map[K]bool, len(keys))}
	for _, k := range keys {
		p.keys[k] = true
	}
	return p
}

// queue queues sql on b and scans its rows into p with scan when b's
// results are read.
func (p *preload[K, V]) queue(b *pgx.Batch, scan func(pgx.Rows) (V, error), sql string, args ...any) *preload[K, V] {
	b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		v, err := scan(rows)
		if err != nil {
			return err
		}
		p.value, p.read = v, true
		return nil
	})
	return p
}

type preloadKey struct{}

// withPreload returns ctx carrying p (any preload[K, V]) for one
// projector's ApplyBatch.
func withPreload(ctx context.Context, p any) context.Context {
	if p == nil {
		return ctx
	}
	return context.WithValue(ctx, preloadKey{}, p)
}

// takePreload returns the value read ahead for merchant's keys, when ctx
// carries one that covers every key and was not taken yet: once only, since
// a later read in the transaction must see the writes made since.
func takePreload[K comparable, V any](ctx context.Context, merchant uuid.UUID, keys []K) (V, bool) {
	var zero V
	p, _ := ctx.Value(preloadKey{}).(*preload[K, V])
	if p == nil || !p.read || p.taken || p.merchant != merchant {
		return zero, false
	}
	for _, k := range keys {
		if !p.keys[k] {
			return zero, false
		}
	}
	p.taken = true
	return p.value, true
}

// aggregatesOf returns the distinct aggregate ids of events' streams, in
// order of first appearance; false when one is not merchant's.
func aggregatesOf(merchant uuid.UUID, events []eventstore.RecordedEvent) ([]uuid.UUID, bool) {
	ids := make([]uuid.UUID, 0, len(events))
	for _, e := range events {
		m, id, err := aggregateOf(e)
		if err != nil || m != merchant {
			return nil, false
		}
		ids = append(ids, id)
	}
	return distinct(ids), true
}
