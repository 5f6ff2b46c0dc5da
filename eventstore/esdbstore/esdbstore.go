// Package esdbstore is the EventStoreDB (KurrentDB) backend of the event store
// port eventstore.Store, over the official gRPC client
// github.com/kurrent-io/KurrentDB-Client-Go (package kurrentdb).
//
// Mapping. A stream is an ESDB stream of the same name; an event's 1-based
// version is its ESDB revision + 1; its global position is its $all position
// (Major = commit position, Minor = prepare position). Data is stored as-is
// with content type application/json. The user metadata of each ESDB event is
// a JSON object holding the eventstore.Metadata fields plus schema_version,
// hash and prev_hash (hex), so that reads rebuild a RecordedEvent completely
// and Verify can check the hash chain.
//
// What the server guarantees: an append of several events to one stream is
// atomic; the expected-revision check is done by the server under its single
// writer; $all is totally ordered and an event's position never changes, and
// because the server assigns $all order when the write commits, a reader of
// $all never sees a later event before an earlier one. Stored events cannot
// be altered through the client.
//
// Idempotency. Every event is written with its caller-generated id as the
// ESDB event id, and Append recognises a retried append explicitly: when the
// stream is not at the expected version (or the server answers wrong expected
// version), and on every Any append, Append looks for the proposed ids among
// the stream's last len(events)+100 events; when they are all there, in order
// and with the same content (eventstore.SameContent), it returns the original
// result without writing, and when any of them is there otherwise it fails
// with eventstore.ErrIdempotencyMismatch. The caveats:
//
//   - ESDB has no index by event id, so ids are looked for only in the target
//     stream and only in its last len(events)+100 events. Unlike pgstore, ids
//     already stored in another stream are not refused (the append is
//     written), and a retry arriving after more than 100 later events of the
//     same stream is a concurrency conflict for NoStream/Exact and a second
//     write for Any.
//   - ESDB's own deduplication compares event ids only, never content, and
//     only for a write at the same expected revision. Append does not rely on
//     it, but two appends with the same ids racing between Append's read and
//     its write can be settled by the server alone. When the server's answer
//     does not look like a plain write (another revision, or no position)
//     Append reads the stored last event back and compares it with the
//     proposal; a deduplicated write that the server reports like a plain
//     one is taken as is.
//
// Reading $all. One merchant's feed is filtered on the server. The client's
// ReadAll (kurrentdb v1.1.0) cannot filter (its request always carries
// NoFilter), so ReadAll with a merchant opens a $all subscription
// (SubscribeToAll) from the reader's position with a stream-name filter, the
// regex ^[a-z][a-z0-9_]*-<merchant>\. (the names eventstore.StreamName builds
// for that merchant, hex digits in either case since merchant ids compare as
// UUIDs as in pgstore), takes events until it has limit of them or the server
// reports that the subscription caught up with the end of $all, and closes the
// subscription. Only the merchant's events cross the network, and a merchant
// with no event at all still gets its (empty) answer at CaughtUp.
//
// The CaughtUp message exists from EventStoreDB 23.10 on (and in every
// KurrentDB); an older server never sends it, and a merchant's feed then
// fails with an error saying the server did not report caught-up: after 30
// seconds without any message from the server, after 5 minutes in all, or at
// ctx's deadline if that comes first. The unfiltered feed (every merchant)
// works with any version: it reads $all in batches and keeps every event that
// parses as one of ours, which excludes system ($-prefixed) and foreign
// events; the Store remembers how far a read that reached the end of $all
// scanned, so that a follower polling at the head does not rescan, every
// time, the system events ($stats, projections' links) written since the last
// event of ours. Reading $all, by either way, needs a user allowed to read
// $all (an admin in secure mode).
//
// Limits. As in pgstore, a read limit of 0 or less, or above 10000, means
// 10000 events.
//
// Thread safety. A *Store is safe for concurrent use by many goroutines; the
// underlying client multiplexes calls over one gRPC connection. Close waits
// for calls in flight and makes later calls fail with ErrClosed.
package esdbstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"pos/eventstore"
)

// ErrClosed is returned by every method of a Store after Close.
var ErrClosed = errors.New("esdbstore: store is closed")

// Store is an eventstore.Store on EventStoreDB / KurrentDB. Create it with
// Open. It is safe for concurrent use.
type Store struct {
	client *kurrentdb.Client

	// mu is held shared by every call in flight and exclusively by Close:
	// a call racing the client's Close can panic inside the client (a send
	// on its closed channel).
	mu     sync.RWMutex
	closed bool

	// scanned remembers, per starting point, how far an unfiltered ReadAll
	// that reached the end of $all scanned, so that a follower polling at
	// the head does not rescan the system events written since the last
	// event of ours each time. See scannedTo.
	scanMu  sync.Mutex
	scanned map[eventstore.Position]eventstore.Position
}

var _ eventstore.Store = (*Store)(nil)

// AppendsCommit implements eventstore.SelfCommitting: EventStoreDB commits
// each append as it acknowledges it.
func (*Store) AppendsCommit() bool { return true }

