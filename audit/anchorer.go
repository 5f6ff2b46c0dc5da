package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"pos/eventstore"
)

// defaultFullEvery is how many anchors of a merchant a full anchor covers
// at most: after that many deltas the next anchor stores every head again,
// which bounds how many rows rebuilding an anchor reads.
const defaultFullEvery = 60

// anchorBatch is how many events one feed read fetches.
const anchorBatch = 5000

// Anchorer periodically signs and stores an anchor for each merchant whose
// history moved since its last anchor (see the package doc).
//
// It follows the global feed (every merchant) and keeps each stream's head
// in memory: one small entry per stream, as Verify does. On first seeing a
// merchant it loads the merchant's latest anchor and starts from its heads,
// and a head only ever moves to a higher version: an anchor never forgets
// a stream or events that a previous anchor covered, even if they were
// deleted from the store meanwhile. And it moves only along the chain: to
// the event that names the head's hash as its predecessor's, so a stream
// whose anchored tail was cut and written again (the hash is unkeyed: a
// superuser can re-chain a rewrite) keeps its anchored head, and
// verification keeps reporting the rewrite instead of the next anchor
// signing it. Several Anchorers (one per API
// instance) may run against one database: writers of a merchant queue on an
// advisory lock, and one that finds a newer anchor than its own reloads it.
//
// An Anchorer is safe for concurrent use; AnchorOnce calls run one at a time.
type Anchorer struct {
	store     eventstore.Store
	ledger    *Ledger
	key       Key
	log       *slog.Logger
	now       func() time.Time
	fullEvery int

	mu        sync.Mutex
	pos       eventstore.Position
	merchants map[string]*merchantState
}

// merchantState is what an Anchorer knows of one merchant.
type merchantState struct {
	// heads is every stream head: the latest anchor's, moved forward by
	// the feed.
	heads map[string]eventstore.Head
	// dirty are the streams whose head moved since the latest anchor.
	dirty map[string]struct{}
	// last is the position of the merchant's last event seen.
	last eventstore.Position
	// seq and sig are the latest anchor's (0 and nil before the first).
	seq int64
	sig []byte
	// sinceFull counts the delta anchors since the last full one.
	sinceFull int
	// forceFull makes the next anchor full and due (a new chain after an
	// anchor that did not verify).
	forceFull bool
	// unloaded: loading the latest anchor failed; heads holds only what
	// the feed showed since, and is rebased before the next anchor.
	unloaded bool
	// broken are the streams whose history no longer continues their
	// head (logged once each).
	broken map[string]bool
}

// NewAnchorer returns an Anchorer that reads store, signs with key, writes
// to ledger and logs each anchor to log.
func NewAnchorer(store eventstore.Store, ledger *Ledger, key Key, log *slog.Logger) *Anchorer {
	return &Anchorer{
		store: store, ledger: ledger, key: key, log: log,
		now:       time.Now,
		fullEvery: defaultFullEvery,
		merchants: make(map[string]*merchantState),
	}
}

