package rebuild_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/money"
	"pos/domain/stock"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/internal/pgpool"
	"pos/projections"
	"pos/projections/projtest"
	"pos/rebuild"
)

var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// history appends, for each of merchants merchants, a time-zone change and
// sales (paid, completed, voided, refunded) with their stock movements.
func history(t *testing.T, env *projtest.Env, merchants, sales int) {
	t.Helper()
	zones := []string{"Asia/Jakarta", "America/Los_Angeles", "Pacific/Auckland"}
	for m := range merchants {
		merchant, branch := projtest.NewID(t), projtest.NewID(t)
		env.ChangeSettings(t, merchant, zones[m%len(zones)], t0.Add(-time.Hour))
		appendSales(t, env, merchant, branch, sales, t0)
	}
}

// appendSales appends n sales of merchant at branch from at on, one SKU's
// ledger receiving and selling what they sell.
func appendSales(t *testing.T, env *projtest.Env, merchant, branch uuid.UUID, n int, at time.Time) {
	t.Helper()
	key := stock.NewKey(merchant, branch, "SKU-1")
	ledger := stock.New(key)
	stream := eventstore.StreamName(projections.StockCategory, merchant.String(), key.LedgerID.String())
	move := func(decide func(*stock.Ledger) ([]stock.Event, error)) {
		t.Helper()
		events, err := decide(ledger)
		if err != nil {
			t.Fatalf("ledger: %v", err)
		}
		out := make([]interface{ EventType() string }, len(events))
		for i, e := range events {
			if err := ledger.Apply(e); err != nil {
				t.Fatalf("apply: %v", err)
			}
			out[i] = e
		}
		env.Append(t, stream, merchant.String(), out...)
	}
	move(func(l *stock.Ledger) ([]stock.Event, error) {
		return l.Receive(stock.Receive{ReceiptID: projtest.NewID(t), Qty: int64(3 * n), UnitCost: 700, By: "clerk", At: at})
	})
	for i := range n {
		when := at.Add(time.Duration(i) * 7 * time.Hour) // across days and zones
		s := env.OpenSale(t, merchant, branch, fmt.Sprintf("%03d-%03d", i/1000, i%1000), when)
		line := s.AddItem("SKU-1", 2, 1500, 1100, when)
		s.AddItem("SKU-2", 1, 990, 0, when)
		s.Checkout(when)
		move(func(l *stock.Ledger) ([]stock.Event, error) {
			return l.Reserve(stock.Reserve{TransactionID: s.ID, Qty: 2, At: when})
		})
		switch i % 4 {
		case 0:
			s.PayDue(when)
			s.Complete(when)
			move(func(l *stock.Ledger) ([]stock.Event, error) {
				return l.Sell(stock.Sell{TransactionID: s.ID, Qty: 2, At: when})
			})
		case 1:
			s.Void(when)
			move(func(l *stock.Ledger) ([]stock.Event, error) {
				return l.Release(stock.Release{TransactionID: s.ID, Reason: "voided", At: when})
			})
		case 2:
			p := s.Pay(transaction.MethodCard, s.Aggregate().Due(), when)
			s.Confirm(p, when)
			s.RefundLine(line, 1, when.Add(26*time.Hour))
		case 3:
			s.PayDue(when)
			s.RefundAmount(money.Amount(500), when.Add(time.Hour))
		}
	}
}

// Queries reading every read-model row and the projections' bookkeeping as
// text, a row per line, in key order.
var modelQueries = []string{
	`SELECT 'rm_transactions ' || to_jsonb(t)::text FROM rm_transactions t ORDER BY merchant_id, transaction_id`,
	`SELECT 'rm_daily_sales ' || to_jsonb(t)::text FROM rm_daily_sales t ORDER BY merchant_id, branch_id, business_day, currency`,
	`SELECT 'rm_daily_sales_facts ' || to_jsonb(t)::text FROM rm_daily_sales_facts t ORDER BY merchant_id, transaction_id`,
	`SELECT 'rm_merchant_settings ' || to_jsonb(t)::text FROM rm_merchant_settings t ORDER BY merchant_id`,
	`SELECT 'rm_stock_levels ' || to_jsonb(t)::text FROM rm_stock_levels t ORDER BY merchant_id, ledger_id`,
	`SELECT 'rm_stock_movements ' || to_jsonb(t)::text FROM rm_stock_movements t ORDER BY merchant_id, ledger_id, version`,
	`SELECT 'rm_stock_reservations ' || to_jsonb(t)::text FROM rm_stock_reservations t ORDER BY merchant_id, ledger_id, transaction_id`,
	`SELECT concat_ws(' ', 'projection_streams', projection, stream_name, version) FROM projection_streams ORDER BY projection, stream_name`,
	`SELECT concat_ws(' ', 'projection_checkpoints', projection, partition, major, minor) FROM projection_checkpoints ORDER BY projection, partition`,
}

