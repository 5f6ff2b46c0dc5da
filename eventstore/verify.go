package eventstore

import (
	"bytes"
	"context"
	"fmt"
	"sort"
)

// Break is one place where stored history does not match its hash chain.
type Break struct {
	Stream  string `json:"stream"`
	Version uint64 `json:"version"`
	Reason  string `json:"reason"`
}

// Reasons a Break reports.
const (
	ReasonHashMismatch  = "hash_mismatch"      // the event's content no longer matches its hash
	ReasonChainMismatch = "prev_hash_mismatch" // prev_hash is not the previous event's hash
	ReasonVersionGap    = "version_gap"        // versions are missing before this one
)

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	StreamsChecked int     `json:"streams_checked"`
	EventsChecked  int64   `json:"events_checked"`
	Breaks         []Break `json:"breaks"`
	// Heads is each checked stream's last version and hash, for comparing
	// against signed anchors.
	Heads map[string]Head `json:"-"`
}

// Head is a stream's last event as verification saw it.
type Head struct {
	Version uint64
	Hash    []byte
}

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// Filter selects one merchant, or every merchant when zero.
	Filter Filter
	// BatchSize is how many events one read fetches; 0 means 1000.
	BatchSize int
	// Progress, when set, is called after each batch with the events checked
	// so far. It runs on Verify's goroutine.
	Progress func(eventsChecked int64)
}

// Verify reads the global feed from the start, covering at least every event
// committed before it was called, and recomputes every stream's
// hash chain: each event's hash from its stored content, each prev_hash
// against the previous event's hash, and each version following the one
// before it. It reports every break by stream and version, in stream order.
// It needs memory for one Head per stream.
//
// A deleted tail or a whole deleted stream leaves every remaining chain
// intact; Verify alone cannot see that. Signed anchors over the stream heads
// catch it (see the audit package).
func Verify(ctx context.Context, store Store, opts VerifyOptions) (VerifyReport, error) {
	batch := opts.BatchSize
	if batch <= 0 {
		batch = 1000
	}
	batch = min(batch, MaxReadLimit)
	rep := VerifyReport{Heads: make(map[string]Head)}
	if err := store.Settle(ctx); err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	pos := Start
	for {
		events, err := store.ReadAll(ctx, pos, opts.Filter, batch)
		if err != nil {
			return rep, fmt.Errorf("verify: read after %s: %w", pos, err)
		}
		for _, e := range events {
			rep.check(e)
		}
		rep.EventsChecked += int64(len(events))
		if opts.Progress != nil && len(events) > 0 {
			opts.Progress(rep.EventsChecked)
		}
		if len(events) == 0 {
			break
		}
		pos = events[len(events)-1].Position
	}
	rep.StreamsChecked = len(rep.Heads)
	sort.Slice(rep.Breaks, func(i, j int) bool {
		a, b := rep.Breaks[i], rep.Breaks[j]
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return a.Version < b.Version
	})
	return rep, nil
}

func (r *VerifyReport) check(e RecordedEvent) {
	prev, seen := r.Heads[e.Stream]
	if !bytes.Equal(HashOf(e), e.Hash) {
		r.Breaks = append(r.Breaks, Break{Stream: e.Stream, Version: e.Version, Reason: ReasonHashMismatch})
	}
	switch {
	case !seen && e.Version != 1, seen && e.Version != prev.Version+1:
		r.Breaks = append(r.Breaks, Break{Stream: e.Stream, Version: e.Version, Reason: ReasonVersionGap})
	case seen && !bytes.Equal(e.PrevHash, prev.Hash), !seen && len(e.PrevHash) != 0:
		r.Breaks = append(r.Breaks, Break{Stream: e.Stream, Version: e.Version, Reason: ReasonChainMismatch})
	}
	r.Heads[e.Stream] = Head{Version: e.Version, Hash: e.Hash}
}
