// Package pgtx holds a pgx.Tx that saves the round trip of its BEGIN.
package pgtx

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Lazy is a pgx.Tx on one connection whose BEGIN goes out with its first
// statement, in one round trip, instead of on its own: pgx's Batch.BeginTx
// pipelines it, and the transaction that batch begins serves every later
// call. A transaction that runs no statement sends nothing at all.
//
// ExecCommit runs a last statement and the COMMIT in one round trip. A first
// statement that fails before BEGIN reached the server (it could not be
// prepared or encoded) fails the transaction, as a failed statement fails
// a pgx one: later calls return that error and Commit rolls back. Not
// safe for concurrent use, as no pgx.Tx is.
type Lazy struct {
	conn   *pgx.Conn
	opts   pgx.TxOptions
	tx     pgx.Tx // nil until begun
	closed bool   // ended before it began, or by ExecCommit
	failed error  // the first statement's, when BEGIN never ran
	// hold and held: see HoldWrites.
	hold bool
	held []stmt
}

// stmt is a statement and its arguments.
type stmt struct {
	sql  string
	args []any
}

// HoldWrites makes Exec hold its statement back, to go out in the round
// trip of the next statement that returns rows (Query, QueryRow) or of
// ExecCommit: a transaction that reads, writes, reads, writes and commits
// costs a round trip per read and one for the rest. SendBatch, Begin,
// CopyFrom and Commit send the held statements first, in a round trip of
// their own. Statements run in the order they were called. A held Exec
// returns an empty CommandTag and no error; a failure to send or run the
// held statements is returned by the call that carries them, naming the
// first one that failed, and fails the transaction: every later call
// returns it and Commit rolls back. For writers that never look at an
// Exec's result (the projection runner's transactions). The arguments are
// kept, not copied, until they are sent: do not change them meanwhile.
// Statements without arguments, which pgx runs in the simple protocol, are
// not held.
func (t *Lazy) HoldWrites() { t.hold = true }

// sendHeld sends the held statements and then extra in one round trip
// (after BEGIN, if the transaction has not begun), and returns the batch
// with the held statements' results read: the next result is extra's
// first. The held statements are gone whatever the outcome.
func (t *Lazy) sendHeld(ctx context.Context, extra ...stmt) (pgx.BatchResults, error) {
	held := t.held
	t.held = nil
	b := &pgx.Batch{}
	for _, st := range append(held, extra...) {
		b.Queue(st.sql, st.args...)
	}
	var br pgx.BatchResults
	if t.tx == nil {
		nb := &pgx.Batch{}
		nb.BeginTx(t.opts)
		nb.QueuedQueries = append(nb.QueuedQueries, b.QueuedQueries...)
		var err error
		if br, err = t.send(ctx, nb); err != nil {
			if len(held) > 0 {
				t.failed = fmt.Errorf("pgtx: held statements from %q: %w", label(held[0].sql), err)
				return nil, t.failed
			}
			return nil, err
		}
	} else {
		br = t.tx.SendBatch(ctx, b)
	}
	for _, st := range held {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			// Sent or not, the held statements are lost to the
			// transaction: nothing may commit without them.
			t.failed = fmt.Errorf("pgtx: held statement %q (or its round trip): %w", label(st.sql), err)
			return nil, t.failed
		}
	}
	return br, nil
}

// flushHeld sends the held statements, if any, on their own.
func (t *Lazy) flushHeld(ctx context.Context) error {
	if len(t.held) == 0 {
		return nil
	}
	br, err := t.sendHeld(ctx)
	if err != nil {
		return err
	}
	return br.Close()
}

// label is the start of sql, on one line, to name it in an error.
func label(sql string) string {
	r := []rune(strings.Join(strings.Fields(sql), " "))
	if len(r) > 60 {
		return string(r[:60]) + "…"
	}
	return string(r)
}

// Begin returns a transaction on conn that has sent nothing yet. conn must
// be idle (in no transaction) and used by nothing else until it ends.
func Begin(conn *pgx.Conn) *Lazy { return &Lazy{conn: conn} }

