package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/eventstore/storetest"
	"pos/internal/pgtest"
)

// appPool connects to url as the application role, which may only SELECT and
// INSERT events: the suite runs with the privileges production has.
func appPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgstore.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// superuser connects as the database owner (a superuser on this machine).
func superuser(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func TestConformance(t *testing.T) {
	url := pgtest.NewDatabase(t)
	store := pgstore.New(appPool(t, url))
	storetest.Run(t, storetest.Backend{
		Name: "postgres",
		Open: func(t *testing.T) eventstore.Store { return store },
		HoldAppend: func(ctx context.Context, t *testing.T, stream string, events ...eventstore.EventData) func() error {
			return holdAppend(ctx, t, store, stream, events...)
		},
		Tamper: func(ctx context.Context, t *testing.T, stream string, version uint64, data json.RawMessage) {
			tamper(ctx, t, superuser(t, url), stream, version, data)
		},
	})
}

func holdAppend(ctx context.Context, t *testing.T, store *pgstore.Store, stream string, events ...eventstore.EventData) func() error {
	t.Helper()
	tx, err := store.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.AppendTx(ctx, tx, stream, eventstore.NoStream, events...); err != nil {
		_ = tx.Rollback(ctx)
		t.Fatalf("held append: %v", err)
	}
	return func() error { return tx.Commit(ctx) }
}

// tamper edits a stored payload the way a superuser bypassing the append-only
// triggers would.
func tamper(ctx context.Context, t *testing.T, c *pgx.Conn, stream string, version uint64, data json.RawMessage) {
	t.Helper()
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "UPDATE events SET data = $1 WHERE stream_name = $2 AND version = $3", string(data), stream, int64(version))
		if err == nil && tag.RowsAffected() != 1 {
			err = errors.New("no such event")
		}
		return err
	})
	if err != nil {
		t.Fatalf("tamper %s@%d: %v", stream, version, err)
	}
}

// naiveReader reads the global feed the way a SERIAL-cursor store does:
// ORDER BY the sequence, resuming after the last one seen. Kept to show that
// HeldAppendGap catches what the real reader avoids.
type naiveReader struct {
	*pgstore.Store
}

func (n naiveReader) ReadAll(ctx context.Context, after eventstore.Position, f eventstore.Filter, limit int) ([]eventstore.RecordedEvent, error) {
	rows, err := n.Pool().Query(ctx, `SELECT event_id, event_type, global_position FROM events
        WHERE global_position > $1 AND merchant_id::text = $2 ORDER BY global_position LIMIT $3`,
		int64(after.Minor), f.MerchantID, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (eventstore.RecordedEvent, error) {
		var e eventstore.RecordedEvent
		var seq int64
		err := r.Scan(&e.ID, &e.Type, &seq)
		e.Position.Minor = uint64(seq)
		return e, err
	})
}

func TestNaiveSequenceReaderSkipsLateCommit(t *testing.T) {
	store := pgstore.New(pgtest.NewPool(t))
	hold := func(ctx context.Context, t *testing.T, stream string, events ...eventstore.EventData) func() error {
		return holdAppend(ctx, t, store, stream, events...)
	}
	ctx := context.Background()
	if err := storetest.HeldAppendGap(ctx, t, store, hold); err != nil {
		t.Fatalf("the store's own reader: %v", err)
	}
	err := storetest.HeldAppendGap(ctx, t, naiveReader{store}, hold)
	if err == nil {
		t.Fatal("the naive ORDER BY sequence reader passed the held-append check; the check cannot catch a skipped event")
	}
	t.Logf("naive reader, as expected: %v", err)
}

