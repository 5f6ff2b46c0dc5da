package esdbstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"pos/eventstore"
)

const (
	// idempotencyWindow is how many events beyond the append's own length
	// Append searches, from the stream's end, for a previous attempt.
	idempotencyWindow = 100
	// maxAnyAttempts bounds how often an Any append reads the head again
	// after another writer moved the stream between its read and its write.
	maxAnyAttempts = 20
)

// append runs Prepare's output against the server. The caller holds s.mu.
func (s *Store) append(ctx context.Context, p eventstore.Prepared) (eventstore.AppendResult, error) {
	var err error
	for attempt := 1; ; attempt++ {
		var res eventstore.AppendResult
		var again bool
		res, again, err = s.tryAppend(ctx, p)
		if !again || attempt >= maxAnyAttempts {
			return res, err
		}
		// Back off a little, at random, so that writers racing for the same
		// stream do not collide again in lockstep.
		pause := time.NewTimer(time.Duration(rand.Int64N(int64(attempt)*int64(2*time.Millisecond) + 1)))
		select {
		case <-ctx.Done():
			pause.Stop()
			return eventstore.AppendResult{}, ctx.Err()
		case <-pause.C:
		}
	}
}

// tryAppend makes one attempt. again reports a conflict on an Any append,
// worth another attempt; err is then the *ConcurrencyError to return if no
// attempt is left.
func (s *Store) tryAppend(ctx context.Context, p eventstore.Prepared) (res eventstore.AppendResult, again bool, err error) {
	// Read the head. For Any, read a whole window: nothing tells a retry of
	// an Any append from a new one but its ids, so look for them every time.
	window := 1
	if p.Expected.IsAny() {
		window = len(p.Events) + idempotencyWindow
	}
	recent, err := s.readStream(ctx, p.Stream, kurrentdb.Backwards, kurrentdb.End{}, window)
	if err != nil {
		return eventstore.AppendResult{}, false, err
	}
	var head *eventstore.RecordedEvent
	var headVersion uint64
	if len(recent) > 0 {
		head, headVersion = &recent[0], recent[0].Version
	}

	if want, exact := p.Expected.Version(); exact {
		if headVersion != want || head != nil && head.ID == p.Events[len(p.Events)-1].ID {
			// Behind the head, or at a head this append wrote itself (the
			// same events decided again with the same ids): the server
			// deduplicates ids only for a revision behind the head, and
			// would write these again.
			res, err := s.resolve(ctx, p)
			return res, false, err
		}
	} else if res, found, err := matchRetry(p, recent); found || err != nil {
		return res, false, err
	}

	var state kurrentdb.StreamState = kurrentdb.NoStream{}
	if headVersion > 0 {
		state = kurrentdb.Revision(headVersion - 1)
	}
	var prevHash []byte
	if head != nil {
		prevHash = head.Hash
	}
	proposed := make([]kurrentdb.EventData, len(p.Events))
	for i, e := range p.Events {
		version := headVersion + uint64(i) + 1
		hash := eventstore.Hash(e.ID, p.Stream, version, e.Type, e.SchemaVersion, e.Data, e.Metadata, prevHash)
		md, err := json.Marshal(storedMetadata{
			Metadata:      e.Metadata,
			SchemaVersion: e.SchemaVersion,
			Hash:          hex.EncodeToString(hash),
			PrevHash:      hex.EncodeToString(prevHash),
		})
		if err != nil {
			return eventstore.AppendResult{}, false, fmt.Errorf("esdbstore: encode metadata: %w", err)
		}
		proposed[i] = kurrentdb.EventData{
			EventID:     e.ID,
			EventType:   e.Type,
			ContentType: kurrentdb.ContentTypeJson,
			Data:        e.Data,
			Metadata:    md,
		}
		prevHash = hash
	}

	wr, err := s.client.AppendToStream(ctx, p.Stream, kurrentdb.AppendToStreamOptions{StreamState: state}, proposed...)
	if err != nil {
		if !isWrongExpectedVersion(err) {
			return eventstore.AppendResult{}, false, fmt.Errorf("esdbstore: append to %s: %w", p.Stream, err)
		}
		if p.Expected.IsAny() {
			// Someone appended between the read and the write: read again,
			// which also finds this append if a concurrent retry wrote it.
			return eventstore.AppendResult{}, true, &eventstore.ConcurrencyError{Stream: p.Stream, Expected: p.Expected, Actual: headVersion}
		}
		res, err := s.resolve(ctx, p)
		return res, false, err
	}

	lastRevision := headVersion + uint64(len(p.Events)) - 1
	res = eventstore.AppendResult{
		Version:  lastRevision + 1,
		Position: eventstore.Position{Major: wr.CommitPosition, Minor: wr.PreparePosition},
	}
	if wr.NextExpectedVersion != lastRevision || !knownPosition(res.Position) {
		// Not the answer to a plain write: the server may have deduplicated
		// the events by id alone (a concurrent retry), and it does not
		// always report the original position then. Read the stored last
		// event back: its position, and its content against the proposal.
		res, err = s.readBack(ctx, p, lastRevision)
		return res, false, err
	}
	return res, false, nil
}

