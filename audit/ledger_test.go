package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"pos/eventstore"
	"pos/eventstore/pgstore"
	"pos/eventstore/storetest"
	"pos/internal/pgtest"
)

// world is one fresh database with the store and ledger as the service has
// them (role pos_app), and the owner's connection for tampering.
type world struct {
	t      *testing.T
	url    string
	store  *pgstore.Store
	ledger *Ledger
	key    Key
	log    *bytes.Buffer // the anchors' log lines
	logMu  *sync.Mutex
}

func newWorld(t *testing.T) *world {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool, err := pgstore.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &world{t: t, url: url, store: pgstore.New(pool), ledger: NewLedger(pool), key: testKey(t, 9),
		log: new(bytes.Buffer), logMu: new(sync.Mutex)}
}

// lockedWriter serializes log writes from concurrent anchorers.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (w *world) anchorer() *Anchorer {
	return NewAnchorer(w.store, w.ledger, w.key, slog.New(slog.NewJSONHandler(lockedWriter{w.logMu, w.log}, nil)))
}

func (w *world) auditor() *Auditor {
	return &Auditor{Store: w.store, Ledger: w.ledger, Key: w.key.Public()}
}

// stream appends n events to a new stream of merchant.
func (w *world) stream(merchant string, n int) string {
	w.t.Helper()
	s := storetest.NewStream(merchant, "transaction")
	w.append(s, n)
	return s
}

func (w *world) append(stream string, n int) {
	w.t.Helper()
	w.appendAt(stream, eventstore.Any, n)
}

func (w *world) appendAt(stream string, expected eventstore.ExpectedVersion, n int) {
	w.t.Helper()
	_, merchant, _, _ := eventstore.ParseStreamName(stream)
	events := make([]eventstore.EventData, n)
	for i := range events {
		events[i] = storetest.Event(merchant, "ItemAdded", map[string]int{"i": i})
	}
	if _, err := w.store.Append(context.Background(), stream, expected, events...); err != nil {
		w.t.Fatal(err)
	}
}

// owner runs sql as the database owner with triggers off, as a superuser
// bypassing the append-only rules would.
func (w *world) owner(sql string, args ...any) {
	w.t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, w.url)
	if err != nil {
		w.t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, sql, args...)
		if err == nil && tag.RowsAffected() == 0 {
			err = errors.New("no row changed")
		}
		return err
	}); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
}

func (w *world) anchorOnce(a *Anchorer) []Anchor {
	w.t.Helper()
	out, err := a.AnchorOnce(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

func (w *world) verify(merchant string) Report {
	w.t.Helper()
	rep, err := w.auditor().Verify(context.Background(), eventstore.VerifyOptions{Filter: eventstore.Filter{MerchantID: merchant}})
	if err != nil {
		w.t.Fatal(err)
	}
	return rep
}

func findings(fs []Finding) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		if f.Stream == "" {
			out = append(out, fmt.Sprintf("anchor %d: %s", f.AnchorSeq, f.Reason))
		} else {
			out = append(out, fmt.Sprintf("%s@%d %s", f.Stream, f.Version, f.Reason))
		}
	}
	return out
}