// catalogQueries describe the read-model tables and projection_streams as
// the catalog holds them: every table and partition with its row security,
// policies, grants, and its indexes and constraints by name. A swap must
// leave them as they were.
var catalogQueries = []string{
	`SELECT concat_ws(' ', c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relacl::text, pg_get_expr(c.relpartbound, c.oid))
	   FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND (c.relname LIKE 'rm\_%' OR c.relname LIKE 'projection\_streams%')
	    AND c.relkind IN ('r', 'p') ORDER BY 1`,
	`SELECT concat_ws(' ', polrelid::regclass::text, polname, polcmd, polpermissive, polroles::text, pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid))
	   FROM pg_policy WHERE polrelid::regclass::text LIKE 'rm\_%' ORDER BY 1`,
	`SELECT pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
	  WHERE c.relnamespace = 'public'::regnamespace AND (c.relname LIKE 'rm\_%' OR c.relname LIKE 'projection\_streams%') AND NOT c.relispartition ORDER BY 1`,
	`SELECT concat_ws(' ', conrelid::regclass::text, conname, pg_get_constraintdef(oid)) FROM pg_constraint
	  WHERE conrelid::regclass::text LIKE 'rm\_%' OR conrelid::regclass::text LIKE 'projection\_streams%' ORDER BY 1`,
}

// rows returns the rows of queries as the database's owner (a superuser:
// every merchant's rows).
func rows(t *testing.T, url string, queries ...string) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	var out []string
	for _, q := range queries {
		rs, err := c.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		lines, err := pgx.CollectRows(rs, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		out = append(out, lines...)
	}
	return strings.Join(out, "\n")
}

func exec(t *testing.T, url string, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func liveRunner(t *testing.T, env *projtest.Env) *projections.Runner {
	t.Helper()
	r, err := projections.NewRunner(env.Pool, env.Store, projections.Options{}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newRebuilder(t *testing.T, env *projtest.Env, opts rebuild.Options) *rebuild.Rebuilder {
	t.Helper()
	if opts.Count == nil {
		opts.Count = env.Store.CountAfter
	}
	return rebuild.New(t.Context(), env.Pool, env.URL, env.Store, opts)
}

// replayed empties the read models and the bookkeeping, replays the whole
// history with a live runner, and returns the model it built (modelQueries).
func replayed(t *testing.T, env *projtest.Env) string {
	t.Helper()
	c, err := pgx.Connect(t.Context(), env.URL)
	if err != nil {
		t.Fatal(err)
	}
	projtest.ResetReadModels(t, c)
	c.Close(context.Background())
	if _, err := liveRunner(t, env).Catchup(t.Context(), eventstore.Start); err != nil {
		t.Fatal(err)
	}
	return rows(t, env.URL, modelQueries...)
}

// firstDiff shows where two multi-line texts first differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i+1, gl, wl)
		}
	}
	return "equal"
}

