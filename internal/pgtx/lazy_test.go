package pgtx_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"pos/internal/pgtest"
	"pos/internal/pgtx"
)

// conns returns two connections to a fresh database with a table t (id
// primary key): one for the transaction under test, one to look from
// outside it.
func conns(t *testing.T) (*pgx.Conn, *pgx.Conn) {
	t.Helper()
	url := pgtest.NewEmptyDatabase(t)
	ctx := context.Background()
	open := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(ctx) })
		return c
	}
	in, out := open(), open()
	if _, err := out.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	return in, out
}

// wantRows fails the test unless t holds n rows, as seen from c (when).
func wantRows(t *testing.T, c *pgx.Conn, n int, when string) {
	t.Helper()
	if got := count(t, c); got != n {
		t.Fatalf("%d rows %s, want %d", got, when, n)
	}
}

func count(t *testing.T, c *pgx.Conn) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Whatever the first call, it runs inside the transaction: its write is
// invisible outside until Commit, and gone after Rollback; the connection
// is idle once the transaction ended.
func TestLazyFirstStatementIsInTheTransaction(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		first func(*pgx.Conn, *pgtx.Lazy) error
	}{
		{"Exec", func(_ *pgx.Conn, tx *pgtx.Lazy) error {
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 1)
			return err
		}},
		{"Query", func(_ *pgx.Conn, tx *pgtx.Lazy) error {
			rows, err := tx.Query(ctx, "INSERT INTO t VALUES ($1) RETURNING id", 1)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
			if err == nil && (len(ids) != 1 || ids[0] != 1) {
				err = errors.New("wrong rows")
			}
			return err
		}},
		{"QueryRow", func(_ *pgx.Conn, tx *pgtx.Lazy) error {
			var id int
			return tx.QueryRow(ctx, "INSERT INTO t VALUES ($1) RETURNING id", 1).Scan(&id)
		}},
		{"SendBatch", func(_ *pgx.Conn, tx *pgtx.Lazy) error {
			b := &pgx.Batch{}
			b.Queue("INSERT INTO t VALUES ($1)", 1)
			b.Queue("SELECT 1")
			return tx.SendBatch(ctx, b).Close()
		}},
	} {
		for _, commit := range []bool{true, false} {
			in, out := conns(t)
			tx := pgtx.Begin(in)
			if err := tc.first(in, tx); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 2); err != nil {
				t.Fatalf("%s: second statement: %v", tc.name, err)
			}
			if n := count(t, out); n != 0 {
				t.Fatalf("%s: %d rows visible outside before the end: the first statement ran outside a transaction", tc.name, n)
			}
			end, want := tx.Rollback, 0
			if commit {
				end, want = tx.Commit, 2
			}
			if err := end(ctx); err != nil {
				t.Fatalf("%s: end: %v", tc.name, err)
			}
			if n := count(t, out); n != want {
				t.Fatalf("%s (commit %v): %d rows after the end, want %d", tc.name, commit, n, want)
			}
			if s := in.PgConn().TxStatus(); s != 'I' {
				t.Fatalf("%s: connection status %c after the end, want idle", tc.name, s)
			}
		}
	}
}

// ExecCommit ends the transaction with its statement: in one query when it
// is the first, rolled back when it fails; after it, Commit and Rollback
// send nothing.
func TestLazyCommitInsideTheStatement(t *testing.T) {
	ctx := context.Background()
	in, out := conns(t)
	if _, err := out.Exec(ctx, "INSERT INTO t VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	commitWith := func(tx *pgtx.Lazy, id int) error {
		_, err := tx.ExecCommit(ctx, "INSERT INTO t VALUES ($1)", id)
		return err
	}

	// First statement, a conflict: nothing stays, the connection is idle.
	tx := pgtx.Begin(in)
	var pgErr *pgconn.PgError
	if err := commitWith(tx, 7); !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Fatalf("conflicting insert: %v, want a unique violation", err)
	}
	if s := in.PgConn().TxStatus(); s != 'I' {
		t.Fatalf("connection status %c after a failed first statement, want idle", s)
	}
	_ = tx.Rollback(ctx)

	// After an earlier statement, a conflict: the COMMIT in its pipeline
	// does not run, and Rollback undoes the earlier statement too.
	tx = pgtx.Begin(in)
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 8); err != nil {
		t.Fatal(err)
	}
	if err := commitWith(tx, 7); !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Fatalf("conflicting insert after another: %v, want a unique violation", err)
	}
	if s := in.PgConn().TxStatus(); s != 'E' {
		t.Fatalf("connection status %c after a failed last statement, want in a failed transaction", s)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("Rollback: %v", err)
	}

	// After an earlier statement, and as the first one: both commit.
	for _, ids := range [][]int{{1, 2}, {3}} {
		tx := pgtx.Begin(in)
		for _, id := range ids[:len(ids)-1] {
			if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", id); err != nil {
				t.Fatal(err)
			}
		}
		if err := commitWith(tx, ids[len(ids)-1]); err != nil {
			t.Fatalf("insert and commit %v: %v", ids, err)
		}
		if err := tx.Rollback(ctx); !errors.Is(err, pgx.ErrTxClosed) {
			t.Fatalf("Rollback after ExecCommit: %v, want ErrTxClosed", err)
		}
		if s := in.PgConn().TxStatus(); s != 'I' {
			t.Fatalf("connection status %c after the commit, want idle", s)
		}
	}
	if n := count(t, out); n != 4 {
		t.Fatalf("%d rows, want 4 (7, 1, 2, 3)", n)
	}
}

