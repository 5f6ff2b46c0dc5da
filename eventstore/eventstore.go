// Package eventstore is the one port through which command handlers, the relay,
// projectors and audit reach the record of truth: an append-only log of events,
// grouped in streams (one per aggregate instance) and totally ordered in a global
// feed.
//
// Two backends implement Store: eventstore/pgstore (PostgreSQL, the local
// default) and eventstore/esdbstore (EventStoreDB / KurrentDB). Both pass the
// contract suite in eventstore/storetest, which is what "the same semantics"
// means here.
//
// Every event carries a caller-generated id (UUIDv7). Appends are idempotent on
// those ids: retrying an append whose outcome is unknown (a timeout, a dropped
// connection) with the same ids and content succeeds and writes nothing twice.
// Each event is also chained to the previous event of its stream by a SHA-256
// hash (see Hash), so that any later change to stored history is detectable by
// Verify.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Limits enforced by every backend before anything is written.
const (
	// MaxStreamNameLen is the longest accepted stream name, in bytes.
	MaxStreamNameLen = 200
	// MaxEventTypeLen is the longest accepted event type, in bytes.
	MaxEventTypeLen = 100
	// MaxEventDataLen is the largest accepted event payload (data), in bytes.
	MaxEventDataLen = 256 << 10
	// MaxEventsPerAppend bounds one append so that a single call stays one
	// short transaction.
	MaxEventsPerAppend = 1000
	// MaxReadLimit is the most events one read returns; a limit of 0 or
	// more than this means MaxReadLimit.
	MaxReadLimit = 10_000
)

// Sentinel errors. Backends wrap their native errors into these so that
// callers branch with errors.Is and never on backend types.
var (
	// ErrConcurrency reports that the stream was not at the expected version.
	// The API maps it to 409 concurrency_conflict (or 412 with If-Match).
	ErrConcurrency = errors.New("eventstore: wrong expected version")
	// ErrIdempotencyMismatch reports an append that reuses event ids already
	// stored with different content (or in another stream or order).
	ErrIdempotencyMismatch = errors.New("eventstore: event id reused with different content")
	// ErrInvalidAppend reports bad input to Append; nothing was written.
	ErrInvalidAppend = errors.New("eventstore: invalid append")
	// ErrInvalidPosition reports a position string that does not parse.
	ErrInvalidPosition = errors.New("eventstore: invalid position")
	// ErrStaleTransaction reports an append inside a caller's transaction
	// that can never succeed in that transaction (the stream moved on in a
	// newer one). It unwraps to ErrConcurrency too: roll back and retry the
	// whole unit of work in a new transaction, not just the append.
	ErrStaleTransaction = fmt.Errorf("%w: retry in a new transaction", ErrConcurrency)
	// ErrInvalidFilter reports a feed filter that cannot match any event
	// (a merchant id that is not a UUID).
	ErrInvalidFilter = errors.New("eventstore: invalid filter")
)

// InvalidAppendError says which input was refused and why. It unwraps to
// ErrInvalidAppend.
type InvalidAppendError struct {
	Field  string
	Reason string
}

func (e *InvalidAppendError) Error() string {
	return fmt.Sprintf("eventstore: invalid append: %s: %s", e.Field, e.Reason)
}

// Unwrap lets errors.Is(err, ErrInvalidAppend) match.
func (e *InvalidAppendError) Unwrap() error { return ErrInvalidAppend }

// ConcurrencyError carries the versions of a failed optimistic check. It
// unwraps to ErrConcurrency.
type ConcurrencyError struct {
	Stream   string
	Expected ExpectedVersion
	// Actual is the stream's version when the conflict was seen, when the
	// backend knows it; 0 for a stream that does not exist.
	Actual uint64
}

func (e *ConcurrencyError) Error() string {
	return fmt.Sprintf("eventstore: stream %q: expected %s, stream is at %d", e.Stream, e.Expected, e.Actual)
}

// Unwrap lets errors.Is(err, ErrConcurrency) match.
func (e *ConcurrencyError) Unwrap() error { return ErrConcurrency }

// ExpectedVersion is the optimistic-concurrency precondition of an append:
// Any, NoStream, or Exact(v). Versions start at 1 for a stream's first event.
type ExpectedVersion struct {
	kind    expectKind
	version uint64
}

type expectKind uint8

const (
	expectAny expectKind = iota + 1
	expectNoStream
	expectExact
)

var (
	// Any appends whatever the stream's current version.
	Any = ExpectedVersion{kind: expectAny}
	// NoStream appends only if the stream has no event yet.
	NoStream = ExpectedVersion{kind: expectNoStream}
)

// Exact appends only if the stream's last event has version v. Exact(0) is the
// same as NoStream.
func Exact(v uint64) ExpectedVersion {
	if v == 0 {
		return NoStream
	}
	return ExpectedVersion{kind: expectExact, version: v}
}