// Open connects to the server named by a connection string such as
// "esdb://127.0.0.1:2113?tls=false" or "kurrentdb://admin:changeit@host:2113",
// parsed by the client's own parser (kurrentdb.ParseConnectionString, so every
// setting it knows is accepted), and checks that $all can be read. It returns
// only when the server answered, or with ctx's error.
//
// The client discovers the node once, with its own retry settings
// (maxDiscoverAttempts, discoveryInterval, gossipTimeout in the connection
// string); a failed discovery leaves it unusable, so Open fails rather than
// return a store that can never work. The client's warnings and errors go to
// the standard log package; its info and debug messages are dropped.
func Open(ctx context.Context, connString string) (*Store, error) {
	cfg, err := kurrentdb.ParseConnectionString(connString)
	if err != nil {
		// A *url.Error repeats the connection string, password included.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("esdbstore: invalid connection string: %w", err)
	}
	cfg.Logger = warningsOnly(cfg.Logger)
	client, err := kurrentdb.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("esdbstore: %w", err)
	}
	// The client's first call blocks in node discovery without watching the
	// context, so probe in a goroutine and give up on ctx.
	probed := make(chan error, 1)
	go func() { probed <- probe(ctx, client) }()
	select {
	case err := <-probed:
		if err != nil {
			client.Close()
			return nil, fmt.Errorf("esdbstore: connect: %w", err)
		}
		return &Store{client: client}, nil
	case <-ctx.Done():
		// Close only once the probe is done: a call racing the client's
		// Close can panic inside the client.
		go func() {
			<-probed
			client.Close()
		}()
		return nil, fmt.Errorf("esdbstore: connect: %w", ctx.Err())
	}
}

// warningsOnly passes the client's warnings and errors to log, and drops its
// info and debug chatter (a line per discovery attempt, for example).
func warningsOnly(log kurrentdb.LoggingFunc) kurrentdb.LoggingFunc {
	if log == nil {
		return nil
	}
	return func(level kurrentdb.LogLevel, format string, args ...any) {
		if level == kurrentdb.LogWarn || level == kurrentdb.LogError {
			log(level, format, args...)
		}
	}
}

// probe reads the last event of $all, which needs a working connection and
// the right to read $all.
func probe(ctx context.Context, client *kurrentdb.Client) error {
	rs, err := client.ReadAll(ctx, kurrentdb.ReadAllOptions{Direction: kurrentdb.Backwards, From: kurrentdb.End{}}, 1)
	if err != nil {
		return err
	}
	defer rs.Close()
	for {
		if _, err := recv(rs); err != nil {
			if isEOF(err) {
				return nil
			}
			return err
		}
	}
}

// Close waits for calls in flight, then closes the connection. Later calls
// fail with ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.client.Close()
}

// enter marks a call in flight; the caller must call s.mu.RUnlock when done.
// Only exported methods call it, never one another, so that a Close waiting
// for the lock cannot deadlock a nested read lock.
func (s *Store) enter() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Append implements eventstore.Store.
//
// It validates with eventstore.Prepare, reads the stream's head to chain the
// new events' hashes to it, and writes them with the expected revision the
// head implies: NoStream as kurrentdb.NoStream, Exact(v) as revision v-1, and
// Any as the exact revision just read (so that the chain stays right; a
// conflicting writer makes Append read again, at most maxAnyAttempts times).
// A stream that is not where the caller expected, or a wrong-expected-version
// answer, is first checked for a retry of this same append (see the package
// comment); otherwise it is a *eventstore.ConcurrencyError.
//
// ESDB also bounds the size of one append (1 MiB by default,
// MaxAppendSize); a larger append fails with the server's error, not
// ErrInvalidAppend.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	p, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := s.enter(); err != nil {
		return eventstore.AppendResult{}, err
	}
	defer s.mu.RUnlock()
	return s.append(ctx, p)
}

// ReadStream implements eventstore.Store: events with version >= from (0 and
// 1 both mean the first), oldest first. A missing stream, or a name Append
// would refuse, reads as empty. An event in the stream that this package did
// not write is an error.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	if eventstore.ValidateStreamName(stream) != nil {
		return nil, nil
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	var start kurrentdb.StreamPosition = kurrentdb.Start{}
	if from > 1 {
		start = kurrentdb.Revision(from - 1)
	}
	return s.readStream(ctx, stream, kurrentdb.Forwards, start, clampLimit(limit))
}

// ReadStreamBackward implements eventstore.Store: events with version <=
// from (0 meaning the last), newest first. A missing stream reads as empty.
func (s *Store) ReadStreamBackward(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.RecordedEvent, error) {
	if eventstore.ValidateStreamName(stream) != nil {
		return nil, nil
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	limit = clampLimit(limit)
	if from == 0 {
		return s.readStream(ctx, stream, kurrentdb.Backwards, kurrentdb.End{}, limit)
	}
	events, err := s.readStream(ctx, stream, kurrentdb.Backwards, kurrentdb.Revision(from-1), limit)
	if err != nil || (len(events) > 0 && events[0].Version == from) {
		return events, err
	}
	// The server reads the revisions [from-limit, from-1] that exist, so a
	// from past the stream's end returns only part of what is asked (or
	// nothing). The last event is then below from: read from the end,
	// without what was appended between the two reads above from.
	events, err = s.readStream(ctx, stream, kurrentdb.Backwards, kurrentdb.End{}, limit)
	return slices.DeleteFunc(events, func(e eventstore.RecordedEvent) bool { return e.Version > from }), err
}

// ReadAll implements eventstore.Store: up to limit events strictly after
// position after, in $all order, narrowed by filter. One merchant's feed is
// filtered on the server through a $all subscription read up to CaughtUp,
// which needs EventStoreDB 23.10 or later; the unfiltered feed is read with
// ReadAll and filtered in this process (see the package comment). Either way
// the call returns fewer than limit events only at the end of $all. Events
// that do not parse as written by this package (system and foreign events)
// are skipped; a merchant id that is not a UUID is eventstore.ErrInvalidFilter.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, filter eventstore.Filter, limit int) ([]eventstore.RecordedEvent, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return s.readAll(ctx, after, filter, clampLimit(limit))
}

// Settle implements eventstore.Store. EventStoreDB orders $all at commit, so
// a committed event is readable at once: there is nothing to wait for.
func (s *Store) Settle(ctx context.Context) error { return ctx.Err() }