func wantFindings(t *testing.T, got []Finding, want ...string) {
	t.Helper()
	if g := findings(got); !slices.Equal(g, want) {
		t.Fatalf("findings:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestAnchorsCatchDeletedTailAndDeletedStream(t *testing.T) {
	w := newWorld(t)
	m, other := storetest.NewMerchant(), storetest.NewMerchant()
	cut := w.stream(m, 5)
	gone := w.stream(m, 3)
	kept := w.stream(m, 2)
	w.stream(other, 4)
	anchors := w.anchorOnce(w.anchorer())
	if len(anchors) != 2 {
		t.Fatalf("%d anchors for two merchants with events", len(anchors))
	}
	wantFindings(t, w.verify(m).Breaks)

	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version >= 4`, cut)
	w.owner(`DELETE FROM events WHERE stream_name = $1`, gone)
	// The hash chains alone see nothing: what is left is consistent.
	chains, err := eventstore.Verify(context.Background(), w.store, eventstore.VerifyOptions{Filter: eventstore.Filter{MerchantID: m}})
	if err != nil || len(chains.Breaks) != 0 {
		t.Fatalf("chains: %v %v", chains.Breaks, err)
	}
	rep := w.verify(m)
	wantFindings(t, rep.Breaks, slices.Sorted(slices.Values([]string{cut + "@4 missing_events", gone + "@1 stream_missing"}))...)
	for _, f := range rep.Breaks {
		if f.AnchorSeq == 0 || f.MerchantID != m || (f.Stream == cut && f.AnchoredVersion != 5) || (f.Stream == gone && f.AnchoredVersion != 3) {
			t.Errorf("finding %+v lacks its anchor, merchant or anchored version", f)
		}
	}
	if rep.StreamsChecked != 2 || len(rep.Anchors) != 1 {
		t.Errorf("report: %d streams, %d anchors", rep.StreamsChecked, len(rep.Anchors))
	}
	_ = kept
	// The other merchant is untouched; all merchants together report the same breaks.
	wantFindings(t, w.verify(other).Breaks)
	all := w.verify("")
	if len(all.Breaks) != 2 || len(all.Anchors) != 2 {
		t.Fatalf("all merchants: %v, %d anchors", findings(all.Breaks), len(all.Anchors))
	}
}

func TestAnchorsNeverForget(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	cut := w.stream(m, 4)
	gone := w.stream(m, 2)
	w.anchorOnce(w.anchorer())

	// History is cut, then the service restarts: the new Anchorer reads
	// the shortened feed from the start, and the merchant keeps selling.
	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version = 4`, cut)
	w.owner(`DELETE FROM events WHERE stream_name = $1`, gone)
	fresh := w.anchorer()
	w.stream(m, 1)
	w.anchorOnce(fresh)
	w.stream(m, 1)
	w.anchorOnce(fresh)
	latest, err := w.ledger.Latest(context.Background(), m)
	if err != nil || latest.Seq < 3 || latest.Streams != 4 {
		t.Fatalf("latest anchor %+v, %v: want a third anchor over 4 streams", latest, err)
	}
	wantFindings(t, w.verify(m).Breaks, slices.Sorted(slices.Values([]string{cut + "@4 missing_events", gone + "@1 stream_missing"}))...)
}

func TestAnchorsAreDeltasRebuiltFromTheLastFull(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	streams := make([]string, 10)
	for i := range streams {
		streams[i] = w.stream(m, 1)
	}
	a := w.anchorer()
	a.fullEvery = 4
	var fulls []bool
	for round := range 9 {
		w.append(streams[round], 2) // one stream of ten moves: a delta
		if round == 4 {
			w.append(streams[9], 1)
		}
		anchors := w.anchorOnce(a)
		if len(anchors) != 1 {
			t.Fatalf("round %d: %d anchors", round, len(anchors))
		}
		var full bool
		if err := w.store.Pool().QueryRow(context.Background(), `SELECT is_full FROM audit_anchors WHERE seq = $1`, anchors[0].Seq).Scan(&full); err != nil {
			t.Fatal(err)
		}
		fulls = append(fulls, full)
		latest, err := w.ledger.Latest(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		if latest.Seq != anchors[0].Seq || !latest.RootValid() || latest.LinkBroken || !latest.SignatureValid(w.key.Public()) {
			t.Fatalf("round %d: rebuilt anchor %d does not verify (root %v, link broken %v)", round, latest.Seq, latest.RootValid(), latest.LinkBroken)
		}
		if got := latest.Heads[streams[round]].Version; got != 3 {
			t.Fatalf("round %d: anchored version %d, want 3", round, got)
		}
	}
	// The first anchor is full, then one after every three deltas.
	if want := []bool{true, false, false, false, true, false, false, false, true}; !slices.Equal(fulls, want) {
		t.Fatalf("full anchors %v, want %v", fulls, want)
	}
	// Nothing moved: no anchor.
	if got := w.anchorOnce(a); len(got) != 0 {
		t.Fatalf("%d anchors with nothing new", len(got))
	}
	wantFindings(t, w.verify(m).Breaks)

	// A delta row removed behind the triggers' back breaks the chain.
	w.append(streams[0], 1)
	victim := w.anchorOnce(a)[0].Seq
	w.append(streams[1], 1)
	w.anchorOnce(a)
	w.owner(`DELETE FROM audit_anchors WHERE seq = $1`, victim)
	rep := w.verify(m)
	if g := findings(rep.Breaks); !slices.Contains(g, fmt.Sprintf("anchor %d: %s", rep.Anchors[0].Seq, ReasonChainBroken)) {
		t.Fatalf("after deleting anchor %d: %v", victim, g)
	}
}

func TestForgedOrAlteredAnchorsAreReported(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	s := w.stream(m, 3)
	w.anchorOnce(w.anchorer())

	// pos_app may insert anchors: a forger with the service's database
	// role but not its key anchors a shortened history.
	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version = 3`, s)
	forger := NewAnchorer(w.store, w.ledger, testKey(t, 66), slog.New(slog.NewJSONHandler(io.Discard, nil)))
	forger.merchants[m] = &merchantState{heads: map[string]eventstore.Head{}, dirty: map[string]struct{}{}, forceFull: true}
	w.anchorOnce(forger)
	rep := w.verify(m)
	forged := rep.Anchors[0].Seq
	// Reported, and the genuine anchor before it still shows the cut.
	wantFindings(t, rep.Breaks, fmt.Sprintf("anchor %d: %s", forged, ReasonSignatureInvalid), s+"@3 missing_events")

	// The genuine anchorer does not build on the forgery: it rebuilds on
	// the latest anchor that verifies, which holds the original version 3,
	// so a new version 3 in its place does not pass either.
	w.appendAt(s, eventstore.Exact(2), 1)
	w.anchorOnce(w.anchorer())
	rep = w.verify(m)
	wantFindings(t, rep.Breaks, s+"@3 anchored_event_changed")
	if rep.Anchors[0].KeyID != w.key.Public().ID() || rep.Anchors[0].Seq <= forged {
		t.Fatalf("latest anchor %+v", rep.Anchors[0])
	}

	// An anchor row edited by a superuser.
	edited := rep.Anchors[0].Seq
	w.owner(`UPDATE audit_anchors SET event_count = event_count + 1 WHERE seq = $1`, edited)
	wantFindings(t, w.verify(m).Breaks, fmt.Sprintf("anchor %d: %s", edited, ReasonSignatureInvalid), s+"@3 anchored_event_changed")
}

func TestAnchorTableIsAppendOnly(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	w.stream(m, 1)
	w.anchorOnce(w.anchorer())
	ctx := context.Background()
	for _, sql := range []string{`UPDATE audit_anchors SET root = '\x00'`, `DELETE FROM audit_anchors`, `TRUNCATE audit_anchors`} {
		if _, err := w.store.Pool().Exec(ctx, sql); err == nil {
			t.Errorf("pos_app: %s succeeded", sql)
		}
		c, err := pgx.Connect(ctx, w.url) // the owner, a superuser: the triggers refuse
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("owner: %s: %v, want the append-only trigger's refusal", sql, err)
		}
		c.Close(ctx)
	}
}

func TestConcurrentAnchorersKeepOneChain(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	streams := []string{w.stream(m, 1), w.stream(m, 1), w.stream(m, 1)}
	a, b := w.anchorer(), w.anchorer()
	for round := range 6 {
		w.append(streams[round%3], 1)
		var wg sync.WaitGroup
		for _, an := range []*Anchorer{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := an.AnchorOnce(context.Background()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	latest, err := w.ledger.Latest(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if latest.LinkBroken || !latest.RootValid() || latest.Events != 9 {
		t.Fatalf("latest anchor after two writers: link broken %v, root valid %v, events %d", latest.LinkBroken, latest.RootValid(), latest.Events)
	}
	wantFindings(t, w.verify(m).Breaks)
}

func TestLoggedAnchorsAreCheckedAgainstTheLedger(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	s := w.stream(m, 2)
	a := w.anchorer()
	w.anchorOnce(a)
	w.append(s, 1)
	w.anchorOnce(a)
	logged := bytes.Clone(w.log.Bytes())
	if n := bytes.Count(logged, []byte(`"msg":"audit anchor"`)); n != 2 {
		t.Fatalf("%d anchor log lines:\n%s", n, logged)
	}
	ctx := context.Background()
	fs, n, err := CheckLog(ctx, w.ledger, w.key.Public(), bytes.NewReader(logged), "")
	if err != nil || n != 2 {
		t.Fatalf("CheckLog: %d anchors, %v", n, err)
	}
	wantFindings(t, fs)

	// A superuser removes the latest anchor (and the events it covered):
	// the ledger alone still verifies, the log does not.
	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version = 3`, s)
	var last int64
	_ = w.store.Pool().QueryRow(ctx, `SELECT max(seq) FROM audit_anchors`).Scan(&last)
	w.owner(`DELETE FROM audit_anchors WHERE seq = $1`, last)
	wantFindings(t, w.verify(m).Breaks)
	fs, _, err = CheckLog(ctx, w.ledger, w.key.Public(), bytes.NewReader(logged), "")
	if err != nil {
		t.Fatal(err)
	}
	wantFindings(t, fs, fmt.Sprintf("anchor %d: %s", last, ReasonAnchorMissing))
	// A forged log line does not verify.
	forged := bytes.Replace(logged, []byte(`"events":2`), []byte(`"events":1`), 1)
	fs, _, _ = CheckLog(ctx, w.ledger, w.key.Public(), bytes.NewReader(forged), "")
	if g := findings(fs); len(g) == 0 || !strings.Contains(g[0], ReasonSignatureInvalid) {
		t.Fatalf("forged log line: %v", g)
	}
	// Another merchant's check leaves this merchant's anchors out.
	fs, n, err = CheckLog(ctx, w.ledger, w.key.Public(), bytes.NewReader(logged), storetest.NewMerchant())
	if err != nil || n != 0 || len(fs) != 0 {
		t.Fatalf("CheckLog of another merchant: %d anchors, %v, %v", n, findings(fs), err)
	}
	// A logged anchor whose row cannot be read is a finding among the
	// others, not an error that hides them.
	var first int64
	_ = w.store.Pool().QueryRow(ctx, `SELECT min(seq) FROM audit_anchors`).Scan(&first)
	w.owner(`UPDATE audit_anchors SET heads = '\x00' WHERE seq = $1`, first)
	fs, _, err = CheckLog(ctx, w.ledger, w.key.Public(), bytes.NewReader(logged), "")
	if err != nil {
		t.Fatalf("CheckLog over a malformed row: %v", err)
	}
	wantFindings(t, fs, fmt.Sprintf("anchor %d: %s", first, ReasonAnchorMalformed), fmt.Sprintf("anchor %d: %s", last, ReasonAnchorMissing))
}

func TestAnchorerReanchorsWhenAnchorsVanish(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	s := w.stream(m, 3)
	a := w.anchorer()
	w.anchorOnce(a)
	if strings.Contains(w.log.String(), `"level":"ERROR"`) {
		t.Fatalf("a first anchor logged an error:\n%s", w.log.String())
	}
	// A superuser cuts the stream and removes every anchor; the running
	// Anchorer notices at its next write and anchors from memory again.
	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version = 3`, s)
	w.owner(`DELETE FROM audit_anchors`)
	w.stream(m, 1)
	if got := w.anchorOnce(a); len(got) != 1 {
		t.Fatalf("%d anchors after the ledger lost them", len(got))
	}
	if !strings.Contains(w.log.String(), "anchors are missing from the ledger") {
		t.Errorf("no error logged:\n%s", w.log.String())
	}
	wantFindings(t, w.verify(m).Breaks, s+"@3 missing_events")
}

// copyAnchor inserts, behind the triggers' back, a copy of anchor seq as
// the merchant's newest row (full), and returns the copy's sequence number.
func (w *world) copyAnchor(seq int64) int64 {
	w.t.Helper()
	w.owner(`INSERT INTO audit_anchors (merchant_id, position, created_at, stream_count, event_count, root, prev, key_id, signature, is_full, heads)
        SELECT merchant_id, position, created_at, stream_count, event_count, root, prev, key_id, signature, true, heads
          FROM audit_anchors WHERE seq = $1`, seq)
	var copied int64
	if err := w.ledger.pool.QueryRow(context.Background(), `SELECT max(seq) FROM audit_anchors`).Scan(&copied); err != nil {
		w.t.Fatal(err)
	}
	return copied
}

// An old genuine anchor copied in as the newest hides a cut tail from the
// latest anchor's comparison, but not from the chain: the copy does not
// chain to the row before it.
func TestAnOldAnchorCopiedInAgainIsAChainBreak(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	s := w.stream(m, 3)
	a := w.anchorer()
	first := w.anchorOnce(a)[0].Seq
	w.append(s, 2)
	w.anchorOnce(a)
	wantFindings(t, w.verify(m).Breaks)

	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version > 3`, s)
	copied := w.copyAnchor(first)
	rep := w.verify(m)
	if rep.Anchors[0].Seq != copied {
		t.Fatalf("verified against anchor %d, want the copy %d", rep.Anchors[0].Seq, copied)
	}
	wantFindings(t, rep.Breaks, fmt.Sprintf("anchor %d: %s", copied, ReasonChainBroken))
}

