// Package pgstore is the PostgreSQL event store, the local default backend of
// eventstore.Store. The schema is migrations/00001_event_store.sql.
//
// Global order. Events are ordered by (transaction_id, global_position): the
// appending transaction's id, then a sequence number. Sequence numbers are
// taken when a row is inserted, not when it commits, so a reader ordering by
// the sequence alone would pass an event whose transaction commits late and
// never see it (the hazard of every SERIAL-cursor event store). ReadAll
// instead reads only transactions older than the oldest one still running
// (pg_snapshot_xmin): all of those have finished, so nothing can later appear
// before a position a reader has passed. The price: a transaction left open
// anywhere in the cluster holds the feed back until it ends, which is why
// appends are short and nothing else should keep transactions open. Only
// transactions that hold a transaction id count (read-only ones do not), but
// the horizon is cluster-wide: other databases' writers count too. Pooled
// connections end a transaction left idle for 30 s.
//
// AppendTx assumes READ COMMITTED: under REPEATABLE READ a retry in the same
// transaction never sees the stream move, and SERIALIZABLE may fail with
// serialization errors the store does not translate.
//
// Appends never lock a shared row: versions are checked by the (stream_name,
// version) unique key, positions come from a sequence, and the stream head
// needed for the hash chain is cached in memory after each append, so the
// usual load–decide–append cycle costs one INSERT.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/eventstore"
	"pos/internal/pgpool"
)

// maxAnyRetries bounds the retries of an Any append that races Exact writers.
const maxAnyRetries = 10

// headCacheSize is how many stream heads the store remembers.
const headCacheSize = 100_000

// Store is the PostgreSQL event store. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// heads remembers each stream's last known version and hash. An entry is
	// a fact that never goes stale ("version v has hash h"); it is used only
	// when an append expects exactly v, and the unique key catches a stream
	// that has moved on since.
	heads *lru.Cache[string, head]
	// appended is signalled, never blocking, after an append made through
	// this Store commits (see Appended).
	appended chan struct{}
}

type head struct {
	version uint64
	hash    []byte
}

// querier is what both a pool and a transaction offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// New returns a store on pool. The pool's role needs SELECT and INSERT on
// events (the pos_app role has exactly those).
func New(pool *pgxpool.Pool) *Store {
	heads, err := lru.New[string, head](headCacheSize)
	if err != nil {
		panic(err) // only for a non-positive size
	}
	return &Store{pool: pool, heads: heads, appended: make(chan struct{}, 1)}
}

// Appended returns a channel that receives after appends made through this
// Store commit: each Append, and each TxStore whose Committed is called. It
// is a hint for one follower of the feed in this process (the relay) to read
// now rather than at its next poll. Signals coalesce, and appends of other
// processes send none, so a follower must still poll; and a committed event
// may not be readable yet (the feed waits for older transactions still
// running), so one read after a signal may find nothing new.
func (s *Store) Appended() <-chan struct{} { return s.appended }

// SignalAppendsTo makes this Store's commits signal o's Appended instead of
// its own, so that two stores of one process (the sales', the stock
// ledgers' on a pool of their own) wake one follower. Call it before the
// Store is used.
func (s *Store) SignalAppendsTo(o *Store) { s.appended = o.appended }

// signalAppended tells Appended's follower that an append committed.
func (s *Store) signalAppended() {
	select {
	case s.appended <- struct{}{}:
	default: // one signal pending is enough
	}
}

var _ eventstore.Store = (*Store)(nil)

// AppendsCommit implements eventstore.SelfCommitting: each append is its own
// transaction.
func (*Store) AppendsCommit() bool { return true }

// Append implements eventstore.Store. Each call is its own transaction (one
// INSERT statement); with Any it retries internally when another writer
// appends to the same stream first.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	p, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	h, ok := s.knownHead(p)
	if !ok {
		cur, _, err := readHead(ctx, s.pool, stream, false)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		if want, exact := p.Expected.Version(); exact && cur.version != want {
			return s.notAtExpected(ctx, s.pool, p, cur.version)
		}
		h = cur
	}
	res, last, err := insert(ctx, s.pool, p, h)
	if err == nil {
		s.learn(stream, last)
		s.signalAppended()
		return res, nil
	}
	if !isUniqueViolation(err) {
		return eventstore.AppendResult{}, err
	}
	s.heads.Remove(stream)
	if p.Expected.IsAny() {
		if res, found, err := findRetried(ctx, s.pool, p); found || err != nil {
			return res, err
		}
		return s.appendAnyLocked(ctx, p)
	}
	cur, _, err := readHead(ctx, s.pool, stream, false)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	return s.notAtExpected(ctx, s.pool, p, cur.version)
}

