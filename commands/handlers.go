// Package commands holds the application's command handlers, one command per
// file. Each handler loads its aggregate from the event store, lets the
// aggregate decide, and appends the resulting events with the version it
// loaded as the expected version:
//
//   - without If-Match, a concurrency conflict reloads and decides again, a
//     bounded number of times with jittered backoff, then fails with
//     eventstore.ErrConcurrency (409 concurrency_conflict);
//   - with If-Match, a version other than the current one fails with
//     ErrVersionMismatch (412), and so does a conflict: the client decided
//     on a version that is gone.
//
// Time and ids come in from Deps, never from inside an aggregate. Handlers
// are safe for concurrent use; each call is one unit of work.
package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/sethvargo/go-retry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"pos/domain"
	"pos/eventstore"
	"pos/internal/telemetry"
)

// ErrVersionMismatch reports an If-Match version that is not the aggregate's
// current version.
var ErrVersionMismatch = errors.New("commands: If-Match version is stale")

// Deps are the handlers' collaborators that are not the store; shared by
// every Handlers value.
type Deps struct {
	// Now is the clock.
	Now func() time.Time
	// NewID returns a fresh UUIDv7 (event, line and payment ids).
	NewID func() uuid.UUID
	// Codes allocates human-readable transaction codes.
	Codes *Codes
	// Retries bounds the reload-and-decide attempts after a conflict; 0
	// means 30.
	Retries uint64
	// OnConflict, when set, is called with the stream category each time
	// an append loses a race and the command is decided again (a metric of
	// contention, such as a popular SKU's ledger). It must be cheap and
	// safe for concurrent use.
	OnConflict func(category string)
	// Ledgers, when set, is the store stock ledgers are read from and
	// appended to, whatever store the Handlers were built over: a
	// request's transaction (idempotency keys on PostgreSQL) must not hold
	// a popular SKU's ledger until it commits, and a reservation that
	// outlives a failed request is released by the stock process manager's
	// timeout, or reused by the request's retry (reservations are keyed by
	// transaction). Nil means the Handlers' store.
	Ledgers eventstore.Store
	// Locks, when set, serializes commands on one stock ledger within this
	// process (see StreamLocks).
	Locks *StreamLocks
	// Snapshots, when set, keeps loaded aggregates of the kinds that can be
	// cloned (stock ledgers, transactions) in memory; see Snapshots.
	Snapshots *Snapshots
	// TrustSnapshots lets a command decide on a snapshot without first
	// reading the store to confirm it (see Snapshots): an append that lands
	// at the expected version then proves it current, and any other
	// outcome (a refusal, nothing to append, a lost race, an append the
	// store takes for a retry of an earlier one) is decided again on a
	// confirmed load. Reads that answer on their own (a checkout's
	// shortage check, Ledger) never trust a snapshot. A snapshot must hold
	// only committed events: the state after an append is kept through
	// eventstore.AfterCommit, so a store bound to a request's transaction
	// must be an eventstore.TxBound whose owner calls Committed; kinds
	// used in place (stock ledgers) must be on a store whose appends
	// commit on their own (Ledgers is the server's pool).
	TrustSnapshots bool
	// Tracer, when set, gives each command a span ("command <category>",
	// a child of its context's) and each append one inside it.
	Tracer trace.Tracer
}

// tracer is Deps.Tracer, or one whose spans record nothing.
func (d *Deps) tracer() trace.Tracer {
	if d.Tracer == nil {
		return noop.Tracer{}
	}
	return d.Tracer
}

// confirming returns handlers like h that decide only on aggregates read
// from the store, for a command whose decide has effects that an attempt
// decided again would leave behind (Checkout reserves stock as it
// decides): decided on a stale snapshot, they would act on a sale that no
// longer is.
func (h *Handlers) confirming() *Handlers {
	if !h.deps.TrustSnapshots {
		return h
	}
	d := *h.deps
	d.TrustSnapshots = false
	return &Handlers{store: h.store, deps: &d, outside: h.outside}
}

