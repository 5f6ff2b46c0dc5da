package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"pos/eventstore"
)

// Run runs the whole contract suite against b.
func Run(t *testing.T, b Backend) {
	t.Run("AppendAndReadBack", func(t *testing.T) { t.Parallel(); testAppendAndReadBack(t, b) })
	t.Run("ExpectedVersion", func(t *testing.T) { t.Parallel(); testExpectedVersion(t, b) })
	t.Run("TwentyWritersOneStream", func(t *testing.T) { t.Parallel(); testTwentyWriters(t, b) })
	t.Run("IdempotentRetry", func(t *testing.T) { t.Parallel(); testIdempotentRetry(t, b) })
	t.Run("GlobalOrderUnderConcurrentWriters", func(t *testing.T) { t.Parallel(); testGlobalOrder(t, b) })
	t.Run("HeldAppendNeverSkipped", func(t *testing.T) { testHeldAppend(t, b) })
	t.Run("MerchantScoping", func(t *testing.T) { t.Parallel(); testMerchantScoping(t, b) })
	t.Run("HashChain", func(t *testing.T) { t.Parallel(); testHashChain(t, b) })
	t.Run("TamperDetected", func(t *testing.T) { t.Parallel(); testTamper(t, b) })
	t.Run("Upcasting", func(t *testing.T) { t.Parallel(); testUpcasting(t, b) })
	t.Run("BadInput", func(t *testing.T) { t.Parallel(); testBadInput(t, b) })
}

// NewMerchant returns a merchant id no other test uses.
func NewMerchant() string { return uuid.New().String() }

// NewStream returns a fresh stream of merchant.
func NewStream(merchant, category string) string {
	return eventstore.StreamName(category, merchant, uuid.New().String())
}