// A rebuild of all projections replaces read models that went wrong with
// exactly what the live runner built from the same history, bookkeeping
// included, and leaves the tables' security and indexes as they were.
func TestRebuildAllEqualsTheLiveModel(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 3, 12)
	if _, err := liveRunner(t, env).Catchup(t.Context(), eventstore.Start); err != nil {
		t.Fatal(err)
	}
	want, wantCatalog := rows(t, env.URL, modelQueries...), rows(t, env.URL, catalogQueries...)
	if strings.Count(want, "rm_transactions ") != 36 || !strings.Contains(want, "rm_stock_movements ") {
		t.Fatalf("the live model misses rows:\n%s", want)
	}

	// What a projector bug would leave behind: wrong figures, lost rows.
	exec(t, env.URL, `UPDATE rm_transactions SET grand_total = 1`)
	exec(t, env.URL, `DELETE FROM rm_daily_sales WHERE business_day = (SELECT min(business_day) FROM rm_daily_sales)`)
	exec(t, env.URL, `UPDATE rm_stock_levels SET on_hand = on_hand + 5`)
	exec(t, env.URL, `DELETE FROM projection_streams WHERE projection = 'transactions'`)

	var reports []rebuild.Progress
	p, err := newRebuilder(t, env, rebuild.Options{}).Run(t.Context(), rebuild.All, func(p rebuild.Progress) { reports = append(reports, p) })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := rows(t, env.URL, modelQueries...); got != want {
		t.Fatalf("rebuilt model differs from the live one: %s", firstDiff(got, want))
	}
	if got := rows(t, env.URL, catalogQueries...); got != wantCatalog {
		t.Fatalf("swapped tables differ from the live ones: %s", firstDiff(got, wantCatalog))
	}
	total, err := env.Store.CountAfter(t.Context(), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != "done" || p.Done != total || p.Total != total || len(p.Projections) != 4 || p.Locked <= 0 || p.Locked > p.FinishedAt.Sub(p.StartedAt) {
		t.Fatalf("final progress %+v, want done with %d events of 4 projections, locked for part of its time", p, total)
	}
	if len(reports) == 0 || reports[len(reports)-1].State != "done" {
		t.Fatalf("progress reports %+v: want the last one done", reports)
	}
	if n := rows(t, env.URL, `SELECT count(*)::text FROM pg_namespace WHERE nspname LIKE 'pos\_rebuild%'`); n != "0" {
		t.Fatalf("%s shadow schemas left after the swap", n)
	}
}

// Rebuilding one projection swaps only its tables and bookkeeping; the
// settings it reads are rebuilt beside it (a day is the business day of the
// zone that held then) but the live settings table stays.
func TestRebuildOneProjectionSwapsOnlyItsTables(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 2, 8)
	if _, err := liveRunner(t, env).Catchup(t.Context(), eventstore.Start); err != nil {
		t.Fatal(err)
	}
	want := rows(t, env.URL, modelQueries...)
	oid := func(table string) string {
		return rows(t, env.URL, fmt.Sprintf(`SELECT '%s'::regclass::oid::text`, table))
	}
	settingsOID, transactionsOID := oid("rm_merchant_settings"), oid("rm_transactions")
	exec(t, env.URL, `TRUNCATE rm_daily_sales, rm_daily_sales_facts`)

	if _, err := newRebuilder(t, env, rebuild.Options{}).Run(t.Context(), "daily_sales", nil); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := rows(t, env.URL, modelQueries...); got != want {
		t.Fatalf("rebuilt daily sales differ from the live ones: %s", firstDiff(got, want))
	}
	if oid("rm_merchant_settings") != settingsOID || oid("rm_transactions") != transactionsOID {
		t.Fatal("a table the rebuild did not name was swapped")
	}
	if oid("rm_daily_sales") == "" {
		t.Fatal("no rm_daily_sales after the swap")
	}
}