// A delta row removed with the tail it anchored stays a break after the
// Anchorer has started again and anchored on top of what is left.
func TestARemovedAnchorStaysABreakAfterANewAnchor(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	streams := []string{w.stream(m, 2), w.stream(m, 2), w.stream(m, 2)}
	a := w.anchorer()
	w.anchorOnce(a)
	w.append(streams[0], 2)
	victim := w.anchorOnce(a)[0].Seq // a delta: one stream of three moved
	w.append(streams[1], 1)
	after := w.anchorOnce(a)[0].Seq

	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version > 2`, streams[0])
	w.owner(`DELETE FROM audit_anchors WHERE seq = $1`, victim)
	w.append(streams[2], 1)
	w.anchorOnce(w.anchorer()) // a restarted process
	wantFindings(t, w.verify(m).Breaks, fmt.Sprintf("anchor %d: %s", after, ReasonChainBroken))
}

// A row that cannot be read (written with the service's own role) is a
// finding, not a failed verification, and holds up no merchant's anchors:
// its merchant gets a new chain, the others are anchored as usual.
func TestAMalformedAnchorHoldsUpNobody(t *testing.T) {
	w := newWorld(t)
	x, y := storetest.NewMerchant(), storetest.NewMerchant()
	sx, sy := w.stream(x, 2), w.stream(y, 2)
	w.anchorOnce(w.anchorer())
	w.owner(`INSERT INTO audit_anchors (merchant_id, position, created_at, stream_count, event_count, root, prev, key_id, signature, is_full, heads)
        SELECT merchant_id, position, created_at, stream_count, event_count, root, sha256(signature), key_id, signature, true, '\x00'
          FROM audit_anchors WHERE merchant_id = $1`, x)
	var bad int64
	if err := w.ledger.pool.QueryRow(context.Background(), `SELECT max(seq) FROM audit_anchors`).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	wantFindings(t, w.verify(x).Breaks, fmt.Sprintf("anchor %d: %s", bad, ReasonAnchorMalformed))
	all, err := w.auditor().Verify(context.Background(), eventstore.VerifyOptions{})
	if err != nil {
		t.Fatalf("verify of every merchant: %v", err)
	}
	wantFindings(t, all.Breaks, fmt.Sprintf("anchor %d: %s", bad, ReasonAnchorMalformed))

	// A process that starts now meets the row first thing.
	w.append(sx, 1)
	w.append(sy, 1)
	got := w.anchorOnce(w.anchorer())
	if len(got) != 2 {
		t.Fatalf("%d anchors written, want one for each merchant", len(got))
	}
	if !strings.Contains(w.log.String(), "a stored anchor cannot be read") {
		t.Errorf("no error logged:\n%s", w.log.String())
	}
	for _, m := range []string{x, y} {
		rep := w.verify(m)
		wantFindings(t, rep.Breaks)
		if rep.Anchors[0].Events != 3 {
			t.Errorf("merchant %s: anchored %d events, want 3", m, rep.Anchors[0].Events)
		}
	}
}

// plantMalformed inserts, as pos_app could, a full anchor row of merchant
// whose heads do not decode but which chains to the latest row, and returns
// its sequence number.
func (w *world) plantMalformed(merchant string) int64 {
	w.t.Helper()
	w.owner(`INSERT INTO audit_anchors (merchant_id, position, created_at, stream_count, event_count, root, prev, key_id, signature, is_full, heads)
        SELECT merchant_id, position, created_at, stream_count, event_count, root, sha256(signature), key_id, signature, true, '\x00'
          FROM audit_anchors WHERE merchant_id = $1 ORDER BY seq DESC LIMIT 1`, merchant)
	var seq int64
	if err := w.ledger.pool.QueryRow(context.Background(), `SELECT max(seq) FROM audit_anchors`).Scan(&seq); err != nil {
		w.t.Fatal(err)
	}
	return seq
}

// Unreadable rows planted over a cut tail hide it neither from verification
// (it compares with the latest anchor that verifies, past every unreadable
// row) nor from the anchors written after them (built on that anchor, not
// on the feed alone).
func TestUnreadableAnchorsDoNotHideACutTail(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	s := w.stream(m, 2)
	w.anchorOnce(w.anchorer())
	w.append(s, 3)
	w.anchorOnce(w.anchorer())
	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version > 2`, s)
	w.plantMalformed(m)
	bad := w.plantMalformed(m)
	wantFindings(t, w.verify(m).Breaks, fmt.Sprintf("anchor %d: %s", bad, ReasonAnchorMalformed), s+"@3 missing_events")

	w.stream(m, 1) // the merchant moves on; a restarted process anchors it
	if got := w.anchorOnce(w.anchorer()); len(got) != 1 || got[0].Events != 6 {
		t.Fatalf("anchors after the unreadable rows: %+v, want one covering the 5 anchored events and the new one", got)
	}
	wantFindings(t, w.verify(m).Breaks, s+"@3 missing_events")
}