// Event builds an event of merchant with a fresh UUIDv7 id and data.
func Event(merchant, eventType string, data any) eventstore.EventData {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	return eventstore.EventData{
		ID:            uuid.Must(uuid.NewV7()),
		Type:          eventType,
		SchemaVersion: 1,
		Data:          raw,
		Metadata: eventstore.Metadata{
			MerchantID:    merchant,
			Actor:         "user-1",
			Role:          "CASHIER",
			CorrelationID: uuid.NewString(),
			CausationID:   uuid.NewString(),
			TraceParent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		},
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustAppend(t *testing.T, s eventstore.Store, stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(ctxFor(t), stream, expected, events...)
	if err != nil {
		t.Fatalf("append to %s (expected %s): %v", stream, expected, err)
	}
	return res
}

func readStream(t *testing.T, s eventstore.Store, stream string) []eventstore.RecordedEvent {
	t.Helper()
	events, err := s.ReadStream(ctxFor(t), stream, 1, 0)
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	return events
}

// settledFeed settles the store, then reads the whole filtered feed after pos.
func settledFeed(ctx context.Context, s eventstore.Store, after eventstore.Position, f eventstore.Filter) ([]eventstore.RecordedEvent, error) {
	if err := s.Settle(ctx); err != nil {
		return nil, err
	}
	return readFeed(ctx, s, after, f)
}

// readFeed reads a filtered global feed after pos until it is exhausted.
func readFeed(ctx context.Context, s eventstore.Store, after eventstore.Position, f eventstore.Filter) ([]eventstore.RecordedEvent, error) {
	var out []eventstore.RecordedEvent
	for {
		batch, err := s.ReadAll(ctx, after, f, 100)
		if err != nil {
			return nil, err
		}
		out = append(out, batch...)
		if len(batch) < 100 {
			return out, nil
		}
		after = batch[len(batch)-1].Position
	}
}

func testAppendAndReadBack(t *testing.T, b Backend) {
	s := b.Open(t)
	ctx := ctxFor(t)
	m := NewMerchant()
	stream := NewStream(m, "transaction")
	in := []eventstore.EventData{
		Event(m, "TransactionOpened", map[string]any{"branch_id": "b1"}),
		Event(m, "ItemAdded", map[string]any{"sku": "TEA", "qty": 2}),
		Event(m, "ItemAdded", map[string]any{"sku": "CAKE", "qty": 1, "note": "ünïcødé"}),
	}
	res := mustAppend(t, s, stream, eventstore.NoStream, in...)
	if res.Version != 3 {
		t.Errorf("append version = %d, want 3", res.Version)
	}

	got := readStream(t, s, stream)
	if len(got) != len(in) {
		t.Fatalf("read %d events, want %d", len(got), len(in))
	}
	var prevHash []byte
	for i, e := range got {
		if !eventstore.SameContent(e, in[i]) {
			t.Errorf("event %d: read %+v, appended %+v", i, e, in[i])
		}
		if e.Stream != stream || e.Version != uint64(i+1) {
			t.Errorf("event %d: stream %q version %d, want %q %d", i, e.Stream, e.Version, stream, i+1)
		}
		if e.RecordedAt.IsZero() || time.Since(e.RecordedAt) > time.Hour || e.RecordedAt.Location() != time.UTC {
			t.Errorf("event %d: recorded at %v, want a recent UTC time", i, e.RecordedAt)
		}
		if string(eventstore.HashOf(e)) != string(e.Hash) {
			t.Errorf("event %d: stored hash does not match its content", i)
		}
		if string(e.PrevHash) != string(prevHash) {
			t.Errorf("event %d: prev_hash %x, want %x", i, e.PrevHash, prevHash)
		}
		if i > 0 && !got[i-1].Position.Less(e.Position) {
			t.Errorf("event %d: position %s not after %s", i, e.Position, got[i-1].Position)
		}
		if e.Metadata.TraceID() != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("event %d: trace id %q lost", i, e.Metadata.TraceID())
		}
		prevHash = e.Hash
	}
	if got[2].Position != res.Position {
		t.Errorf("append position %s, last event read at %s", res.Position, got[2].Position)
	}

	from2, err := s.ReadStream(ctx, stream, 2, 0)
	if err != nil || len(from2) != 2 || from2[0].Version != 2 {
		t.Errorf("read from version 2 = %d events (err %v), want versions 2..3", len(from2), err)
	}
	limited, err := s.ReadStream(ctx, stream, 1, 2)
	if err != nil || len(limited) != 2 {
		t.Errorf("read with limit 2 = %d events (err %v)", len(limited), err)
	}
	back, err := s.ReadStreamBackward(ctx, stream, 0, 0)
	if err != nil || len(back) != 3 || back[0].Version != 3 || back[2].Version != 1 {
		t.Errorf("read backward from the end: %d events (err %v), want 3,2,1", len(back), err)
	}
	back, err = s.ReadStreamBackward(ctx, stream, 2, 1)
	if err != nil || len(back) != 1 || back[0].Version != 2 {
		t.Errorf("read backward from 2, limit 1: %v (err %v), want version 2", back, err)
	}
	missing, err := s.ReadStream(ctx, NewStream(m, "transaction"), 1, 0)
	if err != nil || len(missing) != 0 {
		t.Errorf("missing stream read = %d events, err %v; want none, no error", len(missing), err)
	}

	res = mustAppend(t, s, stream, eventstore.Exact(3), Event(m, "CheckedOut", map[string]any{}))
	if res.Version != 4 {
		t.Errorf("second append version = %d, want 4", res.Version)
	}
	got = readStream(t, s, stream)
	if len(got) != 4 || string(got[3].PrevHash) != string(got[2].Hash) {
		t.Errorf("fourth event does not chain onto the third")
	}
}

func testExpectedVersion(t *testing.T, b Backend) {
	s := b.Open(t)
	m := NewMerchant()
	existing := NewStream(m, "transaction")
	mustAppend(t, s, existing, eventstore.NoStream, Event(m, "A", 1), Event(m, "B", 2))

	cases := []struct {
		name     string
		stream   string
		expected eventstore.ExpectedVersion
		wantErr  bool
		actual   uint64
	}{
		{"no stream on an existing stream", existing, eventstore.NoStream, true, 2},
		{"exact version behind", existing, eventstore.Exact(1), true, 2},
		{"exact version ahead", existing, eventstore.Exact(5), true, 2},
		{"exact version on a missing stream", NewStream(m, "transaction"), eventstore.Exact(1), true, 0},
		{"any on a missing stream", NewStream(m, "transaction"), eventstore.Any, false, 0},
		{"no stream on a missing stream", NewStream(m, "transaction"), eventstore.NoStream, false, 0},
		{"exact current version", existing, eventstore.Exact(2), false, 0},
		{"any on an existing stream", existing, eventstore.Any, false, 0},
	}
	for _, tc := range cases {
		before := len(readStream(t, s, tc.stream))
		_, err := s.Append(ctxFor(t), tc.stream, tc.expected, Event(m, "C", 3))
		after := len(readStream(t, s, tc.stream))
		if !tc.wantErr {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			if after != before+1 {
				t.Errorf("%s: stream went from %d to %d events", tc.name, before, after)
			}
			continue
		}
		var ce *eventstore.ConcurrencyError
		if !errors.Is(err, eventstore.ErrConcurrency) || !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want ErrConcurrency as *ConcurrencyError", tc.name, err)
			continue
		}
		if ce.Actual != tc.actual {
			t.Errorf("%s: conflict reports actual %d, want %d", tc.name, ce.Actual, tc.actual)
		}
		if after != before {
			t.Errorf("%s: refused append still wrote (%d -> %d events)", tc.name, before, after)
		}
	}
}