// Run anchors at once, then every interval, until ctx ends. A failed round
// is logged and the next tick tries again.
func (a *Anchorer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := a.AnchorOnce(ctx); err != nil && ctx.Err() == nil {
			a.log.ErrorContext(ctx, "audit anchor round failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// AnchorOnce reads the feed since its previous call (from the start on the
// first), covering every append committed before the call, and anchors
// each merchant whose heads moved. It returns the anchors written, without
// their Heads, in merchant order. A merchant whose anchor fails is retried
// at the next call; the others are still anchored.
func (a *Anchorer) AnchorOnce(ctx context.Context) ([]Anchor, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.store.Settle(ctx); err != nil {
		return nil, fmt.Errorf("audit anchor: %w", err)
	}
	for {
		events, err := a.store.ReadAll(ctx, a.pos, eventstore.Filter{}, anchorBatch)
		if err != nil {
			return nil, fmt.Errorf("audit anchor: read after %s: %w", a.pos, err)
		}
		for _, e := range events {
			st := a.state(ctx, e.Metadata.MerchantID)
			cur, ok := st.heads[e.Stream]
			switch {
			case ok && e.Version <= cur.Version:
			case ok && (e.Version != cur.Version+1 || !bytes.Equal(e.PrevHash, cur.Hash)):
				a.breakOff(ctx, st, e, cur)
			default:
				st.heads[e.Stream] = eventstore.Head{Version: e.Version, Hash: e.Hash}
				st.dirty[e.Stream] = struct{}{}
			}
			if st.last.Less(e.Position) {
				st.last = e.Position
			}
			a.pos = e.Position
		}
		if len(events) < anchorBatch {
			break
		}
	}
	var out []Anchor
	var errs []error
	for _, m := range slices.Sorted(maps.Keys(a.merchants)) {
		st := a.merchants[m]
		if st.unloaded {
			if err := a.reload(ctx, m, st); err != nil {
				errs = append(errs, fmt.Errorf("audit anchor: load the anchors of %s: %w", m, err))
				continue
			}
			st.unloaded = false
		}
		if len(st.dirty) == 0 && !st.forceFull {
			continue
		}
		an, wrote, err := a.anchor(ctx, m, st)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !wrote {
			continue
		}
		a.log.InfoContext(ctx, LogMessage, an.LogAttrs()...)
		out = append(out, an)
	}
	return out, errors.Join(errs...)
}

// breakOff keeps the head cur of e's stream, which e does not continue (a
// version skipped, or another predecessor than the anchored event), and
// logs it once per stream: verification reports the stream against the
// anchor for as long as its history differs from what was anchored.
func (a *Anchorer) breakOff(ctx context.Context, st *merchantState, e eventstore.RecordedEvent, cur eventstore.Head) {
	if st.broken[e.Stream] {
		return
	}
	if st.broken == nil {
		st.broken = map[string]bool{}
	}
	st.broken[e.Stream] = true
	a.log.ErrorContext(ctx, "audit anchor: a stream's history no longer continues its anchored head; its head stays as anchored",
		"stream", e.Stream, "anchored_version", cur.Version, "event_version", e.Version, "event_id", e.ID.String())
}

// state returns what the Anchorer knows of merchant, loading its latest
// anchor on first sight. A merchant whose anchors cannot be loaded (the
// database failed) still collects what the feed shows, and is loaded again
// before it is next anchored, so that one merchant never holds up the
// others' anchors.
func (a *Anchorer) state(ctx context.Context, merchant string) *merchantState {
	if st, ok := a.merchants[merchant]; ok {
		return st
	}
	st := &merchantState{heads: map[string]eventstore.Head{}, dirty: map[string]struct{}{}}
	if err := a.reload(ctx, merchant, st); err != nil {
		st.unloaded = true // reload merges the heads collected meanwhile
	}
	a.merchants[merchant] = st
	return st
}

// reload rebases st on the merchant's latest stored anchor: its heads, moved
// forward by every higher version st has seen. An anchor that does not
// verify with the Anchorer's key (forged, altered, or signed by a key since
// replaced), or that cannot be read (a malformed row), is not built upon:
// the error log says so, the heads come from the latest anchor that does
// verify (if any), and the next anchor is full, starting a new chain of
// deltas.
func (a *Anchorer) reload(ctx context.Context, merchant string, st *merchantState) error {
	latest, err := a.ledger.Latest(ctx, merchant)
	malformed, unreadable := errors.AsType[*MalformedAnchorError](err)
	if unreadable {
		// Chain on to the latest row as it is; its heads are not known.
		latest = &Anchor{MerchantID: merchant}
		if latest.Seq, latest.Signature, err = lastRow(ctx, a.ledger.pool, merchant); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	if st.seq != 0 && (latest == nil || latest.Seq < st.seq) {
		// Anchors this Anchorer wrote are gone: removed behind the
		// triggers' back. Anchor again at once, from memory, which still
		// holds every head they covered.
		a.log.ErrorContext(ctx, "audit anchor: anchors are missing from the ledger; anchoring again",
			"merchant", merchant, "last_written_seq", st.seq)
		st.forceFull = true
	}
	if latest == nil {
		st.seq, st.sig = 0, nil
		return nil
	}
	st.seq, st.sig, st.sinceFull = latest.Seq, latest.Signature, latest.deltas
	base := latest
	if unreadable || !latest.verifies(a.key.Public()) {
		before := latest.Seq
		if unreadable {
			before = malformed.Seq
			a.log.ErrorContext(ctx, "audit anchor: a stored anchor cannot be read; the next anchor starts a new chain",
				"merchant", merchant, "seq", malformed.Seq, "err", malformed.Err)
		} else {
			a.log.ErrorContext(ctx, "audit anchor: the latest stored anchor does not verify with this key; the next anchor starts a new chain",
				"merchant", merchant, "seq", latest.Seq, "key_id", latest.KeyID, "own_key_id", a.key.Public().ID())
		}
		st.forceFull = true
		if base, err = a.ledger.LatestValid(ctx, merchant, a.key.Public(), before); err != nil {
			return err
		}
		if base == nil && unreadable {
			// Anchoring on from the feed alone would forget what the rows
			// before it anchored (a cut tail among them): the merchant is
			// not anchored, and the unreadable row stays the latest, which
			// verification reports, until an operator looks.
			return fmt.Errorf("audit anchor: %s: no anchor before the unreadable row %d verifies; not anchoring on the feed alone", merchant, malformed.Seq)
		}
		if base == nil {
			return nil
		}
	}
	merged := cloneHeads(base.Heads)
	dirty := map[string]struct{}{}
	for s, h := range st.heads {
		b, ok := base.Heads[s]
		if ok && h.Version <= b.Version {
			continue
		}
		if ok {
			// A head the feed moved without this anchor to chain from
			// (collected while it could not be loaded, or past another
			// Anchorer's): it moves only if the anchored event is still
			// there, as in AnchorOnce.
			if kept, err := a.stillAnchored(ctx, s, b); err != nil {
				return err
			} else if !kept {
				a.log.ErrorContext(ctx, "audit anchor: a stream's anchored event is no longer stored as anchored; its head stays as anchored",
					"stream", s, "anchored_version", b.Version)
				continue
			}
		}
		merged[s] = h
		dirty[s] = struct{}{}
	}
	st.heads, st.dirty = merged, dirty
	if st.last.Less(base.Position) {
		st.last = base.Position
	}
	return nil
}

// stillAnchored reports whether stream's event at head's version is stored
// with head's hash.
func (a *Anchorer) stillAnchored(ctx context.Context, stream string, head eventstore.Head) (bool, error) {
	events, err := a.store.ReadStream(ctx, stream, head.Version, 1)
	if err != nil {
		return false, fmt.Errorf("audit anchor: read %s at %d: %w", stream, head.Version, err)
	}
	return len(events) == 1 && events[0].Version == head.Version && bytes.Equal(events[0].Hash, head.Hash), nil
}

// anchor signs and stores one anchor of merchant from st. wrote is false
// when another Anchorer had already anchored everything st knows.
func (a *Anchorer) anchor(ctx context.Context, merchant string, st *merchantState) (an Anchor, wrote bool, err error) {
	tx, err := a.ledger.pool.Begin(ctx)
	if err != nil {
		return Anchor{}, false, fmt.Errorf("audit: anchor %s: %w", merchant, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	seq, _, err := lockMerchant(ctx, tx, merchant)
	if err != nil {
		return Anchor{}, false, err
	}
	if seq != st.seq { // another Anchorer wrote one meanwhile: build on it
		if err := a.reload(ctx, merchant, st); err != nil {
			return Anchor{}, false, err
		}
		if seq != st.seq {
			return Anchor{}, false, fmt.Errorf("audit: anchor %s: latest anchor moved from %d to %d while locked", merchant, st.seq, seq)
		}
		if len(st.dirty) == 0 && !st.forceFull {
			return Anchor{}, false, nil
		}
	}
	leaves := SortedLeaves(st.heads)
	root, err := MerkleRoot(leaves)
	if err != nil {
		return Anchor{}, false, err
	}
	an = Anchor{MerchantID: merchant, Position: st.last, CreatedAt: truncateMicro(a.now()),
		Streams: uint64(len(leaves)), Root: root, Prev: chainHash(st.sig)}
	for _, l := range leaves {
		an.Events += l.Version
	}
	an.sign(a.key)
	full := st.seq == 0 || st.forceFull || st.sinceFull+1 >= a.fullEvery || 2*len(st.dirty) >= len(leaves)
	stored := leaves
	if !full {
		stored = slices.DeleteFunc(slices.Clone(leaves), func(l Leaf) bool {
			_, moved := st.dirty[l.Stream]
			return !moved
		})
	}
	if err := insert(ctx, tx, &an, full, stored); err != nil {
		return Anchor{}, false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return Anchor{}, false, fmt.Errorf("audit: anchor %s: commit: %w", merchant, err)
	}
	st.seq, st.sig, st.dirty, st.forceFull = an.Seq, an.Signature, map[string]struct{}{}, false
	if full {
		st.sinceFull = 0
	} else {
		st.sinceFull++
	}
	return an, true, nil
}