// Handlers runs commands against one event store view (the server's, or one
// bound to a request's transaction). Build one per store with New; it is
// cheap.
type Handlers struct {
	store eventstore.Store
	deps  *Deps
	// outside: store is Deps.Ledgers, apart from the caller's; each
	// command first passes the context's guard (WithOutsideWriteGuard).
	outside bool
}

// New returns handlers over store.
func New(store eventstore.Store, deps *Deps) *Handlers {
	return &Handlers{store: store, deps: deps}
}

// Meta is who sends a command and in which context; it becomes every
// event's metadata.
type Meta struct {
	MerchantID    uuid.UUID
	Actor         string
	Role          string
	CorrelationID string
	CausationID   string
	TraceParent   string
	TraceState    string
	// BranchIDs, when not empty, are the only branches the caller may act
	// on (a cashier's token restriction).
	BranchIDs []uuid.UUID
	// IfMatch, when set, is the version the client decided on.
	IfMatch *uint64
	// DeriveIDsFrom, when set, makes the ids of the events appended
	// name-based UUIDs of it, the stream and the event's index, instead of
	// fresh ones. Process managers set it to their source event's id, so a
	// redelivered source that decides the same events again appends
	// nothing: the event store recognises the ids.
	DeriveIDsFrom uuid.UUID
	// IDSeed, when set, makes the ids a command generates for what the
	// client left unnamed (a sale, line, payment, refund, receipt…)
	// name-based UUIDs of it and the id's kind, instead of fresh ones. The
	// API sets it from a request's Idempotency-Key and content, so a retry
	// of that request names the same entities: a first attempt whose effects
	// outlived its failure (a stock ledger appends outside the request's
	// transaction; EventStoreDB has none) is then recognised, not repeated.
	IDSeed uuid.UUID
	// At, when set, is when the command happened, if not now: an offline
	// terminal's time, carried by /v1/pos/sync, so a sale rung up offline
	// falls on the business day it happened. Zero means Deps.Now.
	At time.Time
}

// now is the command's time (see Meta.At).
func (h *Handlers) now(meta Meta) time.Time {
	if !meta.At.IsZero() {
		return meta.At
	}
	return h.deps.Now()
}

// newID is the id a command gives an entity of kind the client did not
// name (see Meta.IDSeed).
func (h *Handlers) newID(meta Meta, kind string) uuid.UUID {
	if meta.IDSeed != uuid.Nil {
		return uuid.NewSHA1(meta.IDSeed, []byte(kind))
	}
	return h.deps.NewID()
}

// Result is where a command's events landed.
type Result struct {
	Version  uint64
	Position eventstore.Position
}

// kind describes one aggregate type to the executor: its stream category,
// how to make an empty one, and how its events cross the store boundary.
type kind[A any, E any] struct {
	category string
	// schema is the schema version new events are written in; it must be
	// the one the event registry declares current.
	schema  int
	blank   func() A
	apply   func(A, E) error
	version func(A) uint64
	decode  func(eventType string, data []byte) (E, error)
	typeOf  func(E) string
	// clone, when set, copies an aggregate deeply, which lets load keep
	// it in Deps.Snapshots.
	clone func(A) A
	// serialize makes execute hold Deps.Locks' lock of the stream around
	// each load–decide–append. With Locks set, the snapshot is then used
	// and updated in place, under the lock, instead of cloned in and out
	// (a popular SKU's ledger remembers every sale: a clone per command
	// would grow with its history); see owned.
	serialize bool
	// copyResult, for a kind used in place, makes execute return a clone
	// of the aggregate (made under the lock); without it execute returns
	// the zero value, for callers that need only the Result.
	copyResult bool
}

// owned reports whether h uses k's snapshots in place, under the stream
// lock.
func owned[A any, E any](h *Handlers, k kind[A, E]) bool {
	return k.serialize && h.deps.Locks != nil && h.deps.Snapshots != nil && k.clone != nil
}