func testTwentyWriters(t *testing.T, b Backend) {
	s := b.Open(t)
	m := NewMerchant()
	stream := NewStream(m, "stock")
	mustAppend(t, s, stream, eventstore.NoStream, Event(m, "Received", 1))

	const writers, rounds = 20, 5
	for round := 1; round <= rounds; round++ {
		expected := uint64(round)
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var wins, conflicts int
		var other []error
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := Event(m, "Reserved", map[string]int{"writer": w})
				<-start
				_, err := s.Append(context.Background(), stream, eventstore.Exact(expected), e)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, eventstore.ErrConcurrency):
					conflicts++
				default:
					other = append(other, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins != 1 || conflicts != writers-1 || len(other) > 0 {
			t.Fatalf("round %d: %d wins, %d conflicts, other errors %v; want exactly 1 win", round, wins, conflicts, other)
		}
	}
	got := readStream(t, s, stream)
	if len(got) != rounds+1 {
		t.Fatalf("stream has %d events, want %d", len(got), rounds+1)
	}
	for i, e := range got {
		if e.Version != uint64(i+1) {
			t.Fatalf("event %d has version %d", i, e.Version)
		}
	}
}

func testIdempotentRetry(t *testing.T, b Backend) {
	s := b.Open(t)
	ctx := ctxFor(t)
	m := NewMerchant()
	stream := NewStream(m, "transaction")
	batch := []eventstore.EventData{Event(m, "Opened", 1), Event(m, "ItemAdded", 2)}
	first := mustAppend(t, s, stream, eventstore.NoStream, batch...)

	for _, expected := range []eventstore.ExpectedVersion{eventstore.NoStream, eventstore.Any} {
		again, err := s.Append(ctx, stream, expected, batch...)
		if err != nil {
			t.Fatalf("retry with %s: %v", expected, err)
		}
		if again != first {
			t.Errorf("retry with %s = %+v, want the original %+v", expected, again, first)
		}
	}
	// Data re-serialised with other whitespace is the same content.
	spaced := append([]eventstore.EventData(nil), batch...)
	spaced[1].Data = json.RawMessage(" 2 ")
	if _, err := s.Append(ctx, stream, eventstore.NoStream, spaced...); err != nil {
		t.Errorf("retry with re-serialised data: %v", err)
	}
	// A retry at the head it wrote: the same events decided again on the
	// aggregate that already holds them, with the same (derived) ids, as a
	// redelivered process manager's command does. It writes nothing.
	if again, err := s.Append(ctx, stream, eventstore.Exact(2), batch...); err != nil || again != first {
		t.Errorf("retry with Exact(2), the head it wrote = %+v, %v; want the original %+v", again, err, first)
	}
	if n := len(readStream(t, s, stream)); n != 2 {
		t.Fatalf("stream has %d events after a retry at its head, want 2", n)
	}
	// A retry still succeeds after the stream has moved on.
	mustAppend(t, s, stream, eventstore.Exact(2), Event(m, "CheckedOut", 3))
	if again, err := s.Append(ctx, stream, eventstore.NoStream, batch...); err != nil || again != first {
		t.Errorf("retry after later appends = %+v, %v; want %+v", again, err, first)
	}
	if n := len(readStream(t, s, stream)); n != 3 {
		t.Fatalf("stream has %d events after retries, want 3", n)
	}

	changed := append([]eventstore.EventData(nil), batch...)
	changed[1].Data = json.RawMessage(`{"qty":99}`)
	if _, err := s.Append(ctx, stream, eventstore.NoStream, changed...); !errors.Is(err, eventstore.ErrIdempotencyMismatch) {
		t.Errorf("same ids, other data: err = %v, want ErrIdempotencyMismatch", err)
	}
	if n := len(readStream(t, s, stream)); n != 3 {
		t.Errorf("stream has %d events after refused retries, want 3", n)
	}

	t.Run("IDsReusedInAnotherStream", func(t *testing.T) {
		if b.IDsPerStream {
			t.Skipf("%s: event ids are unique per stream only", b.Name)
		}
		otherStream := NewStream(m, "transaction")
		if _, err := s.Append(ctx, otherStream, eventstore.NoStream, batch...); !errors.Is(err, eventstore.ErrIdempotencyMismatch) {
			t.Errorf("same ids, other stream: err = %v, want ErrIdempotencyMismatch", err)
		}
		if n := len(readStream(t, s, otherStream)); n != 0 {
			t.Errorf("other stream has %d events after a refused append, want 0", n)
		}
	})
}