// IsAny reports whether e is Any.
func (e ExpectedVersion) IsAny() bool { return e.kind == expectAny }

// IsNoStream reports whether e is NoStream (or Exact(0)).
func (e ExpectedVersion) IsNoStream() bool { return e.kind == expectNoStream }

// Version returns the exact version expected and true, or 0 and false for Any.
// NoStream returns 0 and true.
func (e ExpectedVersion) Version() (uint64, bool) {
	switch e.kind {
	case expectExact:
		return e.version, true
	case expectNoStream:
		return 0, true
	}
	return 0, false
}

// Valid reports whether e is one of the three kinds. The zero ExpectedVersion
// is not valid: callers must say what they expect.
func (e ExpectedVersion) Valid() bool {
	return e.kind == expectAny || e.kind == expectNoStream || (e.kind == expectExact && e.version > 0)
}

func (e ExpectedVersion) String() string {
	switch e.kind {
	case expectAny:
		return "any"
	case expectNoStream:
		return "no stream"
	case expectExact:
		return strconv.FormatUint(e.version, 10)
	}
	return "invalid"
}

// Position is a point in the global feed. Positions are totally ordered
// (Major, then Minor) and stable: an event's position never changes and no
// event is ever inserted before a position that a reader has passed.
//
// PostgreSQL: Major is the appending transaction's id, Minor the event's
// sequence number. EventStoreDB: Major is the commit position, Minor the
// prepare position. Clients treat the String form as opaque.
type Position struct {
	Major uint64
	Minor uint64
}

// Start is the position before the first event.
var Start = Position{}

// Less reports whether p comes before q in the global order.
func (p Position) Less(q Position) bool {
	if p.Major != q.Major {
		return p.Major < q.Major
	}
	return p.Minor < q.Minor
}

// IsZero reports whether p is Start.
func (p Position) IsZero() bool { return p == Start }

// String encodes p as "major.minor", the form clients echo back.
func (p Position) String() string {
	return strconv.FormatUint(p.Major, 10) + "." + strconv.FormatUint(p.Minor, 10)
}

// ParsePosition decodes String's form. The empty string is Start.
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Start, nil
	}
	major, minor, ok := strings.Cut(s, ".")
	if !ok {
		return Position{}, fmt.Errorf("%w: %q", ErrInvalidPosition, s)
	}
	// Both parts stay below 2^63: backends store them as signed 64-bit.
	a, err1 := strconv.ParseUint(major, 10, 63)
	b, err2 := strconv.ParseUint(minor, 10, 63)
	if err1 != nil || err2 != nil {
		return Position{}, fmt.Errorf("%w: %q", ErrInvalidPosition, s)
	}
	return Position{Major: a, Minor: b}, nil
}