// appendAnyLocked is the slow path of an Any append that lost a race: it
// takes a transaction-scoped advisory lock on the stream, so Any writers of a
// hot stream queue instead of starving each other, and retries a bounded
// number of times against Exact writers, which take no lock.
func (s *Store) appendAnyLocked(ctx context.Context, p eventstore.Prepared) (eventstore.AppendResult, error) {
	var cur head
	for attempt := 0; attempt < maxAnyRetries; attempt++ {
		var res eventstore.AppendResult
		var last head
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", p.Stream); err != nil {
				return fmt.Errorf("pgstore: lock %q: %w", p.Stream, err)
			}
			var err error
			if cur, _, err = readHead(ctx, tx, p.Stream, false); err != nil {
				return err
			}
			res, last, err = insert(ctx, tx, p, cur)
			return err
		})
		if err == nil {
			s.learn(p.Stream, last)
			s.signalAppended()
			return res, nil
		}
		if !isUniqueViolation(err) {
			return eventstore.AppendResult{}, err
		}
		if res, found, err := findRetried(ctx, s.pool, p); found || err != nil {
			return res, err
		}
	}
	return eventstore.AppendResult{}, &eventstore.ConcurrencyError{Stream: p.Stream, Expected: p.Expected, Actual: cur.version}
}

// AppendTx appends within the caller's transaction, so that events commit
// atomically with other writes (an idempotency key, say). It always reads the
// stream head inside tx. On ErrConcurrency the transaction may be aborted:
// roll it back and retry the whole unit of work in a new one, where an
// identical retry is recognised and writes nothing.
//
// The transaction must not have been open since before the stream's last
// append: an event must never take a global position before the event it
// follows in its stream. AppendTx detects that case and reports ErrConcurrency.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	res, _, err := s.appendTx(ctx, tx, stream, expected, events)
	return res, err
}

// appendTx is AppendTx; it also returns the stream's new head when it
// inserted the events (nil when they were there already).
func (s *Store) appendTx(ctx context.Context, tx pgx.Tx, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData) (eventstore.AppendResult, *head, error) {
	p, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, nil, err
	}
	cur, newer, err := readHead(ctx, tx, stream, true)
	if err != nil {
		return eventstore.AppendResult{}, nil, err
	}
	if newer {
		return eventstore.AppendResult{}, nil, fmt.Errorf("%w: stream %q moved on in a newer transaction", eventstore.ErrStaleTransaction, stream)
	}
	if want, exact := p.Expected.Version(); exact && cur.version != want {
		res, err := s.notAtExpected(ctx, tx, p, cur.version)
		return res, nil, err
	}
	if p.Expected.IsAny() {
		if res, found, err := findRetried(ctx, tx, p); found || err != nil {
			return res, nil, err
		}
	}
	// A savepoint keeps the caller's transaction usable when the insert
	// loses a race, so the caller can reload and decide again within it.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return eventstore.AppendResult{}, nil, fmt.Errorf("pgstore: savepoint: %w", err)
	}
	res, last, err := insert(ctx, sp, p, cur)
	if err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return eventstore.AppendResult{}, nil, fmt.Errorf("pgstore: roll back savepoint: %w", rerr)
		}
		if !isUniqueViolation(err) {
			return eventstore.AppendResult{}, nil, err
		}
		// An event id already stored (a retry, or a reuse) rather than a
		// version taken by another writer.
		if res, found, ferr := findRetried(ctx, tx, p); found || ferr != nil {
			return res, nil, ferr
		}
		return eventstore.AppendResult{}, nil, &eventstore.ConcurrencyError{Stream: stream, Expected: expected, Actual: cur.version}
	}
	if err := sp.Commit(ctx); err != nil {
		return eventstore.AppendResult{}, nil, fmt.Errorf("pgstore: release savepoint: %w", err)
	}
	return res, &last, nil
}

