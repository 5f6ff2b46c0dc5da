package consume_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/consume"
	"pos/domain/transaction"
	"pos/eventstore"
	"pos/projections"
	"pos/projections/projtest"
	"pos/relay"
)

// A backlog of several merchants per partition (sales paid, voided,
// refunded, with several payments; stock moved; time zones changed between
// sales), published before any worker runs, reaches the consumer a window
// at a time and is applied in large batches: transactions that hold
// hundreds of events of several merchants, many of one stream, voids and
// refunds beside their sale, settings changes in the middle. The read
// models (and the runner's bookkeeping) must be exactly what applying the
// same feed one event per transaction gives.
//
// Both are built in the same database, one after the other (the live path
// first, then the read models and bookkeeping are emptied and the feed is
// replayed with a runner of batch size 1), so that every column can be
// compared: positions and versions are the same events', and every
// updated_at/at/reserved_at the projectors write is an event's own time
// (RecordedAt or the event's At), never now(). The only column left out is
// projection_checkpoints.updated_at, which is the commit's clock.
func TestLargeBatchesGiveTheReadModelsOfOneEventAtATime(t *testing.T) {
	e := newEnv(t, natsURL)
	var shapes batchShapes
	live, err := projections.NewRunner(e.db.Pool, e.db.Store, projections.Options{Partitions: partitions, AfterCommit: shapes.record},
		projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	e.runner = live

	rng := rand.New(rand.NewPCG(20250310, 7))
	ms := sharedMerchants(t, 10)
	buildBacklog(t, e.db, ms, rng)
	feed := e.feed()

	// The whole backlog published before any worker runs.
	e.relay(relay.Options{})
	e.waitPublished(feed)
	_, stop := e.startConsumer(consume.Options{})
	e.waitApplied(30 * time.Second)
	stop() // nothing more may touch the read models below

	// The batches were large and varied, or the comparison proves little.
	t.Logf("%d events of %d merchants over %d partitions applied in %s", len(feed), len(ms), partitions, &shapes)
	if shapes.largest < 50 {
		t.Errorf("largest batch %d events, want at least 50", shapes.largest)
	}
	for what, n := range map[string]int{
		"batches of several merchants": shapes.mixed, "settings changes after other events of their merchant in a batch": shapes.settingsMid,
		"streams with 5+ events in one batch": shapes.longStreams, "voids in the batch of their payment": shapes.voidWithPaid,
		"refunds in the batch of their payment": shapes.refundWithPaid,
	} {
		if n == 0 {
			t.Errorf("no %s", what)
		}
	}

	admin := e.admin()
	got := snapshotAll(t, admin)

	// The reference: the same feed, one event per transaction.
	projtest.ResetReadModels(t, admin)
	one, err := projections.NewRunner(e.db.Pool, e.db.Store, projections.Options{Partitions: partitions, BatchSize: 1}, projections.All()...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := one.Catchup(context.Background(), eventstore.Start); err != nil {
		t.Fatalf("one-by-one replay: %v", err)
	}
	want := snapshotAll(t, admin)

	for _, table := range slices.Sorted(maps.Keys(want)) {
		if len(want[table]) == 0 {
			t.Errorf("%s: empty in the reference, the backlog gives it no work", table)
		}
		diffTable(t, table, got[table], want[table])
	}
}

// sharedMerchants returns n merchants spread so that every partition has at
// least two (n ≥ 2·partitions), as evenly as n allows.
func sharedMerchants(t *testing.T, n int) []uuid.UUID {
	t.Helper()
	per := map[int]int{}
	limit := func(p int) int { // n/partitions each, one more for the first n%partitions
		return n/partitions + min(1, max(0, n%partitions-p))
	}
	var out []uuid.UUID
	for len(out) < n {
		m := projtest.NewID(t)
		if p := projections.Partition(m.String(), partitions); per[p] < limit(p) {
			per[p]++
			out = append(out, m)
		}
	}
	for p := range partitions {
		if per[p] < 2 {
			t.Fatalf("partition %d has %d merchants", p, per[p])
		}
	}
	return out
}

// script is a sequence of steps for one merchant (a sale, a ledger's moves,
// settings changes), taken one step at a time so that merchants and
// streams interleave in the feed as live traffic does.
type script struct {
	steps []func(at time.Time)
}

// buildBacklog appends, to db, for every merchant: the sales of
// salesOf, the stock moves of stockOf and time zone changes, one step of a
// random unfinished script at a time, 47 minutes apart (so the sales spread
// over many business days, near their midnights in several zones).
func buildBacklog(t *testing.T, db *projtest.Env, ms []uuid.UUID, rng *rand.Rand) {
	t.Helper()
	zones := []string{"Asia/Makassar", "Pacific/Kiritimati", "America/Los_Angeles", "Asia/Jayapura", "Asia/Jakarta"}
	var scripts []*script
	for i, m := range ms {
		branches := []uuid.UUID{projtest.NewID(t), projtest.NewID(t)}
		scripts = append(scripts, salesOf(t, db, m, branches)...)
		scripts = append(scripts, stockOf(t, db, m, branches)...)
		// Time zone changes between the merchant's sales: every merchant
		// but the last two (which keep the default) changes once, every
		// other one twice more.
		if i < len(ms)-2 {
			sc := &script{}
			changes := 1 + 2*(i%2)
			for c := range changes {
				zone := zones[(i+c)%len(zones)]
				sc.steps = append(sc.steps, func(at time.Time) { db.ChangeSettings(t, m, zone, at) })
				for range 8 { // a few steps of the others between changes
					sc.steps = append(sc.steps, func(time.Time) {})
				}
			}
			scripts = append(scripts, sc)
		}
	}
	at := time.Date(2025, 3, 10, 15, 0, 0, 0, time.UTC) // 22:00 in Jakarta
	for len(scripts) > 0 {
		i := rng.IntN(len(scripts))
		sc := scripts[i]
		sc.steps[0](at)
		at = at.Add(47 * time.Minute)
		if sc.steps = sc.steps[1:]; len(sc.steps) == 0 {
			scripts = slices.Delete(scripts, i, i+1)
		}
	}
}

// salesOf returns one merchant's sales: every path the sales projectors
// treat apart.
func salesOf(t *testing.T, db *projtest.Env, m uuid.UUID, branches []uuid.UUID) []*script {
	var out []*script
	add := func(build func(s **projtest.Sale) []func(at time.Time)) {
		var s *projtest.Sale
		branch, code := branches[len(out)%len(branches)], fmt.Sprintf("%s-%03d", m.String()[:4], len(out)+1)
		steps := []func(time.Time){func(at time.Time) { s = db.OpenSale(t, m, branch, code, at) }}
		out = append(out, &script{steps: append(steps, build(&s)...)})
	}
	// A card declined, the rest in cash with change, discounted, completed.
	add(func(s **projtest.Sale) []func(time.Time) {
		var card uuid.UUID
		return []func(time.Time){
			func(at time.Time) { (*s).AddItem("TEA", 3, 15_333, 1_100, at) },
			func(at time.Time) { (*s).AddItem("CAKE", 1, 27_501, 1_250, at) },
			func(at time.Time) { (*s).DiscountPercent(1_000, at) },
			func(at time.Time) { (*s).Checkout(at) },
			func(at time.Time) { card = (*s).Pay(transaction.MethodCard, 10_000, at) },
			func(at time.Time) { (*s).Decline(card, at) },
			func(at time.Time) { (*s).Pay(transaction.MethodCash, (*s).Aggregate().Due()+7_000, at) },
			func(at time.Time) { (*s).Complete(at) },
		}
	})
	// Card and cash, completed, refunded by line, then by amount.
	add(func(s **projtest.Sale) []func(time.Time) {
		var tea, card uuid.UUID
		return []func(time.Time){
			func(at time.Time) { tea = (*s).AddItem("TEA", 4, 10_000, 1_000, at) },
			func(at time.Time) { (*s).AddItem("WATER", 2, 3_001, 0, at) },
			func(at time.Time) { (*s).Checkout(at) },
			func(at time.Time) { card = (*s).Pay(transaction.MethodCard, 30_000, at) },
			func(at time.Time) { (*s).Confirm(card, at) },
			func(at time.Time) { (*s).PayDue(at) },
			func(at time.Time) { (*s).Complete(at) },
			func(at time.Time) { (*s).RefundLine(tea, 1, at) },
			func(at time.Time) { (*s).RefundAmount(5_000, at) },
		}
	})
	// QRIS, confirmed, voided after payment: out of the day it counted on.
	add(func(s **projtest.Sale) []func(time.Time) {
		var qris uuid.UUID
		return []func(time.Time){
			func(at time.Time) { (*s).AddItem("CAKE", 2, 50_000, 1_000, at) },
			func(at time.Time) { (*s).Checkout(at) },
			func(at time.Time) { qris = (*s).Pay(transaction.MethodQRIS, (*s).Aggregate().Due(), at) },
			func(at time.Time) { (*s).Confirm(qris, at) },
			func(at time.Time) { (*s).Void(at) },
		}
	})
	// Cash, voided after payment.
	add(func(s **projtest.Sale) []func(time.Time) {
		return []func(time.Time){
			func(at time.Time) { (*s).AddItem("SND", 1, 55_000, 1_100, at) },
			func(at time.Time) { (*s).Checkout(at) },
			func(at time.Time) { (*s).PayDue(at) },
			func(at time.Time) { (*s).Void(at) },
		}
	})
	// Part paid by card, voided while pending payment: never counted.
	add(func(s **projtest.Sale) []func(time.Time) {
		var card uuid.UUID
		return []func(time.Time){
			func(at time.Time) { (*s).AddItem("COF", 2, 32_000, 1_100, at) },
			func(at time.Time) { (*s).Checkout(at) },
			func(at time.Time) { card = (*s).Pay(transaction.MethodCard, 20_000, at) },
			func(at time.Time) { (*s).Confirm(card, at) },
			func(at time.Time) { (*s).Void(at) },
		}
	})
	// A draft with a line removed, voided.
	add(func(s **projtest.Sale) []func(time.Time) {
		var water uuid.UUID
		return []func(time.Time){
			func(at time.Time) { (*s).AddItem("TEA", 1, 15_000, 1_100, at) },
			func(at time.Time) { water = (*s).AddItem("WATER", 7, 3_001, 1_100, at) },
			func(at time.Time) { (*s).RemoveItem(water, at) },
			func(at time.Time) { (*s).Void(at) },
		}
	})
	// A draft left open.
	add(func(s **projtest.Sale) []func(time.Time) {
		var cake uuid.UUID
		return []func(time.Time){
			func(at time.Time) { cake = (*s).AddItem("CAKE", 1, 27_500, 1_100, at) },
			func(at time.Time) { (*s).AddItem("TEA", 2, 15_000, 1_100, at) },
			func(at time.Time) { (*s).DiscountPercent(500, at) },
			func(at time.Time) { (*s).RemoveItem(cake, at) },
		}
	})
	// Cash (paid, not completed), refunded by lines in full.
	add(func(s **projtest.Sale) []func(time.Time) {
		var a, b uuid.UUID
		return []func(time.Time){
			func(at time.Time) { a = (*s).AddItem("BAK", 2, 38_000, 1_100, at) },
			func(at time.Time) { b = (*s).AddItem("SNK", 3, 22_000, 1_100, at) },
			func(at time.Time) { (*s).DiscountPercent(1_000, at) },
			func(at time.Time) { (*s).Checkout(at) },
			func(at time.Time) { (*s).Pay(transaction.MethodCash, 500_000, at) },
			func(at time.Time) { (*s).RefundLine(a, 2, at) },
			func(at time.Time) { (*s).RefundLine(b, 3, at) },
		}
	})
	// Two quick cash sales, completed: many sales on one day.
	for range 2 {
		add(func(s **projtest.Sale) []func(time.Time) {
			return []func(time.Time){
				func(at time.Time) { (*s).AddItem("TEA", 2, 15_000, 0, at) },
				func(at time.Time) { (*s).Checkout(at) },
				func(at time.Time) { (*s).PayDue(at) },
				func(at time.Time) { (*s).Complete(at) },
			}
		})
	}
	return out
}

// stockOf returns one merchant's stock moves: a SKU in both branches,
// received, adjusted, reserved (and reserved again), released, sold,
// returned and transferred.
func stockOf(t *testing.T, db *projtest.Env, m uuid.UUID, branches []uuid.UUID) []*script {
	a, b := db.OpenLedger(t, m, branches[0], "TEA"), db.OpenLedger(t, m, branches[1], "TEA")
	c := db.OpenLedger(t, m, branches[0], "CAKE")
	s1, s2, s3 := projtest.NewID(t), projtest.NewID(t), projtest.NewID(t)
	return []*script{
		{steps: []func(time.Time){
			func(at time.Time) { a.Receive(40, 9_000, at) },
			func(at time.Time) { a.Reserve(s1, 3, at) },
			func(at time.Time) { a.Reserve(s1, 5, at) }, // replaces the open one
			func(at time.Time) { a.Sell(s1, 5, at) },
			func(at time.Time) { a.Reserve(s2, 2, at) },
			func(at time.Time) { a.Release(s2, at) },
			func(at time.Time) { a.Receive(10, 11_000, at) },
			func(at time.Time) { a.GiveBack(s1, 2, at) },
			func(at time.Time) { a.Transfer(b, 7, at) },
			func(at time.Time) { a.Adjust(-1, at) },
			func(at time.Time) { a.Reserve(s3, 4, at) }, // left open
		}},
		{steps: []func(time.Time){
			func(at time.Time) { b.Receive(5, 8_000, at) },
			func(at time.Time) { b.Sell(projtest.NewID(t), 2, at) }, // without a reservation
			func(at time.Time) { b.Adjust(3, at) },
		}},
		{steps: []func(time.Time){
			func(at time.Time) { c.Receive(12, 20_000, at) },
			func(at time.Time) { c.Reserve(s3, 1, at) },
			func(at time.Time) { c.Sell(s3, 1, at) },
			func(at time.Time) { c.Reserve(s2, 2, at) },
			func(at time.Time) { c.Reserve(s2, 1, at) },
			func(at time.Time) { c.Release(s2, at) },
			func(at time.Time) { c.Reserve(s2, 3, at) }, // reopened, left open
		}},
	}
}

// waitPublished waits until the relay has published every partition up to
// its last event of feed.
func (e *env) waitPublished(feed []eventstore.RecordedEvent) {
	e.t.Helper()
	last := make([]eventstore.Position, partitions)
	for _, ev := range feed {
		p, err := e.runner.PartitionOf(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		last[p] = ev.Position
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		heads, err := relay.PublishedHeads(context.Background(), e.db.Pool, relay.DefaultName, partitions)
		if err != nil {
			e.t.Fatal(err)
		}
		if slices.Equal(heads, last) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("relay did not publish the backlog within 20s: heads %v, want %v", heads, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// batchShapes records what the live runner's transactions held
// (projections.Options.AfterCommit: each committed transaction's events).
type batchShapes struct {
	mu                                                            sync.Mutex
	batches, largest                                              int
	mixed, settingsMid, longStreams, voidWithPaid, refundWithPaid int
}

func (s *batchShapes) record(_ context.Context, events []eventstore.RecordedEvent) {
	var settingsMid, longStreams, voidWithPaid, refundWithPaid int
	merchants := map[string]int{} // events seen so far per merchant
	perStream := map[string]int{}
	paid := map[string]bool{}
	for _, ev := range events {
		category, m, _, _ := eventstore.ParseStreamName(ev.Stream)
		if category == projections.SettingsCategory && merchants[m] > 0 {
			settingsMid++
		}
		merchants[m]++
		if perStream[ev.Stream]++; perStream[ev.Stream] == 5 {
			longStreams++
		}
		switch ev.Type {
		case "TransactionPaid":
			paid[ev.Stream] = true
		case "TransactionVoided":
			if paid[ev.Stream] {
				voidWithPaid++
			}
		case "RefundIssued":
			if paid[ev.Stream] {
				refundWithPaid++
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches++
	s.largest = max(s.largest, len(events))
	if len(merchants) > 1 {
		s.mixed++
	}
	s.settingsMid += settingsMid
	s.longStreams += longStreams
	s.voidWithPaid += voidWithPaid
	s.refundWithPaid += refundWithPaid
}

func (s *batchShapes) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d transactions (largest %d events; %d of several merchants; %d settings changes mid-merchant, "+
		"%d streams of 5+ events, %d voids and %d refunds beside their payment)",
		s.batches, s.largest, s.mixed, s.settingsMid, s.longStreams, s.voidWithPaid, s.refundWithPaid)
}

// snapshotAll reads, through c (the database's owner: row-level security
// does not hide other merchants' rows), every read-model table the
// migrations define and the runner's bookkeeping, as rows of JSON text
// keyed by primary key.
func snapshotAll(t *testing.T, c *pgx.Conn) map[string]map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]map[string]string{}
	for _, table := range projtest.ReadModelTables(t, c) {
		rows, err := c.Query(ctx, `
            SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`, table)
		if err != nil {
			t.Fatal(err)
		}
		key, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(key) == 0 {
			t.Fatalf("primary key of %s: %v (%d columns)", table, err, len(key))
		}
		var parts []string
		for _, k := range key {
			parts = append(parts, fmt.Sprintf("'%s', t.%s", k, k))
		}
		out[table] = keyedRows(t, c, fmt.Sprintf(`SELECT jsonb_build_object(%s)::text, to_jsonb(t)::text FROM %s t`, strings.Join(parts, ", "), table))
	}
	out["projection_streams"] = keyedRows(t, c, `SELECT projection || ' ' || stream_name, version::text FROM projection_streams`)
	// updated_at is the commit's clock: left out.
	out["projection_checkpoints"] = keyedRows(t, c, `SELECT projection || ' ' || partition, major || '/' || minor FROM projection_checkpoints`)
	return out
}

func keyedRows(t *testing.T, c *pgx.Conn, q string) map[string]string {
	t.Helper()
	rows, err := c.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	out := map[string]string{}
	var k, v string
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error {
		if _, dup := out[k]; dup {
			return errors.New("duplicate key " + k)
		}
		out[k] = v
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

// diffTable fails the test with the first rows of table that differ
// between got (large batches) and want (one event per transaction).
func diffTable(t *testing.T, table string, got, want map[string]string) {
	t.Helper()
	var diff []string
	keys := maps.Clone(got)
	maps.Copy(keys, want)
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !gok:
			diff = append(diff, fmt.Sprintf("  missing %s\n    want %s", k, w))
		case !wok:
			diff = append(diff, fmt.Sprintf("  extra   %s\n    got  %s", k, g))
		case g != w:
			diff = append(diff, fmt.Sprintf("  differs %s\n    got  %s\n    want %s", k, g, w))
		}
	}
	if len(diff) > 0 {
		t.Errorf("%s: %d rows after large batches, %d one event at a time; %d differ:\n%s", table, len(got), len(want), len(diff),
			strings.Join(diff[:min(len(diff), 8)], "\n"))
	}
}
