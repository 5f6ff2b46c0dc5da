package esdbstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

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
	maxLimit = 10_000
	// scannedCacheSize bounds Store.scanned.
	scannedCacheSize = 4096
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

// readAll reads $all forwards strictly after after and keeps up to limit
// events of ours that pass filter. The client's ReadAll cannot filter on the
// server (its request always says NoFilter), so the filter runs here. The
// caller holds s.mu.
func (s *Store) readAll(ctx context.Context, after eventstore.Position, filter eventstore.Filter, limit int) ([]eventstore.RecordedEvent, error) {
	var feed feedOf
	if filter.MerchantID != "" {
		m, err := uuid.Parse(filter.MerchantID)
		if err != nil {
			return nil, nil // stream names hold merchant UUIDs only
		}
		feed = feedOf{one: true, merchant: m}
	}
	batch := min(max(limit+1, readAllBatch), readAllBatchMax)
	// cursor is the last position seen; reads from a position include the
	// event at it, so anything at or before cursor is dropped. A previous
	// call that read to the end from the same point with the same filter
	// lets this one skip what it scanned.
	key := scanKey{feed: feed, after: after}
	cursor := s.scannedTo(key)
	haveCursor := !cursor.IsZero()
	var from kurrentdb.AllPosition = kurrentdb.Start{}
	if haveCursor {
		from = kurrentdb.Position{Commit: cursor.Major, Prepare: cursor.Minor}
	}
	out := make([]eventstore.RecordedEvent, 0, min(limit, 256))
	for {
		n, full, err := s.readAllBatch(ctx, from, batch, feed, limit, &cursor, &haveCursor, &out)
		if err != nil {
			return nil, err
		}
		if full {
			return out, nil
		}
		if n < batch {
			// The end of $all: remember how far the next call, which
			// starts after the last event returned, may skip.
			next := scanKey{feed: feed, after: after}
			if len(out) > 0 {
				next.after = out[len(out)-1].Position
			}
			if haveCursor && next.after.Less(cursor) {
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

// feedOf is a parsed eventstore.Filter: one merchant's feed, or (one false)
// every merchant's.
type feedOf struct {
	one      bool
	merchant uuid.UUID
}

// scanKey names a feed read from a position.
type scanKey struct {
	feed  feedOf
	after eventstore.Position
}

// scannedTo returns how far $all is known to hold no event of key's feed
// after key.after: a position to resume from, or key.after itself. Such a
// fact never goes stale, since $all only grows at its end.
func (s *Store) scannedTo(key scanKey) eventstore.Position {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	if to, ok := s.scanned[key]; ok {
		return to
	}
	return key.after
}

func (s *Store) rememberScan(key scanKey, to eventstore.Position) {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	if s.scanned == nil || len(s.scanned) >= scannedCacheSize {
		s.scanned = make(map[scanKey]eventstore.Position)
	}
	s.scanned[key] = to
}

// readAllBatch reads one batch of $all from from, appending matching events to
// out. It returns how many events the server sent and whether out reached
// limit (the batch is then abandoned).
func (s *Store) readAllBatch(ctx context.Context, from kurrentdb.AllPosition, batch int, feed feedOf, limit int,
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
		if !feed.keeps(r.StreamID) {
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

// keeps reports whether events of stream belong in feed f: the stream is
// named by eventstore.StreamName, which excludes $-prefixed system streams
// (their names never have that form), and for one merchant's feed it names
// that merchant. It is the client-side form of the stream-name regex
// ^[^-]+-<merchant>\. , comparing merchant ids as UUIDs like pgstore does.
func (f feedOf) keeps(stream string) bool {
	_, m, _, ok := eventstore.ParseStreamName(stream)
	if !ok {
		return false
	}
	if !f.one {
		return true
	}
	id, err := uuid.Parse(m)
	return err == nil && id == f.merchant
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

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// isNotFound reports the client's "stream not found", which a read of a
// missing (or soft-deleted) stream gets.
func isNotFound(err error) bool {
	var kerr *kurrentdb.Error
	return errors.As(err, &kerr) && kerr.IsErrorCode(kurrentdb.ErrorCodeResourceNotFound)
}