// Queries keep being answered while a rebuild replays, and the live runner
// keeps applying new events; after the swap it goes on from the shadow's
// bookkeeping, so no event is lost or applied twice (the model equals a
// replay of the whole history).
func TestRebuildWhileSalesAndQueriesGoOn(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 2, 40)
	live := liveRunner(t, env)
	livePos, err := live.Catchup(t.Context(), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	merchant, branch := projtest.NewID(t), projtest.NewID(t)

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var sold, reads, failures atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	wg.Go(func() { // a till, and the live runner behind it
		// The runner goes on from where it got to, as a consumer of the
		// relay does: what the swap lost would stay lost.
		var err error
		for i := 0; ctx.Err() == nil && err == nil; i++ {
			appendSales(t, env, merchant, branch, 1, t0.Add(time.Duration(i)*time.Minute))
			sold.Add(1)
			livePos, err = live.Catchup(ctx, livePos)
		}
		if err != nil && ctx.Err() == nil {
			fail(fmt.Errorf("live runner: %w", err))
		}
	})
	api, err := pgpool.Open(t.Context(), env.URL, "pos_api", "", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	wg.Go(func() { // a reporting screen, as the query role reads
		for ctx.Err() == nil {
			err := pgx.BeginFunc(ctx, api, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SELECT set_config('pos.merchant_id', $1, true)`, merchant.String()); err != nil {
					return err
				}
				var n int
				return tx.QueryRow(ctx, `SELECT count(*) FROM rm_transactions WHERE merchant_id = $1`, merchant).Scan(&n)
			})
			if err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("query: %w", err))
			}
			reads.Add(1)
		}
	})
	for sold.Load() < 3 && failures.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	readsBefore := reads.Load()
	_, err = newRebuilder(t, env, rebuild.Options{}).Run(t.Context(), rebuild.All, nil)
	for n := sold.Load(); sold.Load() < n+3 && failures.Load() == 0; {
		time.Sleep(10 * time.Millisecond) // sales after the swap too
	}
	stop()
	wg.Wait()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if failures.Load() > 0 {
		t.Fatalf("%d failures while rebuilding, first: %v", failures.Load(), firstErr.Load())
	}
	if reads.Load() == readsBefore {
		t.Fatal("no query was answered during the rebuild")
	}
	if _, err := live.Catchup(t.Context(), livePos); err != nil { // the last sale
		t.Fatal(err)
	}
	got := rows(t, env.URL, modelQueries...)
	if n := strings.Count(got, `"merchant_id": "`+merchant.String()+`", "transaction_id"`); n != int(sold.Load()) {
		t.Errorf("the read model holds %d of the %d sales made during the rebuild", n, sold.Load())
	}

	// The whole history replayed from scratch gives the same model.
	if want := replayed(t, env); got != want {
		t.Fatalf("after the rebuild and the sales that went on, the model differs from a replay: %s", firstDiff(got, want))
	}
}

// One rebuild at a time per database, whichever process holds the slot; a
// name that is no projection is refused before anything starts.
func TestRebuildRefusals(t *testing.T) {
	env := projtest.New(t)
	b := newRebuilder(t, env, rebuild.Options{})
	if _, err := b.Run(t.Context(), "journal", nil); !errors.Is(err, rebuild.ErrUnknown) {
		t.Fatalf("unknown projection: %v, want ErrUnknown", err)
	}
	if _, err := b.Start(t.Context(), ""); !errors.Is(err, rebuild.ErrUnknown) {
		t.Fatalf("empty name: %v, want ErrUnknown", err)
	}

	// Another process's rebuild holds the slot's session lock.
	other, err := pgx.Connect(t.Context(), env.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(t.Context(), `SELECT pg_advisory_lock(x'72626c64'::int, 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Start(t.Context(), "transactions"); !errors.Is(err, rebuild.ErrBusy) {
		t.Fatalf("second rebuild: %v, want ErrBusy", err)
	}
	if _, err := other.Exec(t.Context(), `SELECT pg_advisory_unlock(x'72626c64'::int, 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Run(t.Context(), "transactions", nil); err != nil {
		t.Fatalf("rebuild once the slot is free: %v", err)
	}
}

// Status shows each projection's position and lag, a rebuild in progress,
// and the last one; a rebuild whose process died shows as abandoned.
func TestStatus(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 1, 4)
	b := newRebuilder(t, env, rebuild.Options{})
	total, err := env.Store.CountAfter(t.Context(), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	list, err := b.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 4 || list[0].Name != "merchant_settings" {
		t.Fatalf("Status lists %+v", list)
	}
	for _, p := range list {
		if !p.Position.IsZero() || p.Lag == nil || *p.Lag != total || p.Rebuild != nil || p.Last != nil {
			t.Fatalf("%s before any projection ran: position %s lag %v, want Start and %d", p.Name, p.Position, p.Lag, total)
		}
	}
	p, err := b.Run(t.Context(), "stock", nil)
	if err != nil {
		t.Fatal(err)
	}
	list, err = b.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		switch s.Name {
		case "stock":
			if s.Position.IsZero() || *s.Lag != 0 || s.Last == nil || s.Last.ID != p.ID || s.Last.State != "done" || s.Last.Done != total {
				t.Fatalf("stock after its rebuild: %+v lag %d (last %+v), rebuild %s of %d events", s, *s.Lag, s.Last, p.ID, total)
			}
		default:
			if s.Last != nil || !s.Position.IsZero() {
				t.Fatalf("%s moved with stock's rebuild: %+v", s.Name, s)
			}
		}
	}

	// A process that died mid-rebuild left its row running, without the lock.
	dead := projtest.NewID(t)
	exec(t, env.URL, `INSERT INTO projection_rebuilds (rebuild_id, projections, state, events_done, started_at, updated_at)
	                  VALUES ($1, '{transactions}', 'running', 7, now(), now())`, dead)
	list, err = b.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if tx := list[1]; tx.Name != "transactions" || tx.Rebuild != nil || tx.Last == nil || tx.Last.ID != dead || tx.Last.State != "abandoned" {
		t.Fatalf("transactions with a dead rebuild: %+v (last %+v)", tx, tx.Last)
	}
	if _, err := b.Run(t.Context(), "transactions", nil); err != nil {
		t.Fatal(err)
	}
	if st := rows(t, env.URL, `SELECT state FROM projection_rebuilds WHERE rebuild_id = '`+dead.String()+`'`); st != "abandoned" {
		t.Fatalf("the dead rebuild's row is %q after the next rebuild, want abandoned", st)
	}

	// While a rebuild runs, the one that ended before it still shows.
	held := &heldTransactions{held: make(chan struct{}), released: make(chan struct{})}
	held.armed.Store(true)
	running := newRebuilder(t, env, rebuild.Options{Projectors: func() []projections.Projector {
		return []projections.Projector{projections.MerchantSettings{}, held, projections.NewDailySales(), projections.Stock{}}
	}})
	done := make(chan error, 1)
	go func() { _, err := running.Run(t.Context(), rebuild.All, nil); done <- err }()
	<-held.held
	list, err = b.Status(t.Context())
	close(held.released)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := list[3]; st.Name != "stock" || st.Rebuild == nil || st.Rebuild.State != "running" || st.Last == nil || st.Last.ID != p.ID {
		t.Fatalf("stock while a rebuild runs: %+v (rebuild %+v, last %+v), want the running one and %s", st, st.Rebuild, st.Last, p.ID)
	}
}

// Only the session holding the slot may call the rebuild functions, only
// on the owner's read models and on a shadow schema of the right form, and
// the query role cannot see a shadow schema.
func TestShadowSchemaIsGuarded(t *testing.T) {
	env := projtest.New(t)
	ctx := t.Context()
	shadow := "pos_rebuild_" + strings.ReplaceAll(projtest.NewID(t).String(), "-", "")
	if _, err := env.Pool.Exec(ctx, `SELECT pos_rebuild_prepare('{rm_transactions}', $1)`, shadow); err == nil || !strings.Contains(err.Error(), "does not hold the rebuild slot") {
		t.Fatalf("prepare without the slot: %v", err)
	}
	// A table named like a read model but not the owner's.
	exec(t, env.URL, `CREATE TABLE rm_mine (merchant_id uuid); ALTER TABLE rm_mine OWNER TO pos_app`)
	withSlot := func(sql string, args ...any) error {
		return pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(x'72626c64'::int, 1)`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, sql, args...)
			return err
		})
	}
	for _, c := range []struct{ tables, shadow, want string }{
		{"{rm_mine}", shadow, "not a read-model table"},
		{"{projection_rebuilds}", shadow, "not a read-model table"},
		{"{rm_transactions}", "public", "not a shadow schema name"},
	} {
		if err := withSlot(`SELECT pos_rebuild_prepare($1::text[], $2)`, c.tables, c.shadow); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("prepare %s into %s: %v, want %q", c.tables, c.shadow, err, c.want)
		}
	}
	if err := withSlot(`SELECT pos_rebuild_prepare('{rm_transactions}', $1)`, shadow); err != nil {
		t.Fatalf("prepare with the slot: %v", err)
	}
	api, err := pgpool.Open(ctx, env.URL, "pos_api", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	if _, err := api.Exec(ctx, fmt.Sprintf(`SELECT 1 FROM %s.rm_transactions`, shadow)); err == nil || !strings.Contains(err.Error(), "permission denied for schema") {
		t.Fatalf("pos_api reading a shadow schema: %v", err)
	}
	// The next rebuild drops what an earlier one left behind.
	if _, err := newRebuilder(t, env, rebuild.Options{}).Run(ctx, "transactions", nil); err != nil {
		t.Fatal(err)
	}
	if n := rows(t, env.URL, `SELECT count(*)::text FROM pg_namespace WHERE nspname LIKE 'pos\_rebuild%'`); n != "0" {
		t.Fatalf("%s shadow schemas left after the next rebuild", n)
	}
}

// A Watcher tells every process of a swap, whichever process ran it, once.
func TestWatcherSeesSwaps(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 1, 2)
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	w, err := rebuild.NewWatcher(ctx, env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newRebuilder(t, env, rebuild.Options{}).Run(ctx, "transactions", nil); err != nil {
		t.Fatal(err)
	}
	calls, done := watch(ctx, w)
	if n := waitCalls(calls); n != 1 {
		t.Fatalf("%d calls after one swap, want 1", n)
	}
	stop()
	<-done
}

// watch runs w until ctx ends (done is closed then) and counts the swaps it
// reports.
func watch(ctx context.Context, w *rebuild.Watcher) (calls *atomic.Int64, done <-chan struct{}) {
	calls = new(atomic.Int64)
	d := make(chan struct{})
	go func() {
		defer close(d)
		w.Run(ctx, 10*time.Millisecond, slog.New(slog.DiscardHandler), func(context.Context) { calls.Add(1) })
	}()
	return calls, d
}

// waitCalls waits (up to 10 s) for a first swap reported, then 100 ms more
// for any other, and returns how many there were.
func waitCalls(calls *atomic.Int64) int64 {
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // and no more
	return calls.Load()
}

// heldTransactions is the transactions projector, whose ApplyBatch, once
// armed, tells held and waits for release: a live runner's transaction
// paused after it read its streams' versions and before it wrote.
type heldTransactions struct {
	projections.Transactions
	armed          atomic.Bool
	held, released chan struct{}
}

func (h *heldTransactions) ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	if h.armed.CompareAndSwap(true, false) {
		close(h.held)
		<-h.released
	}
	return h.Transactions.ApplyBatch(ctx, tx, events)
}

func (h *heldTransactions) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	return h.ApplyBatch(ctx, tx, []eventstore.RecordedEvent{e})
}

// A live transaction that read its stream versions before the swap cannot
// write after it: the swap waits for it (projection_streams is locked
// first), and the shadow then catches up past it. Without that lock the
// swap would go ahead, and the live transaction would apply its events a
// second time onto the shadow's rows.
func TestSwapWaitsForALiveTransactionThatReadItsVersions(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 1, 3)
	held := &heldTransactions{held: make(chan struct{}), released: make(chan struct{})}
	live, err := projections.NewRunner(env.Pool, env.Store, projections.Options{},
		projections.MerchantSettings{}, held, projections.NewDailySales(), projections.Stock{})
	if err != nil {
		t.Fatal(err)
	}
	pos, err := live.Catchup(t.Context(), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	merchant := projtest.NewID(t)
	appendSales(t, env, merchant, projtest.NewID(t), 1, t0)

	held.armed.Store(true)
	liveDone := make(chan error, 1)
	go func() { _, err := live.Catchup(t.Context(), pos); liveDone <- err }()
	<-held.held // the live transaction has read its versions and waits
	rebuilt := make(chan error, 1)
	go func() {
		_, err := newRebuilder(t, env, rebuild.Options{}).Run(t.Context(), rebuild.All, nil)
		rebuilt <- err
	}()

	// Release the live transaction once the swap waits for it (or, without
	// the lock, once the rebuild is over).
	var rebuildErr error
	waiting := func() bool {
		return rows(t, env.URL, `SELECT count(*)::text FROM pg_locks WHERE relation = 'projection_streams'::regclass AND NOT granted`) != "0"
	}
wait:
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case rebuildErr = <-rebuilt:
			rebuilt = nil
			break wait
		default:
		}
		if waiting() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the swap never waited and the rebuild never ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(held.released)
	if err := <-liveDone; err != nil {
		t.Fatalf("live transaction held across the swap: %v", err)
	}
	if rebuilt != nil {
		rebuildErr = <-rebuilt
	}
	if rebuildErr != nil {
		t.Fatalf("rebuild: %v", rebuildErr)
	}
	if got, want := rows(t, env.URL, modelQueries...), replayed(t, env); got != want {
		t.Fatalf("after a live transaction held across the swap, the model differs from a replay: %s", firstDiff(got, want))
	}
}