// InTx returns a view of the store bound to tx: its appends are AppendTx in
// tx and its stream reads see tx's own writes, so a command handler written
// against eventstore.Store can run inside a caller's transaction unchanged.
// ReadAll and Settle go to the store itself (a feed read inside a writing
// transaction would wait for that very transaction).
//
// The view is built for the load–decide–append cycle as the transaction's
// first write: when it has just read a stream to its end, or the store knows
// the stream's head from an earlier committed append (a command that decided
// on an aggregate cached in memory reads nothing), an append expecting that
// version is one INSERT, without re-reading the head or a savepoint. If that
// INSERT loses a race, the transaction is aborted and Append reports
// eventstore.ErrStaleTransaction: retry the unit of work in a new
// transaction.
//
// The view is an eventstore.TxBound: call Committed after the transaction
// commits, which also lets the store remember the heads the transaction
// read and wrote.
//
// A TxStore is bound to one transaction and, like it, is not safe for
// concurrent use.
func (s *Store) InTx(tx pgx.Tx) *TxStore {
	return &TxStore{Store: s, tx: tx, read: make(map[string]head)}
}

// TxStore is a Store view bound to one transaction; see InTx.
type TxStore struct {
	*Store
	tx pgx.Tx
	// read holds the heads of streams read to their end in this
	// transaction, and of the streams it appended to: facts once it
	// commits (see Committed).
	read map[string]head
	// wrote is set once the transaction may hold an xid (it appended, or
	// tried to through appendTx): the fast paths then no longer apply, as
	// an xid taken before a head was committed would give the next event
	// an older position than the one it follows.
	wrote       bool
	afterCommit []func()
}

var _ eventstore.TxBound = (*TxStore)(nil)

// Append implements eventstore.Store in the transaction.
func (t *TxStore) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if !t.wrote {
		p, err := eventstore.Prepare(stream, expected, events)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		want, exact := expected.Version()
		h, ok := t.read[stream]
		if !ok && exact && want > 0 {
			// A head the store learnt from a committed append: committed
			// before this transaction writes, so its xid is older than ours.
			// (Not for a new stream: the INSERT would tell a retry of an
			// earlier append of the same events from a conflict no more.)
			h, ok = t.knownHead(p)
		}
		if ok && exact && h.version == want {
			res, last, err := insert(ctx, t.tx, p, h)
			if isUniqueViolation(err) {
				t.heads.Remove(stream)
				return eventstore.AppendResult{}, fmt.Errorf("%w: stream %q was appended to meanwhile", eventstore.ErrStaleTransaction, stream)
			}
			if err != nil {
				return eventstore.AppendResult{}, err
			}
			t.wrote = true
			t.read[stream] = last
			return res, nil
		}
	}
	// Whatever its outcome, appendTx may give the transaction an xid (its
	// head read asks for pg_current_xact_id, a failed INSERT takes one):
	// from now on every append must check for newer heads, so no fast path.
	t.wrote = true
	res, last, err := t.appendTx(ctx, t.tx, stream, expected, events)
	if err == nil {
		if last != nil {
			t.read[stream] = *last
		}
	}
	return res, err
}

// AppendsCommit implements eventstore.SelfCommitting: the caller commits.
func (*TxStore) AppendsCommit() bool { return false }

// AfterCommit implements eventstore.TxBound.
func (t *TxStore) AfterCommit(fn func()) { t.afterCommit = append(t.afterCommit, fn) }

// Committed implements eventstore.TxBound: the heads the transaction read
// and wrote become the store's (facts now: version v of the stream has hash
// h), then the AfterCommit functions run, and Appended is signalled if the
// transaction appended. Call it once, after the COMMIT succeeded.
func (t *TxStore) Committed() {
	if t.wrote {
		t.signalAppended()
	}
	for stream, h := range t.read {
		if h.version > 0 { // "no stream yet" is no lasting fact
			t.learn(stream, h)
		}
	}
	fns := t.afterCommit
	t.afterCommit = nil
	for _, fn := range fns {
		fn()
	}
}

// ReadStream implements eventstore.Store inside the transaction.
func (t *TxStore) ReadStream(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	events, err := readStream(ctx, t.tx, stream, from, limit)
	if err != nil || len(events) >= clampLimit(limit) {
		return events, err
	}
	switch {
	case len(events) > 0:
		last := events[len(events)-1]
		t.read[stream] = head{version: last.Version, hash: last.Hash}
	case from <= 1:
		t.read[stream] = head{} // no stream yet
	}
	return events, nil
}

// ReadStreamBackward implements eventstore.Store inside the transaction.
func (t *TxStore) ReadStreamBackward(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	return readStreamBackward(ctx, t.tx, stream, from, limit)
}