// A savepoint rolled back keeps the transaction's earlier work; a
// transaction that ran nothing ends without a statement.
func TestLazySavepointAndEmptyTransaction(t *testing.T) {
	ctx := context.Background()
	in, out := conns(t)
	tx := pgtx.Begin(in)
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Exec(ctx, "INSERT INTO t VALUES (1)"); err == nil {
		t.Fatal("duplicate insert in the savepoint succeeded")
	}
	if err := sp.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, out); n != 1 {
		t.Fatalf("%d rows, want the 1 from before the savepoint", n)
	}

	empty := pgtx.Begin(in)
	if err := empty.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := empty.Commit(ctx); !errors.Is(err, pgx.ErrTxClosed) {
		t.Fatalf("second Commit: %v, want ErrTxClosed", err)
	}
}

// A first statement that fails before BEGIN reaches the server fails the
// transaction, as it would a begun one: later statements are refused and
// Commit reports a rollback. A first statement without arguments may be
// several, as pgx's Exec allows.
func TestLazyFailedFirstStatementAndStatementsWithoutArguments(t *testing.T) {
	ctx := context.Background()
	in, out := conns(t)
	tx := pgtx.Begin(in)
	if _, err := tx.Query(ctx, "SELEC $1", 1); err == nil {
		t.Fatal("a malformed first statement succeeded")
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 1); err == nil {
		t.Fatal("a statement after the failed first one succeeded")
	}
	if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("Commit after a failed first statement: %v, want ErrTxCommitRollback", err)
	}
	if n := count(t, out); n != 0 {
		t.Fatalf("%d rows after a failed transaction, want 0", n)
	}

	tx = pgtx.Begin(in)
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"); err != nil {
		t.Fatalf("two statements without arguments: %v", err)
	}
	if n := count(t, out); n != 0 {
		t.Fatalf("%d rows visible outside before the end, want 0", n)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, out); n != 2 {
		t.Fatalf("%d rows after the commit, want 2", n)
	}
}

// ExecCommit as the first statement keeps the transaction's options: in a
// read-only transaction its insert is refused (a plain "begin; …; commit"
// would have written the row).
func TestLazyExecCommitFirstKeepsTheOptions(t *testing.T) {
	ctx := context.Background()
	in, out := conns(t)
	tx := pgtx.BeginTx(in, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	var pgErr *pgconn.PgError
	if _, err := tx.ExecCommit(ctx, "INSERT INTO t VALUES ($1)", 9); !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Fatalf("insert in a read-only transaction: %v, want read_only_sql_transaction", err)
	}
	if err := tx.Abort(ctx); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if s := in.PgConn().TxStatus(); s != 'I' {
		t.Fatalf("connection status %c after Abort, want idle", s)
	}
	if n := count(t, out); n != 0 {
		t.Fatalf("%d rows, want none", n)
	}
}

// Held writes go out, in order, with the next statement that reads (whose
// snapshot sees them) or with the COMMIT; outside, nothing shows before the
// commit. Held before a transaction began, they go after its BEGIN.
func TestLazyHeldWritesTravelWithTheNextRead(t *testing.T) {
	ctx := context.Background()
	in, out := conns(t)
	tx := pgtx.Begin(in)
	tx.HoldWrites()
	defer func() { _ = tx.Rollback(ctx) }()
	for _, id := range []int{1, 2} {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", id); err != nil {
			t.Fatal(err)
		}
	}
	if s := in.PgConn().TxStatus(); s != 'I' {
		t.Fatalf("connection status %c with only held writes, want idle (nothing sent)", s)
	}
	var n int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM t WHERE id <= $1", 10).Scan(&n); err != nil || n != 2 {
		t.Fatalf("read after two held inserts: %d rows, %v; want 2", n, err)
	}
	wantRows(t, out, 0, "outside before the commit")
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 3); err != nil {
		t.Fatal(err)
	}
	// A batch goes after the held write too.
	var after int
	b := &pgx.Batch{}
	b.Queue("SELECT count(*) FROM t WHERE id <= $1", 10).QueryRow(func(r pgx.Row) error { return r.Scan(&after) })
	if err := tx.SendBatch(ctx, b).Close(); err != nil || after != 3 {
		t.Fatalf("batch after a held insert: %d rows, %v; want 3", after, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 4); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecCommit(ctx, "INSERT INTO t VALUES ($1)", 5); err != nil {
		t.Fatalf("held insert, insert and commit: %v", err)
	}
	wantRows(t, out, 5, "after the commit")
}

