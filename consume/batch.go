package consume

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"pos/projections"
)

// batcher turns the messages of one partition that arrive while a
// transaction is running into the next transaction (group commit): under
// load a partition's messages are applied a batch at a time, so the
// statements per event fall as the rate rises, while a lone message is
// applied at once.
//
// Messages of one partition reach it concurrently (the router runs each
// message's handler on a goroutine of its own, up to Options.MaxAckPending
// of a partition at once) and so slightly out of order. Before a batch
// whose first message does not follow what the runner has committed, the
// leader waits up to reorderWait for the missing ones, which are most likely
// a few microseconds behind, rather than have the runner fill the gap from
// the store. The runner is correct either way. A hole that outlasts the
// wait is most likely another worker's message (workers sharing a
// partition each see part of it) or a lost one: the partition's next
// batches then go without waiting for reorderHoldoff, so that sharing does
// not add reorderWait to every batch, and the wait is tried again after.
//
// With hold set (Options.HoldUnhandled), a partition's pending messages
// that the runner's projectors would not act on at all (only bookkeeping to
// write) wait up to hold after the first arrived for one they would, or for
// a full batch: a process manager ignores most events, and paid a
// transaction for each ignored one that arrived alone.
//
// A batcher is safe for concurrent use. Every message's handler blocks in
// submit until the batch holding its message has committed or failed: the
// router acknowledges a message only after its effect is committed.
type batcher struct {
	runner      *projections.Runner
	reorderWait time.Duration
	maxBatch    int
	hold        time.Duration // 0: no hold (see batcher)

	mu    sync.Mutex
	parts map[int]*partQueue
}

// partQueue is one partition's messages waiting for a transaction.
type partQueue struct {
	pending []*waiter
	busy    bool          // a leader is applying a batch
	arrived chan struct{} // signalled (capacity 1) on every submit
	// noWaitUntil: until then holes are filled at once (see batcher).
	noWaitUntil time.Time
	// timeouts counts the reorder waits that ran out (for tests).
	timeouts int
}

// reorderHoldoff is how long a partition goes without reorder waits after
// one ran out.
const reorderHoldoff = time.Second

type waiter struct {
	d    projections.Delivery
	at   time.Time     // when it arrived (see hold)
	done chan error    // the batch's outcome (capacity 1)
	lead chan struct{} // this waiter is to apply the next batch (capacity 1)
}

func newBatcher(runner *projections.Runner, reorderWait time.Duration, maxBatch int) *batcher {
	return &batcher{runner: runner, reorderWait: reorderWait, maxBatch: maxBatch, parts: map[int]*partQueue{}}
}

// submit applies d (of partition) in the partition's next batch and returns
// the batch's outcome. A handler whose message is not yet applied when ctx
// ends returns ctx's error; the message is then redelivered, which is
// harmless.
func (b *batcher) submit(ctx context.Context, partition int, d projections.Delivery) error {
	w := &waiter{d: d, at: time.Now(), done: make(chan error, 1), lead: make(chan struct{}, 1)}
	b.mu.Lock()
	q := b.parts[partition]
	if q == nil {
		q = &partQueue{arrived: make(chan struct{}, 1)}
		b.parts[partition] = q
	}
	q.pending = append(q.pending, w)
	select {
	case q.arrived <- struct{}{}:
	default:
	}
	if !q.busy {
		q.busy = true
		w.lead <- struct{}{}
	}
	b.mu.Unlock()
	for {
		select {
		case err := <-w.done:
			return err
		case <-w.lead:
			if ctx.Err() == nil && b.applyNext(ctx, partition, q) {
				continue
			}
			// A handler that gave up holding the lead must not apply the
			// others' messages with its ended context (they would all fail):
			// it hands the lead back to itself and on through abandon.
			w.lead <- struct{}{}
			b.abandon(q, w)
			return ctx.Err()
		case <-ctx.Done():
			b.abandon(q, w)
			return ctx.Err()
		}
	}
}

