package consume

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/relay"
)

// The batcher's tests apply real events of a fresh database through
// newBatcher and a real projections.Runner, the way the router's handlers
// call submit: one goroutine per message, all of one partition.

var batchT0 = time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC)

// batchEnv is one test's database, its history as the relay would deliver it
// (with PrevPosition), and the read models of that history applied one
// message at a time, to compare with.
type batchEnv struct {
	t  *testing.T
	db *projtest.Env
	// ds are the feed's deliveries, all of partition 0, in feed order.
	ds []projections.Delivery
	// want is the read models and bookkeeping after applying ds one at a
	// time; every test starts from empty read models.
	want []string
	// panicOn, when set, makes the probe projector panic once on the event
	// with that id.
	panicOn atomic.Pointer[string]
}

// newBatchEnv appends sales sales (six events each) of three merchants,
// with a settings change of each merchant first and one more midway, so
// batches hold several merchants' segments.
func newBatchEnv(t *testing.T, sales int) *batchEnv {
	t.Helper()
	e := &batchEnv{t: t, db: projtest.New(t)}
	ctx := context.Background()
	admin := e.admin()
	defer admin.Close(ctx)
	// The probe projector records each event it applies, in the runner's
	// transaction, so a second application of an event shows.
	if _, err := admin.Exec(ctx, `CREATE TABLE probe_applied (event_id uuid NOT NULL);
        GRANT SELECT, INSERT, TRUNCATE ON probe_applied TO pos_app`); err != nil {
		t.Fatal(err)
	}
	ms := []string{"Asia/Jakarta", "America/Los_Angeles", "Europe/Paris"}
	merchants := make([]struct{ id, branch uuid.UUID }, len(ms))
	for i, tz := range ms {
		merchants[i].id, merchants[i].branch = projtest.NewID(t), projtest.NewID(t)
		e.db.ChangeSettings(t, merchants[i].id, tz, batchT0)
	}
	for k := range sales {
		m := merchants[k%len(merchants)]
		if k == sales/2 {
			e.db.ChangeSettings(t, m.id, "Asia/Tokyo", batchT0)
		}
		s := e.db.OpenSale(t, m.id, m.branch, fmt.Sprintf("S-%03d", k), batchT0)
		s.AddItem("TEA", 2, 15000, 1100, batchT0)
		s.Checkout(batchT0)
		s.PayDue(batchT0)
		s.Complete(batchT0.Add(time.Duration(k) * time.Minute))
	}
	e.ds = e.deliveries()

	r, _ := e.runner()
	for _, d := range e.ds {
		if err := r.HandleDeliveries(ctx, []projections.Delivery{d}); err != nil {
			t.Fatalf("apply %s one at a time: %v", d.Event.Position, err)
		}
	}
	e.checkOnce(len(e.ds))
	e.want = e.rows()
	e.reset()
	return e
}

// deliveries reads the feed and gives each event the PrevPosition the relay
// gives it (Start for the partition's first), through the relay's own
// encoding.
func (e *batchEnv) deliveries() []projections.Delivery {
	e.t.Helper()
	ctx := context.Background()
	if err := e.db.Store.Settle(ctx); err != nil {
		e.t.Fatal(err)
	}
	var ds []projections.Delivery
	heads := map[int]eventstore.Position{}
	for from := eventstore.Start; ; {
		page, err := e.db.Store.ReadAll(ctx, from, eventstore.Filter{}, eventstore.MaxReadLimit)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(page) == 0 {
			return ds
		}
		for _, ev := range page {
			p := projections.Partition(ev.Metadata.MerchantID, 1)
			prev := heads[p]
			msg, err := relay.Encode(ev, &prev, p)
			if err != nil {
				e.t.Fatal(err)
			}
			d, err := relay.Decode(msg.Payload)
			if err != nil {
				e.t.Fatal(err)
			}
			if d.PrevPosition == nil || *d.PrevPosition != prev {
				e.t.Fatalf("event %s: PrevPosition %v, want %s", ev.Position, d.PrevPosition, prev)
			}
			ds = append(ds, d)
			heads[p] = ev.Position
		}
		from = page[len(page)-1].Position
	}
}

