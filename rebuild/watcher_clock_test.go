package rebuild_test

import (
	"context"
	"testing"

	"pos/projections/projtest"
	"pos/rebuild"
)

// A swap recorded by a process whose clock was ahead (another API instance,
// or the `pos rebuild` CLI on an operator's machine) hides every later swap
// from the Watchers until the clocks catch up: max(finished_at) does not move.
func TestWatcherSeesASwapAfterOneFromAClockAhead(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 1, 2)
	// The earlier rebuild, finished on a host whose clock is 2 minutes ahead.
	exec(t, env.URL, `INSERT INTO projection_rebuilds (rebuild_id, projections, state, events_done, started_at, updated_at, finished_at)
	                  VALUES ($1, '{transactions}', 'done', 7, now() + interval '2 min', now() + interval '2 min', now() + interval '2 min')`, projtest.NewID(t))
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	w, err := rebuild.NewWatcher(ctx, env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	calls, done := watch(ctx, w)
	// A minute later in real time, this process rebuilds and swaps.
	if _, err := newRebuilder(t, env, rebuild.Options{}).Run(ctx, "transactions", nil); err != nil {
		t.Fatal(err)
	}
	n := waitCalls(calls)
	stop()
	<-done
	if n != 1 {
		t.Fatalf("the Watcher saw %d swaps after a real swap, want 1: serving processes keep the pre-swap rendered bodies and cache entries", n)
	}
}