// BeginTx is Begin with the transaction's options (its BEGIN says them).
func BeginTx(conn *pgx.Conn, opts pgx.TxOptions) *Lazy { return &Lazy{conn: conn, opts: opts} }

var _ pgx.Tx = (*Lazy)(nil)

// begun returns the transaction, sending BEGIN alone first if need be (for
// the calls that cannot carry it).
func (t *Lazy) begun(ctx context.Context) (pgx.Tx, error) {
	if t.closed {
		return nil, pgx.ErrTxClosed
	}
	if t.failed != nil {
		return nil, t.failed
	}
	if t.tx == nil {
		tx, err := t.conn.BeginTx(ctx, t.opts)
		if err != nil {
			return nil, err
		}
		t.tx = tx
	}
	return t.tx, nil
}

// usable returns why no statement may run, if one may not.
func (t *Lazy) usable() error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	return t.failed
}

// open reports whether the transaction began and has not ended here.
func (t *Lazy) open() bool { return !t.closed && t.tx != nil }

// send sends b, which begins with BEGIN (pgx's Batch.BeginTx), and returns
// it with BEGIN's result read: the transaction it begins serves every later
// call.
func (t *Lazy) send(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	br := t.conn.SendBatch(ctx, b)
	t.tx = br.Tx()
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		if t.conn.PgConn().TxStatus() == 'I' {
			// BEGIN never ran (Close closed the transaction too): the
			// statement fails the transaction, as it would a begun one.
			t.tx, t.failed = nil, err
		}
		return nil, err
	}
	return br, nil
}

// batchable reports whether a statement with args can be queued in a batch
// as pgx would run it alone: it has arguments and none of pgx's options
// (with no arguments pgx's Exec uses the simple protocol, in which sql may
// be several statements; an option is not an argument).
func batchable(args []any) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0].(type) {
	case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
		return false
	}
	return true
}