// resolve settles an append whose stream is not where it was expected: the
// original result if this append is already stored (a retry),
// ErrIdempotencyMismatch if its ids are stored with other content, and a
// *ConcurrencyError otherwise.
func (s *Store) resolve(ctx context.Context, p eventstore.Prepared) (eventstore.AppendResult, error) {
	recent, err := s.readStream(ctx, p.Stream, kurrentdb.Backwards, kurrentdb.End{}, len(p.Events)+idempotencyWindow)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if res, found, err := matchRetry(p, recent); found || err != nil {
		return res, err
	}
	var actual uint64
	if len(recent) > 0 {
		actual = recent[0].Version
	}
	return eventstore.AppendResult{}, &eventstore.ConcurrencyError{Stream: p.Stream, Expected: p.Expected, Actual: actual}
}

// matchRetry looks for p's events among recent (a stream's last events,
// newest first). found is true when they are stored, consecutively and in
// order, with the same content; err is ErrIdempotencyMismatch when any of
// p's ids is stored otherwise (other content, order or position).
func matchRetry(p eventstore.Prepared, recent []eventstore.RecordedEvent) (res eventstore.AppendResult, found bool, err error) {
	first := -1
	for i := range recent {
		if recent[i].ID == p.Events[0].ID {
			first = i
			break
		}
	}
	if first < 0 {
		ids := make(map[uuid.UUID]struct{}, len(p.Events))
		for _, e := range p.Events {
			ids[e.ID] = struct{}{}
		}
		for _, r := range recent {
			if _, ok := ids[r.ID]; ok {
				return eventstore.AppendResult{}, false, mismatch(p.Stream, r.ID)
			}
		}
		return eventstore.AppendResult{}, false, nil
	}
	n := len(p.Events)
	if first-(n-1) < 0 {
		// The stream ends before the run of proposed events does.
		return eventstore.AppendResult{}, false, mismatch(p.Stream, p.Events[0].ID)
	}
	for k := range n {
		if !eventstore.SameContent(recent[first-k], p.Events[k]) {
			return eventstore.AppendResult{}, false, mismatch(p.Stream, p.Events[k].ID)
		}
	}
	last := recent[first-(n-1)]
	return eventstore.AppendResult{Version: last.Version, Position: last.Position}, true, nil
}

// readBack returns the result of an append from its stored last event, after
// checking that event is the proposed one.
func (s *Store) readBack(ctx context.Context, p eventstore.Prepared, lastRevision uint64) (eventstore.AppendResult, error) {
	got, err := s.readStream(ctx, p.Stream, kurrentdb.Backwards, kurrentdb.Revision(lastRevision), 1)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	want := p.Events[len(p.Events)-1]
	if len(got) == 0 || got[0].Version != lastRevision+1 {
		return eventstore.AppendResult{}, fmt.Errorf("esdbstore: append to %s: the server acknowledged revision %d but it cannot be read back", p.Stream, lastRevision)
	}
	if !eventstore.SameContent(got[0], want) {
		return eventstore.AppendResult{}, mismatch(p.Stream, want.ID)
	}
	return eventstore.AppendResult{Version: got[0].Version, Position: got[0].Position}, nil
}

func mismatch(stream string, id uuid.UUID) error {
	return fmt.Errorf("%w: event %s in stream %s", eventstore.ErrIdempotencyMismatch, id, stream)
}

// isWrongExpectedVersion reports the client's optimistic-concurrency failure:
// ErrorCodeWrongExpectedVersion from AppendToStream (v1 protocol), or
// ErrorCodeStreamRevisionConflict from the v2 protocol's appends.
func isWrongExpectedVersion(err error) bool {
	var kerr *kurrentdb.Error
	if !errors.As(err, &kerr) {
		return false
	}
	return kerr.IsErrorCode(kurrentdb.ErrorCodeWrongExpectedVersion) || kerr.IsErrorCode(kurrentdb.ErrorCodeStreamRevisionConflict)
}

// knownPosition reports whether p is a position the server really assigned:
// it sends 0 when it has none and -1 (as uint64) for "unknown".
func knownPosition(p eventstore.Position) bool {
	return !p.IsZero() && p.Major < 1<<63 && p.Minor < 1<<63
}