// When no anchor before an unreadable row verifies (the merchant's only
// full row corrupted), the merchant is not anchored on the feed alone: the
// round reports it, and verification keeps reporting the row.
func TestNoAnchorOnTheFeedAloneOverAnUnreadableChain(t *testing.T) {
	w := newWorld(t)
	m, other := storetest.NewMerchant(), storetest.NewMerchant()
	s := w.stream(m, 2)
	first := w.anchorOnce(w.anchorer())[0].Seq
	w.owner(`UPDATE audit_anchors SET heads = '\x00' WHERE seq = $1`, first)
	w.append(s, 1)
	w.stream(other, 1)
	got, err := w.anchorer().AnchorOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not anchoring on the feed alone") {
		t.Fatalf("anchoring over an unreadable chain: %v", err)
	}
	if len(got) != 1 || got[0].MerchantID != other {
		t.Fatalf("anchors written %+v, want only the other merchant's", got)
	}
	wantFindings(t, w.verify(m).Breaks, fmt.Sprintf("anchor %d: %s", first, ReasonAnchorMalformed))
}

// A tail cut after it was anchored, and the stream then written on past the
// anchored version (a restarted server, which never saw the cut events,
// re-chains onto what is left): the next anchor keeps the anchored head,
// and verification goes on reporting the rewrite, for the running
// anchorer and for a restarted one. Before, the next anchor signed the
// rewritten history and verification found nothing.
func TestARewrittenTailIsNeverAnchoredOver(t *testing.T) {
	w := newWorld(t)
	m := storetest.NewMerchant()
	s := w.stream(m, 5)
	a := w.anchorer()
	w.anchorOnce(a)
	wantFindings(t, w.verify(m).Breaks)

	w.owner(`DELETE FROM events WHERE stream_name = $1 AND version >= 4`, s)
	pool, err := pgstore.Connect(context.Background(), w.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, merchant, _, _ := eventstore.ParseStreamName(s)
	var evs []eventstore.EventData
	for i := range 3 {
		evs = append(evs, storetest.Event(merchant, "ItemAdded", map[string]int{"j": i}))
	}
	if _, err := pgstore.New(pool).Append(context.Background(), s, eventstore.Any, evs...); err != nil {
		t.Fatal(err)
	}
	before := findings(w.verify(m).Breaks)
	if len(before) == 0 {
		t.Fatal("the rewrite is not reported before the next anchor")
	}
	w.anchorOnce(a)
	if after := findings(w.verify(m).Breaks); !slices.Equal(after, before) {
		t.Fatalf("after the next anchor: %v, want %v as before it", after, before)
	}
	w.anchorOnce(w.anchorer())
	if after := findings(w.verify(m).Breaks); !slices.Equal(after, before) {
		t.Fatalf("after a restarted anchorer's anchor: %v, want %v as before it", after, before)
	}
}