// execute is the load–decide–append cycle shared by every command. decide
// sees the aggregate as loaded (version 0 when the stream is new) and returns
// the events to append; none means nothing changes. execute returns the
// aggregate with the new events applied (as loaded, when the store took
// them for a retry of an earlier append of the same ids).
func execute[A any, E any](ctx context.Context, h *Handlers, k kind[A, E], meta Meta, id string, decide func(A) ([]E, error)) (_ A, _ Result, err error) {
	stream := eventstore.StreamName(k.category, meta.MerchantID.String(), id)
	ctx, span := h.deps.tracer().Start(ctx, "command "+k.category, trace.WithAttributes(attribute.String("pos.stream", stream)))
	// What the aggregate decided against the caller (a 4xx) is recorded on
	// the span but is no failure, and neither is losing to another writer.
	var refused error
	judged := func(a A) ([]E, error) {
		events, err := decide(a)
		refused = err
		return events, err
	}
	defer func() {
		declined := refused != nil && errors.Is(err, refused) || errors.Is(err, ErrVersionMismatch) || errors.Is(err, eventstore.ErrConcurrency)
		telemetry.EndSpan(span, err, !declined)
	}()
	if h.outside {
		if err := guardOutside(ctx); err != nil {
			var zero A
			return zero, Result{}, err
		}
	}
	retries := h.deps.Retries
	if retries == 0 {
		retries = 30
	}
	backoff := retry.WithMaxRetries(retries, retry.WithCappedDuration(100*time.Millisecond,
		retry.WithFullJitter(retry.NewExponential(2*time.Millisecond))))

	inPlace := owned(h, k)
	var out A
	var res attemptResult
	// trust is spent by the first load that was not confirmed: whatever
	// that attempt cannot prove by appending is decided again.
	trust := h.deps.TrustSnapshots
	err = retry.Do(ctx, backoff, func(ctx context.Context) error {
		if k.serialize {
			defer h.deps.Locks.lock(stream)()
		}
		for {
			var confirmed bool
			var err error
			out, res, confirmed, err = attempt(ctx, h, k, meta, stream, inPlace, trust, judged)
			if confirmed || err == nil && res.appended {
				return err
			}
			trust = false
		}
	})
	return out, res.Result, err
}

// hidden reports a refusal that says the caller may not see the aggregate:
// one not on its branches, or one that does not exist (a missing entity
// inside an existing aggregate, such as an unknown line, is not).
func hidden(err error, version uint64) bool {
	return errors.Is(err, ErrForbidden) || version == 0 && errors.Is(err, domain.ErrNotFound)
}

// attemptResult is one attempt's Result, and whether it appended.
type attemptResult struct {
	Result
	appended bool
}