// runner returns a new Runner (nothing committed in its memory) with one
// partition, every projector and the probe, and a counter of its
// transactions (AfterCommit calls).
func (e *batchEnv) runner() (*projections.Runner, *atomic.Int64) {
	e.t.Helper()
	commits := new(atomic.Int64)
	opts := projections.Options{Partitions: 1, AfterCommit: func(context.Context, []eventstore.RecordedEvent) { commits.Add(1) }}
	r, err := projections.NewRunner(e.db.Pool, e.db.Store, opts, append(projections.All(), &probe{e: e})...)
	if err != nil {
		e.t.Fatal(err)
	}
	return r, commits
}

// probe is a projector of every event that records it in probe_applied.
type probe struct{ e *batchEnv }

func (*probe) Name() string          { return "batch_probe" }
func (*probe) Handles(_ string) bool { return true }
func (p *probe) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if id := p.e.panicOn.Load(); id != nil && *id == ev.ID.String() && p.e.panicOn.CompareAndSwap(id, nil) {
		panic("probe: a projector's bug")
	}
	_, err := tx.Exec(ctx, `INSERT INTO probe_applied (event_id) VALUES ($1)`, ev.ID)
	return err
}

// admin connects as the database's creator (no row-level security).
func (e *batchEnv) admin() *pgx.Conn {
	e.t.Helper()
	c, err := pgx.Connect(context.Background(), e.db.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// rows returns every read-model row and bookkeeping row as text, a line
// each, in a stable order (the checkpoints' updated_at left out).
func (e *batchEnv) rows() []string {
	e.t.Helper()
	ctx := context.Background()
	c := e.admin()
	defer c.Close(ctx)
	var queries []string
	for _, tb := range projtest.ReadModelTables(e.t, c) {
		queries = append(queries, fmt.Sprintf(`SELECT '%s ' || to_jsonb(t)::text FROM %s t ORDER BY 1`, tb, tb))
	}
	queries = append(queries,
		`SELECT concat_ws(' ', 'projection_streams', projection, stream_name, version) FROM projection_streams ORDER BY 1`,
		`SELECT concat_ws(' ', 'projection_checkpoints', projection, partition, major, minor) FROM projection_checkpoints ORDER BY 1`)
	var out []string
	for _, q := range queries {
		rs, err := c.Query(ctx, q)
		if err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
		lines, err := pgx.CollectRows(rs, pgx.RowTo[string])
		if err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
		out = append(out, lines...)
	}
	return out
}

// reset empties the read models, the bookkeeping and the probe.
func (e *batchEnv) reset() {
	e.t.Helper()
	c := e.admin()
	defer c.Close(context.Background())
	projtest.ResetReadModels(e.t, c, "probe_applied")
}

// checkOnce checks the probe applied n events, each once.
func (e *batchEnv) checkOnce(n int) {
	e.t.Helper()
	ctx := context.Background()
	c := e.admin()
	defer c.Close(ctx)
	var all, distinct int
	if err := c.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM probe_applied`).Scan(&all, &distinct); err != nil {
		e.t.Fatal(err)
	}
	if all != n || distinct != n {
		e.t.Errorf("probe applied %d events, %d distinct; want each of %d once", all, distinct, n)
	}
}

// checkApplied checks the read models equal the one-at-a-time application,
// every event was applied once, and r committed the feed's last event.
func (e *batchEnv) checkApplied(r *projections.Runner) {
	e.t.Helper()
	got := e.rows()
	if !slices.Equal(got, e.want) {
		for i := range max(len(got), len(e.want)) {
			g, w := "<none>", "<none>"
			if i < len(got) {
				g = got[i]
			}
			if i < len(e.want) {
				w = e.want[i]
			}
			if g != w {
				e.t.Errorf("read models differ from one-at-a-time application (%d rows, want %d); first difference, row %d:\n got %s\nwant %s",
					len(got), len(e.want), i, g, w)
				break
			}
		}
	}
	e.checkOnce(len(e.ds))
	last := e.ds[len(e.ds)-1].Event.Position
	if at, ok := r.Committed(0); !ok || at != last {
		e.t.Errorf("runner committed %s (%v), want the last event's position %s", at, ok, last)
	}
}

// submitted is one submit's outcome.
type submitted struct {
	d   projections.Delivery
	err error
}

// job is one message to submit to a batcher.
type job struct {
	b *batcher
	d projections.Delivery
}

// submitAll submits every delivery of ds to b from its own goroutine; see
// submitJobs.
func submitAll(t *testing.T, b *batcher, ds []projections.Delivery, timeout time.Duration) []submitted {
	t.Helper()
	jobs := make([]job, len(ds))
	for i, d := range ds {
		jobs[i] = job{b, d}
	}
	return submitJobs(t, jobs, timeout)
}

// submitJobs submits every job from its own goroutine, all released at once
// (some a few microseconds late), and returns their outcomes in jobs'
// order. A panic out of submit is recovered as the router does (the message
// is nacked), and reported as an error. The test fails if they have not all
// returned within timeout: a stranded waiter.
func submitJobs(t *testing.T, jobs []job, timeout time.Duration) []submitted {
	t.Helper()
	out := make([]submitted, len(jobs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, j := range jobs {
		jitter := time.Duration(rand.IntN(3)) * 50 * time.Microsecond
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					out[i] = submitted{j.d, fmt.Errorf("panic out of submit: %v", p)}
				}
			}()
			<-start
			if jitter > 0 {
				time.Sleep(jitter)
			}
			out[i] = submitted{j.d, j.b.submit(context.Background(), 0, j.d)}
		})
	}
	close(start)
	waitGroup(t, &wg, timeout)
	return out
}

// waitGroup waits for wg, failing the test (with every goroutine's stack)
// after timeout.
func waitGroup(t *testing.T, wg *sync.WaitGroup, timeout time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		buf := make([]byte, 1<<20)
		t.Fatalf("submits still blocked after %s (stranded):\n%s", timeout, buf[:runtime.Stack(buf, true)])
	}
}

// pending returns how many messages of partition 0 wait in b.
func pending(b *batcher) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.parts[0]; q != nil {
		return len(q.pending)
	}
	return 0
}

// waitPending waits until n messages of partition 0 wait in b.
func waitPending(t *testing.T, b *batcher, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for pending(b) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages pending, want %d", pending(b), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// shuffled returns a copy of s in a random order fixed by seed.
func shuffled[T any](s []T, seed uint64) []T {
	out := slices.Clone(s)
	rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func TestBatcherAppliesShuffledConcurrentDeliveriesAsOneAtATime(t *testing.T) {
	e := newBatchEnv(t, 30)
	seed := rand.Uint64()
	t.Logf("%d deliveries, shuffle seed %d", len(e.ds), seed)
	r, _ := e.runner()
	b := newBatcher(r, DefaultReorderWait, DefaultMaxAckPending)
	// Copies of a few deliveries (redeliveries) arrive along with them.
	ds := append(shuffled(e.ds, seed), e.ds[0], e.ds[len(e.ds)/2], e.ds[len(e.ds)-1])
	for _, s := range submitAll(t, b, ds, 20*time.Second) {
		if s.err != nil {
			t.Errorf("submit %s: %v", s.d.Event.Position, s.err)
		}
	}
	e.checkApplied(r)
	if n := pending(b); n != 0 {
		t.Errorf("%d messages still pending", n)
	}
}

func TestBatcherFillsAHoleThatNeverArrives(t *testing.T) {
	e := newBatchEnv(t, 20)
	r, _ := e.runner()
	const wait = 20 * time.Millisecond
	b := newBatcher(r, wait, DefaultMaxAckPending)
	// Two messages are lost: one midway, and the partition's first.
	lost := []int{len(e.ds) / 2, 0}
	var ds []projections.Delivery
	for i, d := range e.ds {
		if !slices.Contains(lost, i) {
			ds = append(ds, d)
		}
	}
	start := time.Now()
	for _, s := range submitAll(t, b, shuffled(ds, 1), 20*time.Second) {
		if s.err != nil {
			t.Errorf("submit %s: %v", s.d.Event.Position, s.err)
		}
	}
	t.Logf("%d deliveries with %d holes applied in %s", len(ds), len(lost), time.Since(start))
	e.checkApplied(r) // the holes' events came from the store
	// The lost messages show up late after all: copies, applied already.
	for _, i := range lost {
		if err := b.submit(context.Background(), 0, e.ds[i]); err != nil {
			t.Errorf("late submit %s: %v", e.ds[i].Event.Position, err)
		}
	}
	e.checkApplied(r)
}

// A hole that outlasts the reorder wait makes the partition's next batches
// go without waiting (workers sharing a partition leave holes that never
// fill here): the second hole is filled at once.
func TestBatcherStopsWaitingForHolesThatDoNotFill(t *testing.T) {
	e := newBatchEnv(t, 4)
	r, _ := e.runner()
	b := newBatcher(r, 200*time.Millisecond, DefaultMaxAckPending)
	ctx := context.Background()
	if err := r.HandleDeliveries(ctx, e.ds[:1]); err != nil {
		t.Fatal(err)
	}
	// ds[1] and ds[3] are another worker's: they never come here.
	for _, i := range []int{2, 4} {
		if err := b.submit(ctx, 0, e.ds[i]); err != nil {
			t.Fatalf("submit ds[%d]: %v", i, err)
		}
	}
	b.mu.Lock()
	timeouts := b.parts[0].timeouts
	b.mu.Unlock()
	if timeouts != 1 {
		t.Errorf("%d reorder waits ran out, want 1 (the second hole filled at once)", timeouts)
	}
	for _, s := range submitAll(t, b, e.ds[5:], 20*time.Second) {
		if s.err != nil {
			t.Errorf("submit %s: %v", s.d.Event.Position, s.err)
		}
	}
	e.checkApplied(r)
}

func TestBatcherWaiterWhoseContextEndsDoesNotStrandTheOthers(t *testing.T) {
	e := newBatchEnv(t, 12)
	r, _ := e.runner()
	// A long reorder wait: if the others completed only once it passed,
	// the test would take that long; they must not need it.
	const wait = 10 * time.Second
	b := newBatcher(r, wait, DefaultMaxAckPending)
	ctx := context.Background()
	if err := r.HandleDeliveries(ctx, e.ds[:1]); err != nil {
		t.Fatal(err)
	}
	// ds[1] is late: every other message waits behind the hole. ds[2]
	// arrives first and leads; ds[3] is next in line for the lead; ds[5]
	// is in the middle. The three give up while they wait.
	rest := e.ds[2:]
	ctxs := make([]context.Context, len(rest))
	giveUp := map[int]context.CancelFunc{}
	for i := range rest {
		ctxs[i] = ctx
		if i == 0 || i == 1 || i == 3 {
			c, cancel := context.WithCancel(ctx)
			ctxs[i], giveUp[i] = c, cancel
		}
	}
	out := make([]submitted, len(rest))
	var wg sync.WaitGroup
	submit := func(i int) {
		wg.Go(func() { out[i] = submitted{rest[i], b.submit(ctxs[i], 0, rest[i])} })
	}
	submit(0)
	waitPending(t, b, 1)
	for i := 1; i < len(rest); i++ {
		submit(i)
	}
	waitPending(t, b, len(rest))
	time.Sleep(5 * time.Millisecond) // the leader waits for the hole

	cancelled := time.Now()
	for _, cancel := range giveUp {
		cancel()
	}
	// Those that gave up return at once, with their context's error.
	deadline := time.After(wait / 2)
	for pending(b) != len(rest)-len(giveUp) {
		select {
		case <-deadline:
			t.Fatalf("%d messages pending after their handlers gave up, want %d", pending(b), len(rest)-len(giveUp))
		case <-time.After(time.Millisecond):
		}
	}
	// The late message arrives, and the given-up ones are redelivered.
	var late sync.WaitGroup
	lateErrs := make([]error, 0, 4)
	var mu sync.Mutex
	for _, d := range append([]projections.Delivery{e.ds[1]}, rest[0], rest[1], rest[3]) {
		late.Go(func() {
			err := b.submit(ctx, 0, d)
			mu.Lock()
			lateErrs = append(lateErrs, err)
			mu.Unlock()
		})
	}
	waitGroup(t, &late, wait/2)
	waitGroup(t, &wg, wait/2)
	if took := time.Since(cancelled); took >= wait {
		t.Errorf("the others completed %s after the cancellations: they waited out the reorder wait", took)
	}
	for i, s := range out {
		_, gaveUp := giveUp[i]
		switch {
		case gaveUp && !errors.Is(s.err, context.Canceled):
			t.Errorf("submit %s whose context ended: %v, want context.Canceled", s.d.Event.Position, s.err)
		case !gaveUp && s.err != nil:
			t.Errorf("submit %s: %v", s.d.Event.Position, s.err)
		}
	}
	for _, err := range lateErrs {
		if err != nil {
			t.Errorf("late submit: %v", err)
		}
	}
	e.checkApplied(r)
	if n := pending(b); n != 0 {
		t.Errorf("%d messages still pending", n)
	}
}

func TestBatcherBatchesConcurrentDeliveries(t *testing.T) {
	e := newBatchEnv(t, 39) // 238 events
	if len(e.ds) < 201 {
		t.Fatalf("%d deliveries, want more than 200", len(e.ds))
	}
	r, commits := e.runner()
	// A steady state: the runner knows where the partition is.
	if err := r.HandleDeliveries(context.Background(), e.ds[:1]); err != nil {
		t.Fatal(err)
	}
	commits.Store(0)
	// A reorder wait long enough that every message is in before a hole is
	// given up on (under -race, starting 200 goroutines takes a while):
	// what is counted here is how many transactions the chains take, not
	// the fills of holes given up on.
	b := newBatcher(r, time.Second, DefaultMaxAckPending)
	ds := e.ds[1:201]
	for _, s := range submitAll(t, b, shuffled(ds, 3), 20*time.Second) {
		if s.err != nil {
			t.Errorf("submit %s: %v", s.d.Event.Position, s.err)
		}
	}
	n := commits.Load()
	t.Logf("%d deliveries applied in %d transactions", len(ds), n)
	if n == 0 || n > int64(len(ds)/4) {
		t.Errorf("%d deliveries submitted at once were applied in %d transactions, want at most %d", len(ds), n, len(ds)/4)
	}
	if at, ok := r.Committed(0); !ok || at != ds[len(ds)-1].Event.Position {
		t.Errorf("runner committed %s (%v), want %s", at, ok, ds[len(ds)-1].Event.Position)
	}
	// The rest, one at a time, leaves the same read models.
	for _, d := range e.ds[201:] {
		if err := b.submit(context.Background(), 0, d); err != nil {
			t.Fatal(err)
		}
	}
	e.checkApplied(r)
}

func TestBatcherSurvivesAProjectorPanic(t *testing.T) {
	e := newBatchEnv(t, 12)
	r, _ := e.runner()
	b := newBatcher(r, DefaultReorderWait, DefaultMaxAckPending)
	id := e.ds[len(e.ds)/3].Event.ID.String()
	e.panicOn.Store(&id)
	// The batch holding the event fails (the router would retry its
	// messages); none of the others is stranded behind the lost lead.
	var failed []projections.Delivery
	for _, s := range submitAll(t, b, shuffled(e.ds, 5), 10*time.Second) {
		if s.err != nil {
			if !strings.Contains(s.err.Error(), "panic") {
				t.Errorf("submit %s: %v", s.d.Event.Position, s.err)
			}
			failed = append(failed, s.d)
		}
	}
	if len(failed) == 0 {
		t.Fatal("no submit saw the panic")
	}
	for _, s := range submitAll(t, b, failed, 10*time.Second) {
		if s.err != nil {
			t.Errorf("retried submit %s: %v", s.d.Event.Position, s.err)
		}
	}
	e.checkApplied(r)
}

func TestTwoWorkersShareAPartitionAndApplyEachEventOnce(t *testing.T) {
	e := newBatchEnv(t, 30)
	// Two processes: each its own runner (and memory of what it committed)
	// and batcher. Each message reaches both, in its own order, as
	// redeliveries to two workers of a queue group might; the stream locks
	// must serialize their transactions.
	r1, _ := e.runner()
	r2, _ := e.runner()
	b1 := newBatcher(r1, DefaultReorderWait, DefaultMaxAckPending)
	b2 := newBatcher(r2, DefaultReorderWait, DefaultMaxAckPending)
	var jobs []job
	for i, d := range shuffled(e.ds, 7) {
		jobs = append(jobs, job{b1, d}, job{b2, e.ds[len(e.ds)-1-i]})
	}
	for _, s := range submitJobs(t, shuffled(jobs, 8), 30*time.Second) {
		if s.err != nil {
			t.Errorf("submit %s: %v", s.d.Event.Position, s.err)
		}
	}
	e.checkApplied(r1)
	e.checkApplied(r2)
}

// picky acts on checkouts only, as the stock process manager acts on a few
// of a sale's events: the others only move its bookkeeping.
type picky struct{ applied atomic.Int64 }

func (*picky) Name() string                  { return "batch_picky" }
func (*picky) Handles(eventType string) bool { return eventType == "CheckedOut" }
func (p *picky) Apply(context.Context, pgx.Tx, eventstore.RecordedEvent) error {
	p.applied.Add(1)
	return nil
}

// pickyRunner returns a runner of picky alone, a counter of its
// transactions, and the index of the first delivery it acts on (after at
// least three it ignores).
func (e *batchEnv) pickyRunner() (*projections.Runner, *atomic.Int64, int) {
	e.t.Helper()
	commits := new(atomic.Int64)
	opts := projections.Options{Partitions: 1, AfterCommit: func(context.Context, []eventstore.RecordedEvent) { commits.Add(1) }}
	r, err := projections.NewRunner(e.db.Pool, e.db.Store, opts, &picky{})
	if err != nil {
		e.t.Fatal(err)
	}
	k := slices.IndexFunc(e.ds, func(d projections.Delivery) bool { return r.Handles(d.Event) })
	if k < 3 {
		e.t.Fatalf("the first delivery the runner acts on is %d: want 3 it ignores before it", k)
	}
	return r, commits, k
}

// With a hold, the events a runner ignores wait for one it acts on and go
// in its transaction, instead of one transaction each; without one, each
// arriving alone is applied alone.
func TestBatcherHoldsIgnoredEventsForOneItActsOn(t *testing.T) {
	e := newBatchEnv(t, 2)
	ctx := context.Background()
	for _, hold := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("hold=%s", hold), func(t *testing.T) {
			e.reset()
			r, commits, k := e.pickyRunner()
			b := newBatcher(r, DefaultReorderWait, DefaultMaxAckPending)
			b.hold = hold
			// The ignored ones arrive one after the other, each alone.
			done := make(chan error, k)
			for i, d := range e.ds[:k] {
				go func() { done <- b.submit(ctx, 0, d) }()
				if hold == 0 {
					if err := <-done; err != nil {
						t.Fatal(err)
					}
				} else {
					waitPending(t, b, i+1)
				}
			}
			if hold == 0 {
				if n := commits.Load(); n != int64(k) {
					t.Errorf("without a hold, %d ignored deliveries arriving alone took %d transactions, want %d", k, n, k)
				}
				return
			}
			if n := commits.Load(); n != 0 {
				t.Fatalf("%d transactions before the checkout arrived, want 0 (held)", n)
			}
			if err := b.submit(ctx, 0, e.ds[k]); err != nil {
				t.Fatal(err)
			}
			for range k {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			if n := commits.Load(); n != 1 {
				t.Errorf("%d held deliveries and the checkout took %d transactions, want 1", k, n)
			}
			if at, _ := r.Committed(0); at != e.ds[k].Event.Position {
				t.Errorf("committed %s, want the checkout's %s", at, e.ds[k].Event.Position)
			}
		})
	}
}

// A hold ends when it runs out, or when a batch is full, even if nothing the
// runner acts on arrives.
func TestBatcherHoldEnds(t *testing.T) {
	e := newBatchEnv(t, 2)
	r, commits, _ := e.pickyRunner() // deliveries 0 to 2 are ignored
	// A full batch (2) goes at once.
	b := newBatcher(r, DefaultReorderWait, 2)
	b.hold = time.Hour
	for _, s := range submitAll(t, b, e.ds[:2], 20*time.Second) {
		if s.err != nil {
			t.Fatal(s.err)
		}
	}
	if n := commits.Load(); n != 1 {
		t.Errorf("a full batch of held deliveries took %d transactions, want 1", n)
	}
	// One alone goes when its hold runs out.
	b.hold = 50 * time.Millisecond
	start := time.Now()
	for _, s := range submitAll(t, b, e.ds[2:3], 20*time.Second) {
		if s.err != nil {
			t.Fatal(s.err)
		}
	}
	if held := time.Since(start); held < b.hold {
		t.Errorf("a lone ignored delivery was applied after %s, before its hold of %s ran out", held, b.hold)
	}
	if at, _ := r.Committed(0); at != e.ds[2].Event.Position {
		t.Errorf("committed %s, want %s", at, e.ds[2].Event.Position)
	}
}

// A message the runner acts on that waits behind a hole (another worker's
// message, or a lost one) ends the hold of the ignored ones before it: they
// go at once, and it follows once the hole is filled from the store.
func TestBatcherDoesNotHoldBeforeAMessageItActsOnBehindAHole(t *testing.T) {
	e := newBatchEnv(t, 2)
	r, commits, k := e.pickyRunner()
	b := newBatcher(r, DefaultReorderWait, DefaultMaxAckPending)
	b.hold = time.Hour
	// ds[1] to ds[k-1] never come.
	ds := []projections.Delivery{e.ds[0], e.ds[k]}
	for _, s := range submitAll(t, b, ds, 20*time.Second) {
		if s.err != nil {
			t.Fatal(s.err)
		}
	}
	if at, _ := r.Committed(0); at != e.ds[k].Event.Position {
		t.Errorf("committed %s, want the checkout's %s", at, e.ds[k].Event.Position)
	}
	if n := commits.Load(); n < 1 {
		t.Errorf("%d transactions, want at least 1", n)
	}
}