// A rebuild whose slot connection dies (the lock with it) fails, is recorded
// as failed, and never swaps; the next rebuild drops its shadows.
func TestLosingTheSlotFailsTheRebuild(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 1, 3)
	if _, err := liveRunner(t, env).Catchup(t.Context(), eventstore.Start); err != nil {
		t.Fatal(err)
	}
	oid := rows(t, env.URL, `SELECT 'rm_transactions'::regclass::oid::text`)
	held := &heldTransactions{held: make(chan struct{}), released: make(chan struct{})}
	held.armed.Store(true)
	b := newRebuilder(t, env, rebuild.Options{Projectors: func() []projections.Projector {
		return []projections.Projector{projections.MerchantSettings{}, held, projections.NewDailySales(), projections.Stock{}}
	}})
	done := make(chan error, 1)
	var last rebuild.Progress
	go func() {
		var err error
		last, err = b.Run(t.Context(), rebuild.All, nil)
		done <- err
	}()
	<-held.held // replaying
	exec(t, env.URL, `SELECT pg_terminate_backend(pid) FROM pg_locks
	                   WHERE locktype = 'advisory' AND classid = x'72626c64'::int::oid AND objid = 1 AND objsubid = 2 AND granted`)
	close(held.released)
	if err := <-done; err == nil {
		t.Fatal("the rebuild that lost its slot succeeded")
	}
	if st := rows(t, env.URL, `SELECT state FROM projection_rebuilds WHERE rebuild_id = '`+last.ID.String()+`'`); st != "failed" {
		t.Fatalf("the rebuild that lost its slot is recorded %q, want failed", st)
	}
	if rows(t, env.URL, `SELECT 'rm_transactions'::regclass::oid::text`) != oid {
		t.Fatal("the rebuild that lost its slot swapped")
	}
	if _, err := newRebuilder(t, env, rebuild.Options{}).Run(t.Context(), rebuild.All, nil); err != nil {
		t.Fatalf("the next rebuild: %v", err)
	}
	if n := rows(t, env.URL, `SELECT count(*)::text FROM pg_namespace WHERE nspname LIKE 'pos\_rebuild%'`); n != "0" {
		t.Fatalf("%s shadow schemas left", n)
	}
}