func testGlobalOrder(t *testing.T, b Backend) {
	s := b.Open(t)
	ctx := ctxFor(t)
	m := NewMerchant()
	filter := eventstore.Filter{MerchantID: m}
	const writers, appendsEach = 8, 40
	shared := NewStream(m, "journal") // every writer also appends here, with Any

	want := make(map[uuid.UUID]bool)
	var wantMu sync.Mutex
	start := make(chan struct{})
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := NewStream(m, "transaction")
			<-start
			var version uint64 // of own
			for i := 0; i < appendsEach; i++ {
				stream, expected := own, eventstore.Exact(version)
				events := []eventstore.EventData{Event(m, "Tick", i)}
				if i%4 == 3 {
					stream, expected = shared, eventstore.Any
				} else if i%5 == 0 {
					events = append(events, Event(m, "Tock", i), Event(m, "Tock", i))
				}
				res, err := s.Append(ctx, stream, expected, events...)
				if err != nil {
					errs <- err
					return
				}
				if stream == own {
					version = res.Version
				}
				wantMu.Lock()
				for _, e := range events {
					want[e.ID] = true
				}
				wantMu.Unlock()
			}
		}()
	}

	// A follower reads the feed while the writers write.
	var followed []eventstore.RecordedEvent
	followErr := make(chan error, 1)
	go func() {
		pos := eventstore.Start
		for {
			batch, err := s.ReadAll(ctx, pos, filter, 37)
			if err != nil {
				followErr <- err
				return
			}
			followed = append(followed, batch...)
			if len(batch) > 0 {
				pos = batch[len(batch)-1].Position
				continue
			}
			select {
			case <-done:
				rest, err := readFeed(ctx, s, pos, filter)
				followed = append(followed, rest...)
				followErr <- err
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	if err := s.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	close(done)
	if err := <-followErr; err != nil {
		t.Fatalf("follower: %v", err)
	}

	if err := checkFeed(followed, want); err != nil {
		t.Fatalf("followed feed: %v", err)
	}
	again, err := readFeed(ctx, s, eventstore.Start, filter)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != len(followed) {
		t.Fatalf("re-read %d events, followed %d", len(again), len(followed))
	}
	for i := range again {
		if again[i].ID != followed[i].ID || again[i].Position != followed[i].Position {
			t.Fatalf("order not stable at %d: re-read %s@%s, followed %s@%s", i, again[i].ID, again[i].Position, followed[i].ID, followed[i].Position)
		}
	}
}

// checkFeed checks a feed holds each wanted event exactly once, in strictly
// increasing positions, and each stream's versions in order without gaps.
func checkFeed(feed []eventstore.RecordedEvent, want map[uuid.UUID]bool) error {
	seen := make(map[uuid.UUID]bool, len(feed))
	versions := make(map[string]uint64)
	for i, e := range feed {
		if seen[e.ID] {
			return fmt.Errorf("event %s delivered twice", e.ID)
		}
		seen[e.ID] = true
		if !want[e.ID] {
			return fmt.Errorf("event %s was not appended by this test", e.ID)
		}
		if i > 0 && !feed[i-1].Position.Less(e.Position) {
			return fmt.Errorf("position %s follows %s", e.Position, feed[i-1].Position)
		}
		if e.Version != versions[e.Stream]+1 {
			return fmt.Errorf("stream %s: version %d after %d", e.Stream, e.Version, versions[e.Stream])
		}
		versions[e.Stream] = e.Version
	}
	var missing []string
	for id := range want {
		if !seen[id] {
			missing = append(missing, id.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d events never seen (e.g. %s)", len(missing), len(want), missing[0])
	}
	return nil
}

// HeldAppendGap is the late-commit scenario: one append is held open while
// later appends commit; a reader at the head must not move past the held
// event, and must see it once it commits. It returns an error describing what
// went wrong, so a test can also show that a naive reader fails it.
func HeldAppendGap(ctx context.Context, t *testing.T, s eventstore.Store, hold func(ctx context.Context, t *testing.T, stream string, events ...eventstore.EventData) func() error) error {
	m := NewMerchant()
	filter := eventstore.Filter{MerchantID: m}
	first := Event(m, "Before", 1)
	if _, err := s.Append(ctx, NewStream(m, "transaction"), eventstore.NoStream, first); err != nil {
		return err
	}
	held := Event(m, "Held", 2)
	commit := hold(ctx, t, NewStream(m, "transaction"), held)
	later := Event(m, "After", 3)
	if _, err := s.Append(ctx, NewStream(m, "transaction"), eventstore.NoStream, later); err != nil {
		_ = commit()
		return err
	}

	// The reader catches up to the head while the held append is open.
	var seen []eventstore.RecordedEvent
	head, err := readFeed(ctx, s, eventstore.Start, filter)
	if err != nil {
		_ = commit()
		return err
	}
	seen = append(seen, head...)
	for _, e := range head {
		if e.ID == later.ID {
			_ = commit()
			return errors.New("reader moved past a held append (read the later event first)")
		}
	}
	if err := commit(); err != nil {
		return fmt.Errorf("commit held append: %w", err)
	}
	pos := eventstore.Start
	if len(seen) > 0 {
		pos = seen[len(seen)-1].Position
	}
	rest, err := settledFeed(ctx, s, pos, filter)
	if err != nil {
		return err
	}
	seen = append(seen, rest...)
	var ids []string
	for _, e := range seen {
		ids = append(ids, e.Type)
	}
	if got := strings.Join(ids, ","); got != "Before,Held,After" {
		return fmt.Errorf("reader saw %q, want Before,Held,After", got)
	}
	return nil
}

func testHeldAppend(t *testing.T, b Backend) {
	if b.HoldAppend == nil {
		t.Skipf("%s: no held-append window (global order is assigned at commit)", b.Name)
	}
	s := b.Open(t)
	if err := HeldAppendGap(ctxFor(t), t, s, b.HoldAppend); err != nil {
		t.Fatal(err)
	}
}

func testMerchantScoping(t *testing.T, b Backend) {
	s := b.Open(t)
	ctx := ctxFor(t)
	marker := NewMerchant()
	mark := mustAppend(t, s, NewStream(marker, "transaction"), eventstore.NoStream, Event(marker, "Mark", 0))

	a, bm := NewMerchant(), NewMerchant()
	wantA, wantB := map[uuid.UUID]bool{}, map[uuid.UUID]bool{}
	for i := 0; i < 10; i++ {
		ea, eb := Event(a, "Sale", i), Event(bm, "Sale", i)
		mustAppend(t, s, NewStream(a, "transaction"), eventstore.NoStream, ea)
		mustAppend(t, s, NewStream(bm, "transaction"), eventstore.NoStream, eb)
		wantA[ea.ID], wantB[eb.ID] = true, true
	}
	for _, tc := range []struct {
		merchant string
		want     map[uuid.UUID]bool
	}{{a, wantA}, {bm, wantB}} {
		feed, err := settledFeed(ctx, s, eventstore.Start, eventstore.Filter{MerchantID: tc.merchant})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range feed {
			if e.Metadata.MerchantID != tc.merchant {
				t.Fatalf("merchant %s's feed shows merchant %s's event %s", tc.merchant, e.Metadata.MerchantID, e.ID)
			}
		}
		if err := checkFeed(feed, tc.want); err != nil {
			t.Fatalf("merchant %s: %v", tc.merchant, err)
		}
	}
	all, err := settledFeed(ctx, s, mark.Position, eventstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range all {
		if wantA[e.ID] || wantB[e.ID] {
			found++
		}
	}
	if found != 20 {
		t.Fatalf("unfiltered feed after the marker holds %d of both merchants' 20 events", found)
	}
	if feed, err := s.ReadAll(ctx, eventstore.Start, eventstore.Filter{MerchantID: "not-a-merchant"}, 10); !errors.Is(err, eventstore.ErrInvalidFilter) || len(feed) != 0 {
		t.Fatalf("feed of a malformed merchant id: %d events, err %v; want ErrInvalidFilter", len(feed), err)
	}
	if feed, err := s.ReadAll(ctx, eventstore.Start, eventstore.Filter{MerchantID: NewMerchant()}, 10); err != nil || len(feed) != 0 {
		t.Fatalf("feed of a merchant without events: %d events, err %v; want none", len(feed), err)
	}
}

func testHashChain(t *testing.T, b Backend) {
	s := b.Open(t)
	m := NewMerchant()
	for i := 0; i < 3; i++ {
		stream := NewStream(m, "transaction")
		mustAppend(t, s, stream, eventstore.NoStream, Event(m, "A", i), Event(m, "B", i))
		mustAppend(t, s, stream, eventstore.Exact(2), Event(m, "C", i))
	}
	rep, err := eventstore.Verify(ctxFor(t), s, eventstore.VerifyOptions{Filter: eventstore.Filter{MerchantID: m}, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.StreamsChecked != 3 || rep.EventsChecked != 9 || len(rep.Breaks) != 0 {
		t.Fatalf("verify = %d streams, %d events, breaks %v; want 3, 9, none", rep.StreamsChecked, rep.EventsChecked, rep.Breaks)
	}
}

func testTamper(t *testing.T, b Backend) {
	if b.Tamper == nil {
		t.Skipf("%s: stored events cannot be altered behind the store's back", b.Name)
	}
	s := b.Open(t)
	ctx := ctxFor(t)
	m := NewMerchant()
	var target string
	for i := 0; i < 3; i++ {
		stream := NewStream(m, "transaction")
		mustAppend(t, s, stream, eventstore.NoStream, Event(m, "A", i), Event(m, "B", map[string]int{"amount": 100}), Event(m, "C", i))
		if i == 1 {
			target = stream
		}
	}
	b.Tamper(ctx, t, target, 2, json.RawMessage(`{"amount":1}`))
	rep, err := eventstore.Verify(ctx, s, eventstore.VerifyOptions{Filter: eventstore.Filter{MerchantID: m}})
	if err != nil {
		t.Fatal(err)
	}
	want := []eventstore.Break{{Stream: target, Version: 2, Reason: eventstore.ReasonHashMismatch}}
	if fmt.Sprint(rep.Breaks) != fmt.Sprint(want) {
		t.Fatalf("breaks = %v, want %v", rep.Breaks, want)
	}
}

func testUpcasting(t *testing.T, b Backend) {
	s := b.Open(t)
	m := NewMerchant()
	reg, err := eventstore.NewRegistry(eventstore.EventType{
		Name:    "ItemAdded",
		Current: 2,
		Upcasters: map[int]eventstore.Upcaster{
			// v1 had "price"; v2 calls it "unit_price" and adds a tax rate.
			1: func(data json.RawMessage) (json.RawMessage, error) {
				var v1 struct {
					SKU   string `json:"sku"`
					Price int64  `json:"price"`
				}
				if err := json.Unmarshal(data, &v1); err != nil {
					return nil, err
				}
				return json.Marshal(map[string]any{"sku": v1.SKU, "unit_price": v1.Price, "tax_rate_bps": 0})
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stream := NewStream(m, "transaction")
	old := Event(m, "ItemAdded", map[string]any{"sku": "TEA", "price": 5000})
	mustAppend(t, s, stream, eventstore.NoStream, old)

	up := eventstore.Upcasting{Store: s, Registry: reg}
	got, err := up.ReadStream(ctxFor(t), stream, 1, 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("read upcast: %v, %v", got, err)
	}
	if got[0].SchemaVersion != 2 || string(got[0].Data) != `{"sku":"TEA","tax_rate_bps":0,"unit_price":5000}` {
		t.Errorf("upcast event = v%d %s, want v2 with unit_price", got[0].SchemaVersion, got[0].Data)
	}
	raw := readStream(t, s, stream)
	if raw[0].SchemaVersion != 1 || string(raw[0].Data) != `{"price":5000,"sku":"TEA"}` {
		t.Errorf("stored event changed: v%d %s", raw[0].SchemaVersion, raw[0].Data)
	}
	if err := up.Settle(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	feed, err := up.ReadAll(ctxFor(t), eventstore.Start, eventstore.Filter{MerchantID: m}, 10)
	if err != nil || len(feed) != 1 || feed[0].SchemaVersion != 2 {
		t.Errorf("feed through upcasting: %v, %v", feed, err)
	}
}

func testBadInput(t *testing.T, b Backend) {
	s := b.Open(t)
	m := NewMerchant()
	stream := NewStream(m, "transaction")
	good := func() eventstore.EventData { return Event(m, "A", 1) }
	with := func(f func(*eventstore.EventData)) []eventstore.EventData {
		e := good()
		f(&e)
		return []eventstore.EventData{e}
	}
	dup := good()
	many := make([]eventstore.EventData, eventstore.MaxEventsPerAppend+1)
	for i := range many {
		many[i] = good()
	}
	cases := []struct {
		name     string
		stream   string
		expected eventstore.ExpectedVersion
		events   []eventstore.EventData
	}{
		{"empty stream name", "", eventstore.Any, with(func(*eventstore.EventData) {})},
		{"oversized stream name", stream + strings.Repeat("x", eventstore.MaxStreamNameLen), eventstore.Any, with(func(*eventstore.EventData) {})},
		{"stream name without merchant", "transaction-123", eventstore.Any, with(func(*eventstore.EventData) {})},
		{"stream name with a space", stream + " x", eventstore.Any, with(func(*eventstore.EventData) {})},
		{"zero expected version", stream, eventstore.ExpectedVersion{}, with(func(*eventstore.EventData) {})},
		{"no events", stream, eventstore.Any, nil},
		{"too many events", stream, eventstore.Any, many},
		{"nil event id", stream, eventstore.Any, with(func(e *eventstore.EventData) { e.ID = uuid.Nil })},
		{"duplicate ids in one append", stream, eventstore.Any, []eventstore.EventData{dup, dup}},
		{"empty type", stream, eventstore.Any, with(func(e *eventstore.EventData) { e.Type = "" })},
		{"schema version 0", stream, eventstore.Any, with(func(e *eventstore.EventData) { e.SchemaVersion = 0 })},
		{"data not JSON", stream, eventstore.Any, with(func(e *eventstore.EventData) { e.Data = json.RawMessage(`{"a":`) })},
		{"empty data", stream, eventstore.Any, with(func(e *eventstore.EventData) { e.Data = nil })},
		{"data with NUL", stream, eventstore.Any, with(func(e *eventstore.EventData) { e.Data = json.RawMessage(`"a\u0000b"`) })},
		{"oversized data", stream, eventstore.Any, with(func(e *eventstore.EventData) {
			e.Data = json.RawMessage(`"` + strings.Repeat("x", eventstore.MaxEventDataLen) + `"`)
		})},
		{"other merchant in metadata", stream, eventstore.Any, with(func(e *eventstore.EventData) { e.Metadata.MerchantID = NewMerchant() })},
		{"missing merchant", stream, eventstore.Any, with(func(e *eventstore.EventData) { e.Metadata.MerchantID = "" })},
	}
	for _, tc := range cases {
		_, err := s.Append(ctxFor(t), tc.stream, tc.expected, tc.events...)
		var ie *eventstore.InvalidAppendError
		if !errors.Is(err, eventstore.ErrInvalidAppend) || !errors.As(err, &ie) {
			t.Errorf("%s: err = %v, want *InvalidAppendError", tc.name, err)
		}
	}
	// One bad event in a batch writes none of the batch.
	batch := []eventstore.EventData{good(), good()}
	batch[1].Data = json.RawMessage(`nope`)
	if _, err := s.Append(ctxFor(t), stream, eventstore.Any, batch...); !errors.Is(err, eventstore.ErrInvalidAppend) {
		t.Errorf("batch with one bad event: err = %v", err)
	}
	if n := len(readStream(t, s, stream)); n != 0 {
		t.Errorf("refused appends wrote %d events", n)
	}
}