// applyNext applies, as one batch, the partition's pending messages that
// continue what the runner has committed (in feed order, at most maxBatch),
// tells each its outcome, and hands the lead to the first message still
// pending, if any. Messages behind a hole stay pending while the hole's
// message may still be on its way (up to reorderWait); after that they are
// applied all the same, and the runner fills the hole from the store: the
// message was lost, or is another worker's. It reports false, having taken
// nothing and kept the lead, when ctx ends first.
func (b *batcher) applyNext(ctx context.Context, partition int, q *partQueue) bool {
	now := time.Now()
	deadline := now.Add(b.reorderWait)
	b.mu.Lock()
	waits := now.After(q.noWaitUntil)
	b.mu.Unlock()
	if !waits {
		deadline = now
	}
	var batch []*waiter
	for {
		if ctx.Err() != nil {
			return false
		}
		b.mu.Lock()
		sortPending(q.pending)
		n := b.followers(partition, q.pending)
		wait := time.Until(deadline)
		gaveUp := false
		if n == 0 && wait <= 0 {
			n, gaveUp = len(q.pending), true // the hole is not filling itself
		}
		if n > 0 {
			if held := b.holding(q.pending); held > 0 {
				n, wait = 0, held
			} else if gaveUp && waits {
				q.timeouts++
				q.noWaitUntil = time.Now().Add(reorderHoldoff)
				waits = false
			}
		}
		if n > 0 {
			n = min(n, b.maxBatch)
			batch = slices.Clone(q.pending[:n])
			q.pending = slices.Delete(q.pending, 0, n)
		}
		b.mu.Unlock()
		if n > 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-q.arrived:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}

	ds := make([]projections.Delivery, len(batch))
	for i, w := range batch {
		ds[i] = w.d
	}
	err := b.handle(ctx, ds)
	for _, w := range batch {
		w.done <- err
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(q.pending) == 0 {
		q.busy = false
		return true
	}
	q.pending[0].lead <- struct{}{}
	return true
}

// handle applies a batch. A panic (a projector's bug) becomes the batch's
// error: the router would recover it and nack the leader's message alone,
// leaving the batch's other handlers blocked and the lead lost, and so the
// partition stalled in this process for good.
func (b *batcher) handle(ctx context.Context, ds []projections.Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("consume: panic applying %d messages: %v\n%s", len(ds), p, debug.Stack())
		}
	}()
	return b.runner.HandleDeliveries(ctx, ds)
}

// followers returns how many of the sorted pending messages continue, one
// after the other, what the runner has committed in the partition: each
// one's PrevPosition is at or below the last one's position (or the
// committed position). Callers hold b.mu.
func (b *batcher) followers(partition int, pending []*waiter) int {
	// Before any commit, only the partition's very first event (whose
	// PrevPosition is Start) is known to continue anything.
	at, _ := b.runner.Committed(partition)
	for i, w := range pending {
		if !at.Less(w.d.Event.Position) {
			continue // a copy of something committed
		}
		// A message without PrevPosition gives no hole to wait for.
		if w.d.PrevPosition != nil && at.Less(*w.d.PrevPosition) {
			return i
		}
		at = w.d.Event.Position
	}
	return len(pending)
}

// holding returns how much longer the partition's pending messages ws wait
// for company (see hold): 0 once any of them would be acted on (also one
// behind a hole: the messages before it go at once), they fill a batch, or
// the first of them arrived hold ago. Callers hold b.mu.
func (b *batcher) holding(ws []*waiter) time.Duration {
	if b.hold <= 0 || len(ws) >= b.maxBatch {
		return 0
	}
	first := ws[0].at
	for _, w := range ws {
		if b.runner.Handles(w.d.Event) {
			return 0
		}
		if w.at.Before(first) {
			first = w.at
		}
	}
	return max(time.Until(first.Add(b.hold)), 0)
}

// abandon takes w out of its partition's queue after its handler gave up. A
// leader that gives up passes the lead on, so the others are not stranded.
func (b *batcher) abandon(q *partQueue, w *waiter) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := slices.Index(q.pending, w)
	if i < 0 {
		return // already taken into a batch, whose outcome nobody reads
	}
	q.pending = slices.Delete(q.pending, i, i+1)
	select {
	case <-w.lead: // it was to lead: the next one leads instead
	default:
		return
	}
	if len(q.pending) == 0 {
		q.busy = false
		return
	}
	q.pending[0].lead <- struct{}{}
}

// sortPending orders waiters by their event's feed position.
func sortPending(ws []*waiter) {
	slices.SortStableFunc(ws, func(a, b *waiter) int {
		switch {
		case a.d.Event.Position.Less(b.d.Event.Position):
			return -1
		case b.d.Event.Position.Less(a.d.Event.Position):
			return 1
		}
		return 0
	})
}