// attempt is one load–decide–append of execute; out is what execute returns.
// confirmed reports whether the aggregate was read from the store (or a
// snapshot it confirmed) rather than trusted from a snapshot.
func attempt[A any, E any](ctx context.Context, h *Handlers, k kind[A, E], meta Meta, stream string, inPlace, trust bool, decide func(A) ([]E, error)) (out A, res attemptResult, confirmed bool, err error) {
	agg, pos, confirmed, err := load(ctx, h.store, h.deps.Snapshots, k, stream, inPlace, trust)
	if err != nil {
		return out, res, true, err
	}
	// What the caller gets: the aggregate itself, or, when it is the
	// shared snapshot, a copy made while the lock is held.
	result := func() A {
		if !inPlace {
			return agg
		}
		var zero A
		if k.copyResult {
			return k.clone(agg)
		}
		return zero
	}
	version := k.version(agg)
	// decide must have no effects of its own (one that has, Checkout's,
	// checks If-Match before them).
	events, err := decide(agg)
	// A stale If-Match answers 412 rather than what the command decided,
	// unless the caller may not see the aggregate at all (RFC 9110 checks
	// preconditions after authorization): a missing transaction is 404,
	// another branch's 403. Settings and stock ledgers exist before their
	// first event, so version 0 is a version to match too.
	if meta.IfMatch != nil && *meta.IfMatch != version && !hidden(err, version) {
		return out, res, confirmed, ErrVersionMismatch
	}
	if err != nil {
		return out, res, confirmed, err
	}
	if len(events) == 0 {
		res.Result = Result{Version: version, Position: pos}
		return result(), res, confirmed, nil
	}
	data, err := envelopes(h, k, meta, stream, events)
	if err != nil {
		return out, res, confirmed, err
	}
	actx, span := h.deps.tracer().Start(ctx, "append", trace.WithAttributes(attribute.String("pos.stream", stream),
		attribute.Int64("pos.expected_version", int64(version)), attribute.Int("pos.events", len(data))))
	ar, err := h.store.Append(actx, stream, eventstore.Exact(version), data...)
	telemetry.EndSpan(span, err, err != nil && !errors.Is(err, eventstore.ErrConcurrency))
	if errors.Is(err, eventstore.ErrStaleTransaction) {
		if h.deps.OnConflict != nil {
			h.deps.OnConflict(k.category)
		}
		// Only a new transaction can succeed: the caller's to retry, on a
		// confirmed load (this transaction can read no more).
		h.deps.Snapshots.remove(stream)
		return out, res, true, err
	}
	if errors.Is(err, eventstore.ErrConcurrency) {
		if h.deps.OnConflict != nil {
			h.deps.OnConflict(k.category)
		}
		if meta.IfMatch != nil {
			return out, res, confirmed, ErrVersionMismatch
		}
		return out, res, confirmed, retry.RetryableError(err)
	}
	if err != nil {
		return out, res, confirmed, err
	}
	if ar.Version != version+uint64(len(events)) {
		// The store took the append as a retry of an earlier one with the
		// same event ids (a process manager's redelivered source): those
		// events are not on top of agg, which they may precede or which
		// may lag the store. Forget the snapshot; a trusted one is decided
		// again on a confirmed load, and a confirmed agg is returned as
		// loaded.
		h.deps.Snapshots.remove(stream)
		if !confirmed {
			return out, res, false, nil
		}
		res = attemptResult{Result: Result{Version: ar.Version, Position: ar.Position}, appended: true}
		return result(), res, true, nil
	}
	for _, e := range events {
		if err := k.apply(agg, e); err != nil {
			h.deps.Snapshots.remove(stream)
			return out, res, confirmed, fmt.Errorf("apply new %s event: %w", k.typeOf(e), err)
		}
	}
	snap := snapshot{agg: agg, version: ar.Version, lastID: data[len(data)-1].ID, pos: ar.Position}
	if inPlace {
		h.deps.Snapshots.put(stream, snap)
	} else if k.clone != nil && h.deps.Snapshots != nil {
		// The next command starts from here, once it is committed.
		snap.agg = k.clone(agg)
		eventstore.AfterCommit(h.store, func() { h.deps.Snapshots.put(stream, snap) })
	}
	res = attemptResult{Result: Result{Version: ar.Version, Position: ar.Position}, appended: true}
	return result(), res, confirmed, nil
}

