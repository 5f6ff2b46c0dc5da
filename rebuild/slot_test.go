package rebuild_test

import (
	"errors"
	"testing"

	"pos/eventstore"
	"pos/projections/projtest"
	"pos/rebuild"
)

// A rebuild that has returned (done, swapped in) no longer holds the slot:
// the next rebuild, started right after, must not be refused as busy.
func TestNextRebuildRightAfterOneEndedIsNotBusy(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 1, 2)
	if _, err := liveRunner(t, env).Catchup(t.Context(), eventstore.Start); err != nil {
		t.Fatal(err)
	}
	b := newRebuilder(t, env, rebuild.Options{})
	busy := 0
	for i := range 20 {
		p, err := b.Run(t.Context(), "merchant_settings", nil)
		if errors.Is(err, rebuild.ErrBusy) {
			busy++
			t.Logf("run %d: %v (the previous rebuild had returned done)", i, err)
			continue
		}
		if err != nil || p.State != "done" {
			t.Fatalf("run %d: %+v %v", i, p, err)
		}
	}
	if busy > 0 {
		t.Fatalf("%d of 20 back-to-back rebuilds refused with ErrBusy although none was running", busy)
	}
}