// Metadata travels with every event. MerchantID is mandatory: it scopes the
// event to one merchant's feed. Trace context follows W3C Trace Context.
type Metadata struct {
	MerchantID    string `json:"merchant_id"`
	Actor         string `json:"actor,omitempty"`
	Role          string `json:"role,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	CausationID   string `json:"causation_id,omitempty"`
	TraceParent   string `json:"traceparent,omitempty"`
	TraceState    string `json:"tracestate,omitempty"`
}

// TraceID returns the trace id part of TraceParent, or "".
func (m Metadata) TraceID() string {
	// traceparent: version-traceid-spanid-flags
	parts := strings.Split(m.TraceParent, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[1]
}

// EventData is an event as a caller proposes it to Append.
type EventData struct {
	// ID is generated by the caller (UUIDv7) and identifies the event forever;
	// reusing it is how a retried append is recognised.
	ID   uuid.UUID
	Type string
	// SchemaVersion is the version of Data's shape, at least 1.
	SchemaVersion int
	// Data is the event's JSON payload.
	Data     json.RawMessage
	Metadata Metadata
}

// RecordedEvent is an event as stored: EventData plus what the store assigned.
type RecordedEvent struct {
	ID            uuid.UUID
	Stream        string
	Version       uint64
	Position      Position
	Type          string
	SchemaVersion int
	Data          json.RawMessage
	Metadata      Metadata
	RecordedAt    time.Time
	// Hash is SHA-256 over the event's canonical encoding and PrevHash; see Hash.
	Hash []byte
	// PrevHash is the Hash of the previous event in the stream; empty for
	// version 1.
	PrevHash []byte
}

// AppendResult tells where an append landed.
type AppendResult struct {
	// Version is the stream's version after the append (its last event's).
	Version uint64
	// Position is the global position of the last event appended.
	Position Position
}

// Filter narrows the global feed. The zero Filter is every merchant.
type Filter struct {
	// MerchantID, when set, keeps only that merchant's events.
	MerchantID string
}

// Store is the event store port.
//
// Implementations are safe for concurrent use. Reads return events as stored
// (no upcasting); wrap a Store with Upcasting to read current schema versions.
type Store interface {
	// Append writes events atomically at the end of stream if the stream is at
	// expected, and returns the new version and the last event's position.
	// It fails with ErrConcurrency (as *ConcurrencyError) when the stream is
	// elsewhere, with ErrIdempotencyMismatch when an event id is already
	// stored with other content, and with ErrInvalidAppend (as
	// *InvalidAppendError) on bad input, in which case nothing is written.
	// Appending events whose ids are all already stored, in the same stream,
	// order and content, returns the original result and writes nothing.
	Append(ctx context.Context, stream string, expected ExpectedVersion, events ...EventData) (AppendResult, error)

	// ReadStream returns up to limit events of stream with version >= from,
	// in version order. A missing stream reads as empty.
	ReadStream(ctx context.Context, stream string, from uint64, limit int) ([]RecordedEvent, error)

	// ReadStreamBackward returns up to limit events of stream with version <=
	// from (0 meaning from the end), newest first.
	ReadStreamBackward(ctx context.Context, stream string, from uint64, limit int) ([]RecordedEvent, error)

	// ReadAll returns up to limit events of the global feed strictly after
	// position after, in global order, narrowed by filter (ErrInvalidFilter
	// for a merchant id that is not a UUID). It never returns an
	// event and later skip one before it: an event whose append has not
	// committed yet holds back every later position (see pgstore).
	ReadAll(ctx context.Context, after Position, filter Filter, limit int) ([]RecordedEvent, error)

	// Settle returns once every append that committed before the call is
	// visible to ReadAll. A feed may trail commits briefly (PostgreSQL holds
	// it behind transactions still running); readers that need "everything
	// so far", such as verification, settle first. Followers need not.
	Settle(ctx context.Context) error
}

// TxBound is a Store view bound to a caller's transaction that has not
// committed yet (pgstore.TxStore): what it appends becomes true only when
// the owner of the transaction commits it. The owner calls Committed once
// the COMMIT has succeeded, and never otherwise (a rolled-back view is
// dropped). Like its transaction, a TxBound is not safe for concurrent use.
type TxBound interface {
	Store
	// AfterCommit runs fn when Committed is called (never if the
	// transaction does not commit).
	AfterCommit(fn func())
	// Committed runs the AfterCommit functions, in order.
	Committed()
}

// SelfCommitting is implemented by a store that can say whether its
// appends commit on their own (pgstore.Store and esdbstore.Store do;
// pgstore.TxStore, bound to a caller's transaction, does not).
type SelfCommitting interface {
	AppendsCommit() bool
}

// AfterCommit runs fn once what s has read and appended so far is
// committed: at once for a store whose appends commit on their own
// (SelfCommitting), at the commit for a TxBound one, also when wrapped in
// Upcasting. For any other store it never runs fn: caches of aggregate
// state use it to never hold events that may yet roll back, and a cache
// that misses is slower, not wrong.
func AfterCommit(s Store, fn func()) {
	switch v := s.(type) {
	case TxBound:
		v.AfterCommit(fn)
	case Upcasting:
		AfterCommit(v.Store, fn)
	case SelfCommitting:
		if v.AppendsCommit() {
			fn()
		}
	}
}

// StreamName builds the stream name of one aggregate instance of one merchant:
// "<category>-<merchant>.<id>", for example
// "transaction-0193a5c0-…-….0193a5c1-…". Append accepts only names of this
// form, whose merchant is the events' MerchantID: the merchant in the name is
// what lets a backend without per-event columns (EventStoreDB) scope a
// merchant's feed on the server, and it makes another merchant's stream a
// different stream. Category is lower-case letters, digits and '_', starting
// with a letter (so never a '-' nor an EventStoreDB system prefix '$').
func StreamName(category, merchantID, id string) string {
	return category + "-" + merchantID + "." + id
}

// ParseStreamName splits a StreamName into its parts; ok is false for a name
// not built by StreamName.
func ParseStreamName(stream string) (category, merchantID, id string, ok bool) {
	category, rest, ok1 := strings.Cut(stream, "-")
	if !ok1 || !validCategory(category) || len(rest) < 37 || rest[36] != '.' {
		return "", "", "", false
	}
	if _, err := uuid.Parse(rest[:36]); err != nil {
		return "", "", "", false
	}
	return category, rest[:36], rest[37:], category != "" && len(rest) > 37
}

func validCategory(c string) bool {
	if c == "" || c[0] < 'a' || c[0] > 'z' {
		return false
	}
	for i := 0; i < len(c); i++ {
		if ch := c[i]; !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '_') {
			return false
		}
	}
	return true
}