// Exec implements pgx.Tx (see HoldWrites).
func (t *Lazy) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.hold && batchable(args) {
		if err := t.usable(); err != nil {
			return pgconn.CommandTag{}, err
		}
		t.held = append(t.held, stmt{sql, args})
		return pgconn.CommandTag{}, nil
	}
	if err := t.flushHeld(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	if t.tx != nil || !batchable(args) {
		tx, err := t.begun(ctx)
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		return tx.Exec(ctx, sql, args...)
	}
	if err := t.usable(); err != nil {
		return pgconn.CommandTag{}, err
	}
	br, err := t.sendHeld(ctx, stmt{sql, args}) // nothing is held here: BEGIN and sql
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query implements pgx.Tx; held statements go first, in its round trip, and
// so does BEGIN when the transaction has not begun.
func (t *Lazy) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.tx != nil && len(t.held) == 0 || !batchable(args) {
		if err := t.flushHeld(ctx); err != nil {
			return nil, err
		}
		tx, err := t.begun(ctx)
		if err != nil {
			return nil, err
		}
		return tx.Query(ctx, sql, args...)
	}
	if err := t.usable(); err != nil {
		return nil, err
	}
	br, err := t.sendHeld(ctx, stmt{sql, args})
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// batchRows are a query's rows that end the batch which carried them once
// read or closed (the connection is busy until then).
type batchRows struct {
	pgx.Rows
	br  pgx.BatchResults
	err error
}

func (r *batchRows) Close() {
	if r.br == nil {
		return
	}
	r.Rows.Close()
	r.err = r.br.Close()
	r.br = nil
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// QueryRow implements pgx.Tx.
func (t *Lazy) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.open() && len(t.held) == 0 {
		return t.tx.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return &row{rows: rows, err: err}
}

// row is the first row of rows, as pgx's QueryRow gives it.
type row struct {
	rows pgx.Rows
	err  error
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// SendBatch implements pgx.Tx: BEGIN goes first in b's round trip.
func (t *Lazy) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.usable(); err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	if err := t.flushHeld(ctx); err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	if t.tx != nil {
		return t.tx.SendBatch(ctx, b)
	}
	nb := &pgx.Batch{}
	nb.BeginTx(t.opts)
	nb.QueuedQueries = append(nb.QueuedQueries, b.QueuedQueries...)
	br, err := t.send(ctx, nb)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return br
}

// ExecCommit runs sql (with args) and COMMIT in one round trip: the
// transaction's last statement and its end. After an earlier statement
// they go as one pipeline (sql keeps its prepared statement); as the
// first, with BEGIN in front, as one simple-protocol query (or after a
// BEGIN of its own, when the transaction has options). When sql fails,
// the COMMIT does not run and the transaction is left to Rollback (or,
// when sql was its first statement, already rolled back). After it
// succeeds, Commit and Rollback return pgx.ErrTxClosed and send nothing.
func (t *Lazy) ExecCommit(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.usable(); err != nil {
		return pgconn.CommandTag{}, err
	}
	if len(t.held) == 0 && t.tx == nil && t.opts != (pgx.TxOptions{}) {
		// The one-query form below cannot say the options: BEGIN first.
		if _, err := t.begun(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
	}
	if len(t.held) == 0 && t.tx == nil {
		args = append([]any{pgx.QueryExecModeSimpleProtocol}, args...)
		tag, err := t.conn.Exec(ctx, "begin; "+sql+"; commit", args...)
		if err != nil && t.conn.PgConn().TxStatus() != 'I' {
			// It began no pgx transaction to roll back later.
			_, _ = t.conn.Exec(context.WithoutCancel(ctx), "rollback")
		}
		t.closed = true
		return tag, err
	}
	// One pipeline: the held statements, sql and COMMIT. A failed statement
	// makes the server skip the rest of it: the COMMIT never runs, and the
	// transaction waits for Rollback.
	br, err := t.sendHeld(ctx, stmt{sql, args}, stmt{"commit", nil})
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		t.closed = true
	}
	return tag, err
}

// Commit implements pgx.Tx. After a first statement that failed before
// BEGIN ran, it reports pgx.ErrTxCommitRollback, as pgx does for a failed
// transaction.
func (t *Lazy) Commit(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	if err := t.flushHeld(ctx); err != nil {
		_ = t.Rollback(ctx)
		return err
	}
	if t.failed != nil && t.tx != nil {
		// Held statements failed: what committed would lack them.
		_ = t.Rollback(ctx)
		t.closed = true
		return pgx.ErrTxCommitRollback
	}
	if t.tx == nil {
		t.closed = true
		if t.failed != nil {
			return pgx.ErrTxCommitRollback
		}
		return nil
	}
	return t.tx.Commit(ctx)
}

// Rollback implements pgx.Tx.
func (t *Lazy) Rollback(ctx context.Context) error {
	t.held = nil
	if t.closed {
		return pgx.ErrTxClosed
	}
	if t.tx == nil {
		t.closed = true
		return nil
	}
	return t.tx.Rollback(ctx)
}

// Abort rolls the transaction back on a context that ctx's end does not
// cancel (a cancelled ROLLBACK would leave the connection inside the
// transaction), bounded by rollbackTimeout so that a stalled server cannot
// hold the caller. For deferred cleanup on every path.
func (t *Lazy) Abort(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	return t.Rollback(ctx)
}

const rollbackTimeout = 5 * time.Second

// Begin implements pgx.Tx: a savepoint of the transaction (begun first).
func (t *Lazy) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.flushHeld(ctx); err != nil {
		return nil, err
	}
	tx, err := t.begun(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Begin(ctx)
}

// CopyFrom implements pgx.Tx.
func (t *Lazy) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.flushHeld(ctx); err != nil {
		return 0, err
	}
	tx, err := t.begun(ctx)
	if err != nil {
		return 0, err
	}
	return tx.CopyFrom(ctx, table, columns, src)
}

// LargeObjects implements pgx.Tx. It needs the transaction begun (by any
// statement) first.
func (t *Lazy) LargeObjects() pgx.LargeObjects {
	if t.tx == nil {
		panic("pgtx: LargeObjects before the transaction began")
	}
	return t.tx.LargeObjects()
}

// Prepare implements pgx.Tx.
func (t *Lazy) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return t.conn.Prepare(ctx, name, sql)
}

// Conn implements pgx.Tx.
func (t *Lazy) Conn() *pgx.Conn { return t.conn }
