package rebuild_test

import (
	"context"
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

// A migration applied while a rebuild runs (after its shadow tables were
// made LIKE the live ones) fails the rebuild at its swap, which would
// otherwise undo the migration on the tables it swaps in; the live tables
// stay as they are, and the rebuild can run again.
func TestRebuildRefusesToSwapAcrossAMigration(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 1, 2)
	if _, err := liveRunner(t, env).Catchup(t.Context(), eventstore.Start); err != nil {
		t.Fatal(err)
	}
	calls := 0
	b := newRebuilder(t, env, rebuild.Options{Count: func(context.Context, eventstore.Position) (uint64, error) {
		if calls++; calls == 2 { // after the shadow tables were made
			exec(t, env.URL, `ALTER TABLE rm_merchant_settings ADD COLUMN migrated_meanwhile int`)
		}
		return 0, nil
	}})
	p, err := b.Run(t.Context(), "merchant_settings", nil)
	if !errors.Is(err, rebuild.ErrSchemaChanged) || p.State != "failed" {
		t.Fatalf("a rebuild across a migration: %+v, %v; want it failed with ErrSchemaChanged", p, err)
	}
	calls = -100 // no more migrations: the shadow is made like the migrated table
	if p, err := b.Run(t.Context(), "merchant_settings", nil); err != nil || p.State != "done" {
		t.Fatalf("the rebuild run again: %+v, %v; want done", p, err)
	}
}