// A held write that fails fails the call that carries it, naming it, and
// the transaction with it: Rollback leaves nothing. A rollback with writes
// still held sends nothing.
func TestLazyHeldWriteFailures(t *testing.T) {
	ctx := context.Background()
	in, out := conns(t)
	if _, err := out.Exec(ctx, "INSERT INTO t VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	carriers := map[string]func(*pgtx.Lazy) error{
		"Query": func(tx *pgtx.Lazy) error {
			var n int
			return tx.QueryRow(ctx, "SELECT count(*) FROM t WHERE id > $1", 0).Scan(&n)
		},
		"ExecCommit": func(tx *pgtx.Lazy) error {
			_, err := tx.ExecCommit(ctx, "INSERT INTO t VALUES ($1)", 9)
			return err
		},
	}
	for name, carry := range carriers {
		t.Run(name, func(t *testing.T) {
			tx := pgtx.Begin(in)
			tx.HoldWrites()
			if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 8); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 7); err != nil { // a conflict, held
				t.Fatal(err)
			}
			err := carry(tx)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "23505" || !strings.Contains(err.Error(), "INSERT INTO t VALUES") {
				t.Fatalf("the call carrying a conflicting held insert: %v, want a unique violation naming the insert", err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatalf("Rollback: %v", err)
			}
			wantRows(t, out, 1, "after the rollback (only the 7 from before)")
		})
	}
	tx := pgtx.Begin(in)
	tx.HoldWrites()
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 8); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if s, got := in.PgConn().TxStatus(), count(t, out); s != 'I' || got != 1 {
		t.Fatalf("after rolling back held writes: status %c, %d rows; want idle and 1", s, got)
	}
}

// In a transaction already begun, held writes travel with the next read
// (QueryRow included), the failing one among them is named, and a call
// that carries them but fails before they ran (its context ended) loses
// them: the transaction then commits nothing.
func TestLazyHeldWritesAfterBegin(t *testing.T) {
	ctx := context.Background()
	in, out := conns(t)
	if _, err := out.Exec(ctx, "CREATE TABLE u (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	begun := func() *pgtx.Lazy {
		t.Helper()
		tx := pgtx.Begin(in)
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 1); err != nil { // begins it
			t.Fatal(err)
		}
		tx.HoldWrites()
		return tx
	}
	read := func(tx *pgtx.Lazy, c context.Context) (int, error) {
		var n int
		err := tx.QueryRow(c, "SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM u) WHERE $1", true).Scan(&n)
		return n, err
	}

	tx := begun()
	if _, err := tx.Exec(ctx, "INSERT INTO u VALUES ($1)", 1); err != nil {
		t.Fatal(err)
	}
	if n, err := read(tx, ctx); err != nil || n != 2 {
		t.Fatalf("read after a held insert in a begun transaction: %d rows, %v; want 2", n, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO u VALUES ($1)", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 1); err != nil { // a conflict, held
		t.Fatal(err)
	}
	if _, err := read(tx, ctx); err == nil || !strings.Contains(err.Error(), "INSERT INTO t VALUES") {
		t.Fatalf("read carrying a conflicting held insert into t: %v, want the insert into t named", err)
	}
	_ = tx.Rollback(ctx)

	tx = begun()
	if _, err := tx.Exec(ctx, "INSERT INTO u VALUES ($1)", 3); err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := read(tx, ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("read on an ended context: %v, want context.Canceled", err)
	}
	if _, err := tx.ExecCommit(ctx, "INSERT INTO u VALUES ($1)", 4); err == nil {
		t.Fatal("ExecCommit after the held insert was lost succeeded")
	}
	_ = tx.Rollback(ctx)
	wantRows(t, out, 0, "in t")
	var inU int
	if err := out.QueryRow(ctx, "SELECT count(*) FROM u").Scan(&inU); err != nil || inU != 0 {
		t.Fatalf("%d rows in u (%v), want 0", inU, err)
	}
}
