package esdbstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"pos/eventstore"
)

// storedMetadata is the user metadata of every event this package writes.
// The embedded Metadata's fields are inlined by encoding/json.
type storedMetadata struct {
	eventstore.Metadata
	SchemaVersion int    `json:"schema_version"`
	Hash          string `json:"hash"`                // hex SHA-256, see eventstore.Hash
	PrevHash      string `json:"prev_hash,omitempty"` // hex; empty for version 1
}

const (
	// readAllBatch and readAllBatchMax bound how many $all events one read
	// request asks for.
	readAllBatch    = 512
	readAllBatchMax = 4096
	// maxLimit is the most events one read returns, as in pgstore: a limit
	// of 0 or less, or above maxLimit, means maxLimit.
	maxLimit = eventstore.MaxReadLimit
	// scannedCacheSize bounds Store.scanned.
	scannedCacheSize = 4096
	// caughtUpIdle and caughtUpMax bound a read of one merchant's feed
	// that does not reach limit events: the server must report CaughtUp
	// with no more than caughtUpIdle between two of its messages (a
	// filtered subscription sends checkpoints while it scans), and within
	// caughtUpMax in all. Only a server that never reports it (older than
	// EventStoreDB 23.10) should ever hit them.
	caughtUpIdle = 30 * time.Second
	caughtUpMax  = 5 * time.Minute
)

var (
	errCaughtUpIdle = fmt.Errorf("esdbstore: read $all: the server did not report caught-up and sent nothing for %s (a merchant's feed needs EventStoreDB 23.10 or later, or KurrentDB)", caughtUpIdle)
	errCaughtUpLate = fmt.Errorf("esdbstore: read $all: the server did not report caught-up within %s (a merchant's feed needs EventStoreDB 23.10 or later, or KurrentDB)", caughtUpMax)
)

func clampLimit(limit int) int {
	if limit <= 0 || limit > maxLimit {
		return maxLimit
	}
	return limit
}

// errForeign marks an event this package did not write.
var errForeign = errors.New("esdbstore: event not written by esdbstore")

// readStream reads up to limit events of stream from start in direction dir.
// A missing stream is empty. The caller holds s.mu.
func (s *Store) readStream(ctx context.Context, stream string, dir kurrentdb.Direction, start kurrentdb.StreamPosition, limit int) ([]eventstore.RecordedEvent, error) {
	rs, err := s.client.ReadStream(ctx, stream, kurrentdb.ReadStreamOptions{Direction: dir, From: start}, uint64(limit))
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("esdbstore: read %s: %w", stream, err)
	}
	defer rs.Close()
	out := make([]eventstore.RecordedEvent, 0, min(limit, 64))
	for {
		ev, err := recv(rs)
		if err != nil {
			if isEOF(err) {
				return out, nil
			}
			if isNotFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("esdbstore: read %s: %w", stream, err)
		}
		if ev.Event == nil {
			continue
		}
		e, err := decode(ev.Event)
		if err != nil {
			return nil, fmt.Errorf("esdbstore: read %s at version %d: %w", stream, ev.Event.EventNumber+1, err)
		}
		out = append(out, e)
	}
}

// readAll reads up to limit events of the feed filter names strictly after
// after. The caller holds s.mu.
func (s *Store) readAll(ctx context.Context, after eventstore.Position, filter eventstore.Filter, limit int) ([]eventstore.RecordedEvent, error) {
	if filter.MerchantID == "" {
		return s.readEveryMerchant(ctx, after, limit)
	}
	m, err := uuid.Parse(filter.MerchantID)
	if err != nil {
		return nil, fmt.Errorf("%w: merchant %q is not a UUID", eventstore.ErrInvalidFilter, filter.MerchantID)
	}
	return s.readMerchant(ctx, after, m, limit)
}