// learn remembers h as stream's head unless a later one is known: requests
// commit in any order, and an older head would only cost the next append
// a wasted INSERT.
func (s *Store) learn(stream string, h head) {
	if cur, ok := s.heads.Peek(stream); ok && cur.version > h.version {
		return
	}
	s.heads.Add(stream, h)
}

// knownHead returns the head to chain onto without a query, when the
// expectation itself or the cache says what it is.
func (s *Store) knownHead(p eventstore.Prepared) (head, bool) {
	if p.Expected.IsNoStream() {
		return head{}, true
	}
	h, ok := s.heads.Get(p.Stream)
	if !ok {
		return head{}, false
	}
	if want, exact := p.Expected.Version(); exact && h.version != want {
		return head{}, false
	}
	// For Any the cached head may be stale; the unique key then refuses the
	// insert and the retry reads the real head.
	return h, true
}

// notAtExpected decides what a stream not at the expected version means: an
// identical retry of an append that already landed (its original result), an
// event id reused with other content, or a genuine conflict.
func (s *Store) notAtExpected(ctx context.Context, q querier, p eventstore.Prepared, actual uint64) (eventstore.AppendResult, error) {
	res, found, err := findRetried(ctx, q, p)
	if found || err != nil {
		return res, err
	}
	return eventstore.AppendResult{}, &eventstore.ConcurrencyError{Stream: p.Stream, Expected: p.Expected, Actual: actual}
}

// findRetried looks the proposed event ids up. None stored: found is false.
// All stored, consecutively in this stream with the same content: the
// original result. Anything else: ErrIdempotencyMismatch.
func findRetried(ctx context.Context, q querier, p eventstore.Prepared) (eventstore.AppendResult, bool, error) {
	ids := make([]uuid.UUID, len(p.Events))
	for i, e := range p.Events {
		ids[i] = e.ID
	}
	rows, err := q.Query(ctx, selectColumns+` WHERE event_id = ANY($1)`, ids)
	if err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("pgstore: look up event ids: %w", err)
	}
	stored, err := collect(rows)
	if err != nil {
		return eventstore.AppendResult{}, false, err
	}
	if len(stored) == 0 {
		return eventstore.AppendResult{}, false, nil
	}
	byID := make(map[uuid.UUID]eventstore.RecordedEvent, len(stored))
	for _, e := range stored {
		byID[e.ID] = e
	}
	mismatch := fmt.Errorf("%w: stream %q", eventstore.ErrIdempotencyMismatch, p.Stream)
	var first, last eventstore.RecordedEvent
	for i, e := range p.Events {
		got, ok := byID[e.ID]
		if !ok || got.Stream != p.Stream || !eventstore.SameContent(got, e) {
			return eventstore.AppendResult{}, true, mismatch
		}
		if i == 0 {
			first = got
		} else if got.Version != first.Version+uint64(i) {
			return eventstore.AppendResult{}, true, mismatch
		}
		last = got
	}
	return eventstore.AppendResult{Version: last.Version, Position: last.Position}, true, nil
}

// readHead returns the stream's last version and hash (zero for a missing
// stream). With inTx it also reports whether that event was appended by a
// transaction newer than the current one.
func readHead(ctx context.Context, q querier, stream string, inTx bool) (head, bool, error) {
	sql := `SELECT version, hash, false FROM events WHERE stream_name = $1 ORDER BY version DESC LIMIT 1`
	if inTx {
		sql = `SELECT version, hash, transaction_id > pg_current_xact_id() FROM events WHERE stream_name = $1 ORDER BY version DESC LIMIT 1`
	}
	var h head
	var v int64
	var newer bool
	err := q.QueryRow(ctx, sql, stream).Scan(&v, &h.hash, &newer)
	if errors.Is(err, pgx.ErrNoRows) {
		return head{}, false, nil
	}
	if err != nil {
		return head{}, false, fmt.Errorf("pgstore: read head of %q: %w", stream, err)
	}
	h.version = uint64(v)
	return h, newer, nil
}

const insertSQL = `
WITH ins AS (
    INSERT INTO events (event_id, stream_name, version, merchant_id, event_type, schema_version, data, metadata, hash, prev_hash)
    SELECT e.id, $2, e.version, $3, e.type, e.schema_version, e.data, e.metadata, e.hash, e.prev_hash
    FROM unnest($1::uuid[], $4::bigint[], $5::text[], $6::int[], $7::json[], $8::jsonb[], $9::bytea[], $10::bytea[])
        WITH ORDINALITY AS e(id, version, type, schema_version, data, metadata, hash, prev_hash, ord)
    -- Sequence values are drawn in this order: positions follow versions.
    ORDER BY e.ord
    RETURNING transaction_id, global_position
)
SELECT transaction_id, max(global_position) FROM ins GROUP BY transaction_id`