// load rebuilds an aggregate from its stream and returns it with the
// position of its last event. With snaps and a kind that clones, it starts
// from a snapshot that the store confirms (the snapshot's last event is
// still there, with the same id) and keeps the result as the new snapshot.
// inPlace (the caller holds the stream's lock, see kind.serialize) uses and
// keeps the snapshot's aggregate itself rather than copies. trust uses a
// snapshot without reading the store at all (see Deps.TrustSnapshots);
// confirmed is then false.
func load[A any, E any](ctx context.Context, store eventstore.Store, snaps *Snapshots, k kind[A, E], stream string, inPlace, trust bool) (agg A, pos eventstore.Position, confirmed bool, err error) {
	if k.clone == nil {
		snaps = nil
	}
	clone := k.clone
	if inPlace {
		clone = func(a A) A { return a }
	}
	agg = k.blank()
	// A read inside a caller's transaction may see its own uncommitted
	// events: what it loaded is kept once the transaction commits.
	keep := func(snap snapshot) {
		eventstore.AfterCommit(store, func() { snaps.put(stream, snap) })
	}
	var lastID uuid.UUID
	from := uint64(1)
	if snap, ok := snaps.get(stream); ok {
		if trust && k.version(snap.agg.(A)) == snap.version {
			return clone(snap.agg.(A)), snap.pos, false, nil
		}
		batch, err := store.ReadStream(ctx, stream, snap.version, 1000)
		if err != nil {
			return agg, pos, true, fmt.Errorf("load %s: %w", stream, err)
		}
		if len(batch) > 0 && batch[0].ID == snap.lastID && batch[0].Version == snap.version && k.version(snap.agg.(A)) == snap.version {
			agg, pos, lastID = clone(snap.agg.(A)), snap.pos, snap.lastID
			if err := applyBatch(k, agg, stream, batch[1:], &pos, &lastID); err != nil {
				snaps.remove(stream) // in place, it may be half applied
				return agg, pos, true, err
			}
			if len(batch) < 1000 {
				keep(snapshot{agg: clone(agg), version: k.version(agg), lastID: lastID, pos: pos})
				return agg, pos, true, nil
			}
			from = batch[len(batch)-1].Version + 1
		}
	}
	for {
		batch, err := store.ReadStream(ctx, stream, from, 1000)
		if err != nil {
			return agg, pos, true, fmt.Errorf("load %s: %w", stream, err)
		}
		if err := applyBatch(k, agg, stream, batch, &pos, &lastID); err != nil {
			return agg, pos, true, err
		}
		if len(batch) < 1000 {
			if snaps != nil {
				keep(snapshot{agg: clone(agg), version: k.version(agg), lastID: lastID, pos: pos})
			}
			return agg, pos, true, nil
		}
		from = batch[len(batch)-1].Version + 1
	}
}

func applyBatch[A any, E any](k kind[A, E], agg A, stream string, batch []eventstore.RecordedEvent, pos *eventstore.Position, lastID *uuid.UUID) error {
	for _, re := range batch {
		e, err := k.decode(re.Type, re.Data)
		if err != nil {
			return fmt.Errorf("load %s: event %d: %w", stream, re.Version, err)
		}
		if err := k.apply(agg, e); err != nil {
			return fmt.Errorf("load %s: apply event %d: %w", stream, re.Version, err)
		}
		*pos, *lastID = re.Position, re.ID
	}
	return nil
}

// envelopes turns domain events into events to append, with fresh ids, the
// registered schema version and the command's metadata.
func envelopes[A any, E any](h *Handlers, k kind[A, E], meta Meta, stream string, events []E) ([]eventstore.EventData, error) {
	md := eventstore.Metadata{
		MerchantID:    meta.MerchantID.String(),
		Actor:         meta.Actor,
		Role:          meta.Role,
		CorrelationID: meta.CorrelationID,
		CausationID:   meta.CausationID,
		TraceParent:   meta.TraceParent,
		TraceState:    meta.TraceState,
	}
	out := make([]eventstore.EventData, len(events))
	for i, e := range events {
		data, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", k.typeOf(e), err)
		}
		id := h.deps.NewID()
		if meta.DeriveIDsFrom != uuid.Nil {
			id = uuid.NewSHA1(meta.DeriveIDsFrom, fmt.Appendf(nil, "%s/%d", stream, i))
		}
		out[i] = eventstore.EventData{ID: id, Type: k.typeOf(e), SchemaVersion: k.schema, Data: data, Metadata: md}
	}
	return out, nil
}