// readEveryMerchant reads $all forwards strictly after after and keeps up to
// limit events of ours. The client's ReadAll cannot filter on the server (its
// request always says NoFilter), so system and foreign events are dropped
// here.
func (s *Store) readEveryMerchant(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	batch := min(max(limit+1, readAllBatch), readAllBatchMax)
	// cursor is the last position seen; reads from a position include the
	// event at it, so anything at or before cursor is dropped. A previous
	// call that read to the end from the same point lets this one skip what
	// it scanned.
	cursor := s.scannedTo(after)
	haveCursor := !cursor.IsZero()
	var from kurrentdb.AllPosition = kurrentdb.Start{}
	if haveCursor {
		from = kurrentdb.Position{Commit: cursor.Major, Prepare: cursor.Minor}
	}
	out := make([]eventstore.RecordedEvent, 0, min(limit, 256))
	for {
		n, full, err := s.readAllBatch(ctx, from, batch, limit, &cursor, &haveCursor, &out)
		if err != nil {
			return nil, err
		}
		if full {
			return out, nil
		}
		if n < batch {
			// The end of $all: remember how far the next call, which
			// starts after the last event returned, may skip.
			next := after
			if len(out) > 0 {
				next = out[len(out)-1].Position
			}
			if haveCursor && next.Less(cursor) {
				s.rememberScan(next, cursor)
			}
			return out, nil
		}
		next := kurrentdb.Position{Commit: cursor.Major, Prepare: cursor.Minor}
		if next == from {
			return nil, fmt.Errorf("esdbstore: read $all: no progress after %s", cursor)
		}
		from = next
	}
}

// scannedTo returns how far $all is known to hold no event of ours after
// after: a position to resume from, or after itself. Such a fact never goes
// stale, since $all only grows at its end.
func (s *Store) scannedTo(after eventstore.Position) eventstore.Position {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	if to, ok := s.scanned[after]; ok {
		return to
	}
	return after
}

func (s *Store) rememberScan(after, to eventstore.Position) {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	if s.scanned == nil || len(s.scanned) >= scannedCacheSize {
		s.scanned = make(map[eventstore.Position]eventstore.Position)
	}
	s.scanned[after] = to
}

// readAllBatch reads one batch of $all from from, appending events of ours to
// out. It returns how many events the server sent and whether out reached
// limit (the batch is then abandoned).
func (s *Store) readAllBatch(ctx context.Context, from kurrentdb.AllPosition, batch int, limit int,
	cursor *eventstore.Position, haveCursor *bool, out *[]eventstore.RecordedEvent) (n int, full bool, err error) {
	rs, err := s.client.ReadAll(ctx, kurrentdb.ReadAllOptions{Direction: kurrentdb.Forwards, From: from}, uint64(batch))
	if err != nil {
		return 0, false, fmt.Errorf("esdbstore: read $all: %w", err)
	}
	defer rs.Close()
	for {
		ev, err := recv(rs)
		if err != nil {
			if isEOF(err) {
				return n, false, nil
			}
			return n, false, fmt.Errorf("esdbstore: read $all: %w", err)
		}
		n++
		r := ev.OriginalEvent()
		if r == nil {
			continue
		}
		pos := eventstore.Position{Major: r.Position.Commit, Minor: r.Position.Prepare}
		if *haveCursor && !cursor.Less(pos) {
			continue
		}
		*cursor, *haveCursor = pos, true
		if _, ok := streamMerchant(r.StreamID); !ok {
			continue
		}
		e, err := decode(r)
		if err != nil {
			continue // a foreign event in a stream named like ours
		}
		*out = append(*out, e)
		if len(*out) >= limit {
			return n, true, nil
		}
	}
}