// insert writes p's events after h in one statement, chaining their hashes.
func insert(ctx context.Context, q querier, p eventstore.Prepared, h head) (eventstore.AppendResult, head, error) {
	n := len(p.Events)
	// pgtype.UUID, not uuid.UUID: on a pool without pgpool's uuid codec
	// pgx encodes the latter through driver.Valuer (text, parsed back),
	// 20× slower, and New takes any pool.
	ids := make([]pgtype.UUID, n)
	versions := make([]int64, n)
	types := make([]string, n)
	schemas := make([]int32, n)
	data := make([]string, n)
	metas := make([]string, n)
	hashes := make([][]byte, n)
	prevs := make([][]byte, n)
	prev := h.hash
	for i, e := range p.Events {
		v := h.version + uint64(i) + 1
		md, err := json.Marshal(e.Metadata)
		if err != nil {
			return eventstore.AppendResult{}, head{}, fmt.Errorf("pgstore: encode metadata: %w", err)
		}
		ids[i], versions[i], types[i], schemas[i] = pgtype.UUID{Bytes: e.ID, Valid: true}, int64(v), e.Type, int32(e.SchemaVersion)
		data[i], metas[i] = string(e.Data), string(md)
		hashes[i] = eventstore.Hash(e.ID, p.Stream, v, e.Type, e.SchemaVersion, e.Data, e.Metadata, prev)
		prevs[i] = prev
		prev = hashes[i]
	}
	var xid, seq uint64
	err := q.QueryRow(ctx, insertSQL, ids, p.Stream, p.MerchantID, versions, types, schemas, data, metas, hashes, prevs).Scan(&xid, &seq)
	if err != nil {
		if isUniqueViolation(err) {
			return eventstore.AppendResult{}, head{}, err
		}
		return eventstore.AppendResult{}, head{}, fmt.Errorf("pgstore: append to %q: %w", p.Stream, err)
	}
	last := h.version + uint64(n)
	return eventstore.AppendResult{Version: last, Position: eventstore.Position{Major: xid, Minor: seq}},
		head{version: last, hash: prev}, nil
}

const selectColumns = `SELECT event_id, stream_name, version, transaction_id, global_position, event_type,
    schema_version, data, metadata, recorded_at, hash, prev_hash FROM events`

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	events, err := readStream(ctx, s.pool, stream, from, limit)
	if err == nil && len(events) > 0 && len(events) < clampLimit(limit) {
		last := events[len(events)-1]
		s.learn(stream, head{version: last.Version, hash: last.Hash})
	}
	return events, err
}

// ReadStreamBackward implements eventstore.Store.
func (s *Store) ReadStreamBackward(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	return readStreamBackward(ctx, s.pool, stream, from, limit)
}

func readStream(ctx context.Context, q querier, stream string, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	rows, err := q.Query(ctx, selectColumns+` WHERE stream_name = $1 AND version >= $2 ORDER BY version LIMIT $3`,
		stream, int64(min(from, 1<<62)), clampLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("pgstore: read %q: %w", stream, err)
	}
	return collect(rows)
}

func readStreamBackward(ctx context.Context, q querier, stream string, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	if from == 0 {
		from = 1 << 62
	}
	rows, err := q.Query(ctx, selectColumns+` WHERE stream_name = $1 AND version <= $2 ORDER BY version DESC LIMIT $3`,
		stream, int64(min(from, 1<<62)), clampLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("pgstore: read %q backward: %w", stream, err)
	}
	return collect(rows)
}