func TestEventsRefuseUpdateDeleteTruncate(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	store := pgstore.New(appPool(t, url))
	m := storetest.NewMerchant()
	stream := storetest.NewStream(m, "transaction")
	if _, err := store.Append(ctx, stream, eventstore.NoStream, storetest.Event(m, "A", 1)); err != nil {
		t.Fatal(err)
	}
	statements := map[string]string{
		"UPDATE":   "UPDATE events SET data = '{}'",
		"DELETE":   "DELETE FROM events",
		"TRUNCATE": "TRUNCATE events",
	}
	for _, who := range []struct{ name, setRole, wantMsg string }{
		{"application role", "SET ROLE pos_app", "permission denied for table events"},
		{"superuser", "RESET ROLE", "events are append-only"},
	} {
		c := superuser(t, url)
		if _, err := c.Exec(ctx, who.setRole); err != nil {
			t.Fatal(err)
		}
		for op, sql := range statements {
			_, err := c.Exec(ctx, sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, who.wantMsg) {
				t.Errorf("%s %s: err = %v, want 42501 %q", who.name, op, err, who.wantMsg)
			}
		}
	}
	events, err := store.ReadStream(ctx, stream, 1, 0)
	if err != nil || len(events) != 1 || string(events[0].Data) != "1" {
		t.Fatalf("after refused changes: %v, %v", events, err)
	}
}