// readMerchant reads up to limit events of merchant's feed strictly after
// after, filtered on the server: it subscribes to $all from after with a
// stream-name filter (merchantStreams) and takes events until it has limit of
// them or the server reports that the subscription caught up with the end of
// $all, then closes the subscription. A server that never reports it (older
// than EventStoreDB 23.10) makes the call fail after caughtUpIdle without a
// message, or after caughtUpMax in all. The caller holds s.mu.
func (s *Store) readMerchant(ctx context.Context, after eventstore.Position, merchant uuid.UUID, limit int) ([]eventstore.RecordedEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("esdbstore: read $all: %w", err)
	}
	// Every end of the subscription but the server's goes through stop,
	// with its cause, before the call's context is cancelled: ctx's end
	// (the call's context does not carry ctx's deadline to gRPC, whose own
	// deadline error could otherwise arrive before ctx reports it) and the
	// two timeouts.
	subCtx, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stop(nil)
	unhook := context.AfterFunc(ctx, func() { stop(ctx.Err()) })
	defer unhook()
	idle := time.AfterFunc(caughtUpIdle, func() { stop(errCaughtUpIdle) })
	defer idle.Stop()
	late := time.AfterFunc(caughtUpMax, func() { stop(errCaughtUpLate) })
	defer late.Stop()
	failed := func(err error) error {
		switch cause := context.Cause(subCtx); {
		case cause == nil:
			return fmt.Errorf("esdbstore: read $all: %w", err)
		case cause == errCaughtUpIdle || cause == errCaughtUpLate:
			return cause
		default:
			return fmt.Errorf("esdbstore: read $all: %w", cause)
		}
	}

	var from kurrentdb.AllPosition = kurrentdb.Start{}
	if !after.IsZero() {
		from = kurrentdb.Position{Commit: after.Major, Prepare: after.Minor}
	}
	sub, err := s.client.SubscribeToAll(subCtx, kurrentdb.SubscribeToAllOptions{
		From:   from,
		Filter: &kurrentdb.SubscriptionFilter{Type: kurrentdb.StreamFilterType, Regex: merchantStreams(merchant)},
	})
	if err != nil {
		return nil, failed(err)
	}
	defer sub.Close()

	out := make([]eventstore.RecordedEvent, 0, min(limit, 256))
	for {
		ev, err := next(sub)
		if err != nil {
			return nil, err
		}
		switch {
		case ev.SubscriptionDropped != nil:
			return nil, failed(ev.SubscriptionDropped.Error)
		case ev.CheckPointReached != nil:
			idle.Reset(caughtUpIdle)
		case ev.FellBehind != nil:
			// Sent only once live, after CaughtUp; nothing to do.
		case ev.EventAppeared != nil:
			idle.Reset(caughtUpIdle)
			r := ev.EventAppeared.OriginalEvent()
			if r == nil {
				continue
			}
			pos := eventstore.Position{Major: r.Position.Commit, Minor: r.Position.Prepare}
			if !after.IsZero() && !after.Less(pos) {
				continue // a subscription starts after its position; be sure
			}
			if m, ok := streamMerchant(r.StreamID); !ok || m != merchant {
				continue // the server's filter should not let it through
			}
			e, err := decode(r)
			if err != nil {
				continue // a foreign event in a stream named like ours
			}
			out = append(out, e)
			if len(out) >= limit {
				return out, nil
			}
		default:
			// CaughtUp. EventStoreDB 23.10 sends it empty, which the client
			// turns into an event with no field set; later servers add a
			// timestamp, which the client reports in ev.CaughtUp. (FellBehind
			// without a timestamp looks the same, but the server sends it
			// only after CaughtUp.)
			return out, nil
		}
	}
}

// merchantStreams is the server-side form of streamMerchant for one merchant:
// a regex matching the names eventstore.StreamName builds for merchant,
// "<category>-<merchant>.<id>". The merchant's hex digits match in either
// case, since merchant ids compare as UUIDs (as in pgstore) and a stream name
// may spell its merchant in upper case.
func merchantStreams(merchant uuid.UUID) string {
	var b strings.Builder
	b.WriteString(`^[a-z][a-z0-9_]*-`)
	for _, c := range merchant.String() {
		if c >= 'a' && c <= 'f' {
			b.WriteByte('[')
			b.WriteRune(c)
			b.WriteRune(c - 'a' + 'A')
			b.WriteByte(']')
		} else {
			b.WriteRune(c)
		}
	}
	b.WriteString(`\.`)
	return b.String()
}