// failingTransactions is the transactions projector with a bug: it fails
// every batch.
type failingTransactions struct{ projections.Transactions }

func (failingTransactions) ApplyBatch(context.Context, pgx.Tx, []eventstore.RecordedEvent) error {
	return errors.New("a projector bug")
}

func (f failingTransactions) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	return f.ApplyBatch(ctx, tx, []eventstore.RecordedEvent{e})
}

// A rebuild that fails while it still holds the slot drops its shadow
// tables at once, rather than leave a copy of the read models behind until
// the next rebuild, and leaves the live tables as they were.
func TestAFailedRebuildDropsItsShadows(t *testing.T) {
	env := projtest.New(t)
	history(t, env, 1, 3)
	if _, err := liveRunner(t, env).Catchup(t.Context(), eventstore.Start); err != nil {
		t.Fatal(err)
	}
	want := rows(t, env.URL, modelQueries...)
	b := newRebuilder(t, env, rebuild.Options{Projectors: func() []projections.Projector {
		return []projections.Projector{projections.MerchantSettings{}, failingTransactions{}, projections.NewDailySales(), projections.Stock{}}
	}})
	p, err := b.Run(t.Context(), rebuild.All, nil)
	if err == nil || !strings.Contains(err.Error(), "a projector bug") {
		t.Fatalf("rebuild with a failing projector: %v", err)
	}
	if st := rows(t, env.URL, `SELECT state FROM projection_rebuilds WHERE rebuild_id = '`+p.ID.String()+`'`); st != "failed" {
		t.Fatalf("recorded %q, want failed", st)
	}
	if n := rows(t, env.URL, `SELECT count(*)::text FROM pg_namespace WHERE nspname LIKE 'pos\_rebuild%'`); n != "0" {
		t.Fatalf("%s shadow schemas left after the failure", n)
	}
	if got := rows(t, env.URL, modelQueries...); got != want {
		t.Fatalf("a failed rebuild changed the live model: %s", firstDiff(got, want))
	}
}