func TestMerchantFeedUsesMerchantIndex(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	c := superuser(t, url)
	store := pgstore.New(appPool(t, url))
	var merchants []string
	for i := 0; i < 20; i++ {
		m := storetest.NewMerchant()
		merchants = append(merchants, m)
		for j := 0; j < 10; j++ {
			batch := make([]eventstore.EventData, 20)
			for k := range batch {
				batch[k] = storetest.Event(m, "Sale", k)
			}
			if _, err := store.Append(ctx, storetest.NewStream(m, "transaction"), eventstore.NoStream, batch...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := c.Exec(ctx, "ANALYZE events"); err != nil {
		t.Fatal(err)
	}
	rows, err := c.Query(ctx, `EXPLAIN SELECT event_id FROM events
        WHERE merchant_id = $3 AND (transaction_id, global_position) > ($1::xid8, $2::bigint)
          AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY merchant_id, transaction_id, global_position LIMIT $4`, uint64(0), int64(0), merchants[7], 500)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	t.Logf("merchant feed plan (4,000 events of 20 merchants):\n%s", plan)
	if !strings.Contains(plan, "events_merchant_feed_idx") || strings.Contains(plan, "Seq Scan") {
		t.Fatalf("merchant feed does not read through events_merchant_feed_idx:\n%s", plan)
	}
	if !strings.Contains(plan, "Index Cond: ((merchant_id = ") {
		t.Fatalf("merchant is not an index condition:\n%s", plan)
	}
}

func TestVerifyReportsDeletedAndRelinkedEvents(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	store := pgstore.New(appPool(t, url))
	m := storetest.NewMerchant()
	gap, relinked, intact := storetest.NewStream(m, "transaction"), storetest.NewStream(m, "stock"), storetest.NewStream(m, "journal")
	for _, s := range []string{gap, relinked, intact} {
		if _, err := store.Append(ctx, s, eventstore.NoStream, storetest.Event(m, "A", 1), storetest.Event(m, "B", 2), storetest.Event(m, "C", 3)); err != nil {
			t.Fatal(err)
		}
	}
	c := superuser(t, url)
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM events WHERE stream_name = $1 AND version = 2", gap); err != nil {
			return err
		}
		// Re-link version 3 of the other stream onto version 1, as if
		// version 2 had never been there.
		_, err := tx.Exec(ctx, "UPDATE events SET prev_hash = (SELECT hash FROM events WHERE stream_name = $1 AND version = 1) WHERE stream_name = $1 AND version = 3", relinked)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := eventstore.Verify(ctx, store, eventstore.VerifyOptions{Filter: eventstore.Filter{MerchantID: m}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[eventstore.Break]bool{}
	for _, b := range rep.Breaks {
		got[b] = true
	}
	for _, want := range []eventstore.Break{
		{Stream: gap, Version: 3, Reason: eventstore.ReasonVersionGap},
		{Stream: relinked, Version: 3, Reason: eventstore.ReasonChainMismatch},
		{Stream: relinked, Version: 3, Reason: eventstore.ReasonHashMismatch},
	} {
		if !got[want] {
			t.Errorf("breaks %v lack %v", rep.Breaks, want)
		}
	}
	for _, b := range rep.Breaks {
		if b.Stream == intact {
			t.Errorf("intact stream reported: %v", b)
		}
	}
	if rep.StreamsChecked != 3 || rep.EventsChecked != 8 {
		t.Errorf("checked %d streams, %d events; want 3, 8", rep.StreamsChecked, rep.EventsChecked)
	}
}

func TestTxStoreCommitsWithTheTransactionAndSurvivesConflicts(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	store := pgstore.New(appPool(t, url))
	m := storetest.NewMerchant()
	stream := storetest.NewStream(m, "transaction")
	if _, err := store.Append(ctx, stream, eventstore.NoStream, storetest.Event(m, "A", 1)); err != nil {
		t.Fatal(err)
	}

	tx, err := store.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	in := store.InTx(tx)
	// A conflict inside the transaction leaves it usable.
	if _, err := in.Append(ctx, stream, eventstore.NoStream, storetest.Event(m, "B", 2)); !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("conflicting append in tx: err = %v", err)
	}
	if _, err := in.Append(ctx, stream, eventstore.Exact(1), storetest.Event(m, "B", 2)); err != nil {
		t.Fatalf("append in tx after a conflict: %v", err)
	}
	if got, _ := in.ReadStream(ctx, stream, 1, 0); len(got) != 2 {
		t.Fatalf("inside the transaction: %d events, want 2", len(got))
	}
	if got, _ := store.ReadStream(ctx, stream, 1, 0); len(got) != 1 {
		t.Fatalf("outside before commit: %d events, want 1", len(got))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := store.ReadStream(ctx, stream, 1, 0)
	if len(got) != 2 || string(got[1].PrevHash) != string(got[0].Hash) {
		t.Fatalf("after commit: %d events, chained %v", len(got), len(got) == 2 && string(got[1].PrevHash) == string(got[0].Hash))
	}

	// A rolled-back transaction leaves nothing behind.
	tx2, err := store.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.InTx(tx2).Append(ctx, stream, eventstore.Exact(2), storetest.Event(m, "C", 3)); err != nil {
		t.Fatal(err)
	}
	_ = tx2.Rollback(ctx)
	if got, _ := store.ReadStream(ctx, stream, 1, 0); len(got) != 2 {
		t.Fatalf("after rollback: %d events, want 2", len(got))
	}
	if _, err := store.Append(ctx, stream, eventstore.Exact(2), storetest.Event(m, "C", 3)); err != nil {
		t.Fatalf("append after a rolled-back one: %v", err)
	}
}

// A TxStore appends onto heads the store learnt from committed transactions
// without reading them (a command deciding on an aggregate in memory), and
// only once their owner said they committed; a head another process has
// moved past costs the transaction (ErrStaleTransaction) and is forgotten.
// Appended tells the relay of this process's commits: once per Append, and
// per transaction told Committed that appended; never for a read-only one.
func TestAppendedSignalsCommittedAppends(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	pool := appPool(t, url)
	store := pgstore.New(pool)
	m := storetest.NewMerchant()
	stream := storetest.NewStream(m, "transaction")
	signalled := func() bool {
		select {
		case <-store.Appended():
			return true
		default:
			return false
		}
	}
	if signalled() {
		t.Fatal("a signal before any append")
	}
	if _, err := store.Append(ctx, stream, eventstore.NoStream, storetest.Event(m, "A", 1)); err != nil {
		t.Fatal(err)
	}
	if !signalled() {
		t.Fatal("no signal after an Append")
	}
	if signalled() {
		t.Fatal("one append signalled twice")
	}
	inTx := func(appendToo bool) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		view := store.InTx(tx)
		if _, err := view.ReadStream(ctx, stream, 1, 0); err != nil {
			t.Fatal(err)
		}
		if appendToo {
			if _, err := view.Append(ctx, stream, eventstore.Exact(1), storetest.Event(m, "B", 2)); err != nil {
				t.Fatal(err)
			}
			if signalled() {
				t.Fatal("a signal before the commit")
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		view.Committed()
	}
	inTx(false)
	if signalled() {
		t.Fatal("a signal for a transaction that only read")
	}
	inTx(true)
	if !signalled() {
		t.Fatal("no signal after a transaction that appended committed")
	}
	ledgers := pgstore.New(pool)
	ledgers.SignalAppendsTo(store)
	if _, err := ledgers.Append(ctx, storetest.NewStream(m, "stock"), eventstore.NoStream, storetest.Event(m, "L", 1)); err != nil {
		t.Fatal(err)
	}
	if !signalled() {
		t.Fatal("no signal after another store signalling to this one appended")
	}
}

func TestTxStoreAppendsOntoHeadsOfCommittedTransactions(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	pool := appPool(t, url)
	store, other := pgstore.New(pool), pgstore.New(pool) // other: another process
	m := storetest.NewMerchant()
	stream := storetest.NewStream(m, "transaction")
	if _, err := other.Append(ctx, stream, eventstore.NoStream, storetest.Event(m, "A", 1)); err != nil {
		t.Fatal(err)
	}
	// inTx appends e at expected in a new transaction, without reading the
	// stream first, and commits (telling the view) unless the append fails
	// or commit is false.
	inTx := func(expected uint64, e eventstore.EventData, commit bool) (ran bool, err error) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		view := store.InTx(tx)
		view.AfterCommit(func() { ran = true })
		if _, err := view.Append(ctx, stream, eventstore.Exact(expected), e); err != nil || !commit {
			return ran, err
		}
		if ran {
			t.Fatal("AfterCommit ran before the commit")
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		view.Committed()
		return ran, nil
	}

	// The store knows no head: the view reads it, in the transaction.
	if ran, err := inTx(1, storetest.Event(m, "B", 2), true); err != nil || !ran {
		t.Fatalf("append onto an unknown head: %v (AfterCommit ran: %v)", err, ran)
	}
	// Rolled back: nothing learnt, nothing run.
	if ran, err := inTx(2, storetest.Event(m, "X", 3), false); err != nil || ran {
		t.Fatalf("rolled-back append: %v (AfterCommit ran: %v)", err, ran)
	}
	if _, err := other.Append(ctx, stream, eventstore.Exact(2), storetest.Event(m, "C", 3)); err != nil {
		t.Fatal(err)
	}
	// The store remembers version 2 from the commit: it inserts version 3
	// straight away, which the other process has taken.
	if _, err := inTx(2, storetest.Event(m, "D", 4), true); !errors.Is(err, eventstore.ErrStaleTransaction) {
		t.Fatalf("append onto a head another process moved past: %v, want %v", err, eventstore.ErrStaleTransaction)
	}
	// Forgotten: the next transaction reads the head and keeps going.
	if _, err := inTx(2, storetest.Event(m, "D", 4), true); !errors.Is(err, eventstore.ErrConcurrency) || errors.Is(err, eventstore.ErrStaleTransaction) {
		t.Fatalf("append at a stale version after the head was forgotten: %v, want a plain conflict", err)
	}
	if _, err := inTx(3, storetest.Event(m, "D", 4), true); err != nil {
		t.Fatal(err)
	}
	got, err := store.ReadStream(ctx, stream, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for i, e := range got {
		types = append(types, e.Type)
		if i > 0 && string(e.PrevHash) != string(got[i-1].Hash) {
			t.Fatalf("event %d does not chain onto event %d", e.Version, got[i-1].Version)
		}
	}
	if strings.Join(types, "") != "ABCD" {
		t.Fatalf("stream holds %v, want A B C D", types)
	}
}

// A transaction that tried an append (and so may hold a transaction id)
// must not append onto a head committed after that id was taken: the
// event would get an older position than the one it follows, and the feed
// would return the stream out of order. The view then reports a stale
// transaction rather than take its fast path.
func TestTxStoreNeverAppendsOntoAHeadNewerThanItsXID(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	pool := appPool(t, url)
	store, other := pgstore.New(pool), pgstore.New(pool)
	m := storetest.NewMerchant()
	stream := storetest.NewStream(m, "transaction")
	if _, err := other.Append(ctx, stream, eventstore.NoStream, storetest.Event(m, "A", 1)); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	in := store.InTx(tx)
	// A command deciding on a stale version: the append reads the head
	// (taking an xid) and fails, leaving the transaction usable.
	if _, err := in.Append(ctx, stream, eventstore.Exact(5), storetest.Event(m, "X", 2)); !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("append at a stale version: %v", err)
	}
	// Another transaction, newer, commits version 2 meanwhile.
	if _, err := other.Append(ctx, stream, eventstore.Exact(1), storetest.Event(m, "B", 2)); err != nil {
		t.Fatal(err)
	}
	// Decided again on a fresh read, in the same transaction.
	if got, err := in.ReadStream(ctx, stream, 1, 0); err != nil || len(got) != 2 {
		t.Fatalf("read: %d events, %v", len(got), err)
	}
	if _, err := in.Append(ctx, stream, eventstore.Exact(2), storetest.Event(m, "C", 3)); !errors.Is(err, eventstore.ErrStaleTransaction) {
		t.Fatalf("append onto a head newer than the transaction: %v, want %v", err, eventstore.ErrStaleTransaction)
	}
}

func TestVerifyReadsPastTheReadLimit(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	store := pgstore.New(appPool(t, url))
	m := storetest.NewMerchant()
	const streams, each = 11, 1000 // 11,000 events: more than one read returns
	for i := 0; i < streams; i++ {
		batch := make([]eventstore.EventData, each)
		for j := range batch {
			batch[j] = storetest.Event(m, "Sale", j)
		}
		if _, err := store.Append(ctx, storetest.NewStream(m, "transaction"), eventstore.NoStream, batch...); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := eventstore.Verify(ctx, store, eventstore.VerifyOptions{Filter: eventstore.Filter{MerchantID: m}, BatchSize: 20_000})
	if err != nil {
		t.Fatal(err)
	}
	if rep.EventsChecked != streams*each || rep.StreamsChecked != streams || len(rep.Breaks) != 0 {
		t.Fatalf("verify checked %d events in %d streams (breaks %v); want %d in %d", rep.EventsChecked, rep.StreamsChecked, rep.Breaks, streams*each, streams)
	}
}

func TestMerchantColumnMatchesTheStream(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	c := superuser(t, url)
	m, other := storetest.NewMerchant(), storetest.NewMerchant()
	insert := `INSERT INTO events (event_id, stream_name, version, merchant_id, event_type, schema_version, data, metadata, hash)
        VALUES (gen_random_uuid(), $1, 1, $2, 'A', 1, '{}', '{}', '\x00')`
	if _, err := c.Exec(ctx, insert, storetest.NewStream(m, "transaction"), other); err == nil {
		t.Fatal("an event filed under another merchant than its stream's was stored")
	}
	if _, err := c.Exec(ctx, insert, "no-merchant-here", m); err == nil {
		t.Fatal("an event whose stream names no merchant was stored")
	}
	if _, err := c.Exec(ctx, insert, storetest.NewStream(m, "transaction"), m); err != nil {
		t.Fatalf("a consistent row was refused: %v", err)
	}
}