// streamMerchant reports whether stream is named by eventstore.StreamName,
// which excludes $-prefixed system streams (their names never have that
// form), and returns the merchant the name holds.
func streamMerchant(stream string) (uuid.UUID, bool) {
	_, m, _, ok := eventstore.ParseStreamName(stream)
	if !ok {
		return uuid.UUID{}, false
	}
	id, err := uuid.Parse(m)
	return id, err == nil
}

// decode rebuilds a RecordedEvent from an ESDB event this package wrote, or
// fails with errForeign.
func decode(r *kurrentdb.RecordedEvent) (eventstore.RecordedEvent, error) {
	var md storedMetadata
	if err := json.Unmarshal(r.UserMetadata, &md); err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("%w: metadata: %v", errForeign, err)
	}
	if md.MerchantID == "" || md.SchemaVersion < 1 {
		return eventstore.RecordedEvent{}, fmt.Errorf("%w: metadata lacks merchant_id or schema_version", errForeign)
	}
	hash, err := hex.DecodeString(md.Hash)
	if err != nil || len(hash) != sha256.Size {
		return eventstore.RecordedEvent{}, fmt.Errorf("%w: bad hash", errForeign)
	}
	var prev []byte
	if md.PrevHash != "" {
		prev, err = hex.DecodeString(md.PrevHash)
		if err != nil || len(prev) != sha256.Size {
			return eventstore.RecordedEvent{}, fmt.Errorf("%w: bad prev_hash", errForeign)
		}
	}
	if !json.Valid(r.Data) {
		return eventstore.RecordedEvent{}, fmt.Errorf("%w: data is not JSON", errForeign)
	}
	return eventstore.RecordedEvent{
		ID:            r.EventID,
		Stream:        r.StreamID,
		Version:       r.EventNumber + 1,
		Position:      eventstore.Position{Major: r.Position.Commit, Minor: r.Position.Prepare},
		Type:          r.EventType,
		SchemaVersion: md.SchemaVersion,
		Data:          json.RawMessage(r.Data),
		Metadata:      md.Metadata,
		RecordedAt:    r.CreatedDate.UTC(),
		Hash:          hash,
		PrevHash:      prev,
	}, nil
}

// recv wraps ReadStream.Recv, which panics on a response message it does not
// know, into an error.
func recv(rs *kurrentdb.ReadStream) (ev *kurrentdb.ResolvedEvent, err error) {
	defer func() {
		if r := recover(); r != nil {
			ev, err = nil, fmt.Errorf("esdbstore: unexpected read response: %v", r)
		}
	}()
	return rs.Recv()
}

// next wraps Subscription.Recv, so that a panic in the client's decoding of
// a message becomes an error. Recv returns a SubscriptionDropped event rather
// than an error when the stream fails or its context ends.
func next(sub *kurrentdb.Subscription) (ev *kurrentdb.SubscriptionEvent, err error) {
	defer func() {
		if r := recover(); r != nil {
			ev, err = nil, fmt.Errorf("esdbstore: unexpected subscription message: %v", r)
		}
	}()
	if ev = sub.Recv(); ev == nil {
		return nil, errors.New("esdbstore: empty subscription message")
	}
	return ev, nil
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// isNotFound reports the client's "stream not found", which a read of a
// missing (or soft-deleted) stream gets.
func isNotFound(err error) bool {
	var kerr *kurrentdb.Error
	return errors.As(err, &kerr) && kerr.IsErrorCode(kurrentdb.ErrorCodeResourceNotFound)
}