// ReadAll implements eventstore.Store. It returns only events of
// transactions older than every transaction still running, so a reader at
// the head waits for a late commit instead of skipping it.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, filter eventstore.Filter, limit int) ([]eventstore.RecordedEvent, error) {
	var rows pgx.Rows
	var err error
	if filter.MerchantID != "" {
		merchant, perr := uuid.Parse(filter.MerchantID)
		if perr != nil {
			return nil, fmt.Errorf("%w: merchant %q is not a UUID", eventstore.ErrInvalidFilter, filter.MerchantID)
		}
		rows, err = s.pool.Query(ctx, selectColumns+`
            WHERE merchant_id = $3
              AND (transaction_id, global_position) > ($1::xid8, $2::bigint)
              AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY merchant_id, transaction_id, global_position
            LIMIT $4`, after.Major, int64(after.Minor), merchant, clampLimit(limit))
	} else {
		rows, err = s.pool.Query(ctx, selectColumns+`
            WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint)
              AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY transaction_id, global_position
            LIMIT $3`, after.Major, int64(after.Minor), clampLimit(limit))
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: read all after %s: %w", after, err)
	}
	return collect(rows)
}

// Settle implements eventstore.Store: it waits until every transaction that
// was running at the call has ended, so that ReadAll's horizon has passed
// every event committed before the call.
func (s *Store) Settle(ctx context.Context) error {
	var target uint64
	if err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())`).Scan(&target); err != nil {
		return fmt.Errorf("pgstore: settle: %w", err)
	}
	wait := time.Millisecond
	for {
		var done bool
		err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::xid8`, target).Scan(&done)
		if err != nil {
			return fmt.Errorf("pgstore: settle: %w", err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgstore: settle: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Pool returns the store's pool, for callers that open transactions to pass
// to AppendTx.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

func collect(rows pgx.Rows) ([]eventstore.RecordedEvent, error) {
	defer rows.Close()
	var out []eventstore.RecordedEvent
	for rows.Next() {
		var e eventstore.RecordedEvent
		var version, seq int64
		var schema int32
		var data, meta []byte
		var recorded time.Time
		if err := rows.Scan(&e.ID, &e.Stream, &version, &e.Position.Major, &seq, &e.Type,
			&schema, &data, &meta, &recorded, &e.Hash, &e.PrevHash); err != nil {
			return nil, fmt.Errorf("pgstore: scan event: %w", err)
		}
		if err := json.Unmarshal(meta, &e.Metadata); err != nil {
			return nil, fmt.Errorf("pgstore: event %s: decode metadata: %w", e.ID, err)
		}
		e.Version, e.Position.Minor, e.SchemaVersion = uint64(version), uint64(seq), int(schema)
		e.Data, e.RecordedAt = data, recorded.UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: read events: %w", err)
	}
	return out, nil
}

func clampLimit(limit int) int {
	if limit <= 0 || limit > eventstore.MaxReadLimit {
		return eventstore.MaxReadLimit
	}
	return limit
}

// isUniqueViolation is the one place PostgreSQL's 23505 is recognised.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// CountEvents returns how many events the feed holds for filter, for
// progress reports on long reads (verify, rebuilds).
func (s *Store) CountEvents(ctx context.Context, filter eventstore.Filter) (int64, error) {
	var n int64
	var err error
	if filter.MerchantID == "" {
		err = s.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n)
	} else {
		merchant, perr := uuid.Parse(filter.MerchantID)
		if perr != nil {
			return 0, fmt.Errorf("%w: merchant %q is not a UUID", eventstore.ErrInvalidFilter, filter.MerchantID)
		}
		err = s.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE merchant_id = $1`, merchant).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: count events: %w", err)
	}
	return n, nil
}

// AppRole is the role the application works as: SELECT and INSERT on events,
// nothing else (migrations/00001_event_store.sql).
const AppRole = "pos_app"

// Connect opens a pool on url whose connections log in as AppRole (see
// pgpool.Open), so that the running service cannot change or delete an
// event even if its code tried; migrations run separately, as the url's
// own user.
func Connect(ctx context.Context, url string) (*pgxpool.Pool, error) {
	return ConnectSized(ctx, url, 0)
}

// ConnectSized is Connect with a pool of maxConns connections; 0 means the
// URL's pool_max_conns, or pgpool.DefaultMaxConns.
func ConnectSized(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	pool, err := pgpool.Open(ctx, url, AppRole, "", maxConns)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	return pool, nil
}

// CountAfter returns how many committed events the global feed holds after
// position after: what a reader at after has still to read, including
// events past the feed's horizon (which ReadAll returns once the
// transactions holding it back end). It scans that range of the feed's
// index: cheap for a reader close behind, the whole store for Start.
func (s *Store) CountAfter(ctx context.Context, after eventstore.Position) (uint64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `
            SELECT count(*) FROM events WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint)`,
		after.Major, int64(after.Minor)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pgstore: count events: %w", err)
	}
	return uint64(n), nil
}
