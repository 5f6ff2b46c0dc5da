package relay

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"pos/eventstore"
	"pos/projections"
)

// Message metadata keys the relay sets. The publisher's NATSMarshaler copies
// metadata to NATS headers verbatim (headers are case-sensitive).
const (
	// MsgIDKey is JetStream's deduplication header; the relay sets it to the
	// event id, so a republished event inside the stream's duplicate window
	// is acknowledged but not stored again.
	MsgIDKey = "Nats-Msg-Id"
	// TraceParentKey and TraceStateKey carry a W3C trace context: the
	// event's (Encode), or the relay's producer span for it, a child of
	// the event's (Options.Tracer). The payload keeps the event's own.
	TraceParentKey = "traceparent"
	TraceStateKey  = "tracestate"
	// MerchantKey is the event's merchant id.
	MerchantKey = "merchant_id"
	// PartitionKey is the merchant's partition, in decimal.
	PartitionKey = "partition"
)

// ErrInvalidMessage is returned by Decode for a payload that is not a
// well-formed Envelope.
var ErrInvalidMessage = errors.New("relay: invalid message")

// Envelope is the JSON payload of every message the relay publishes: a
// RecordedEvent as stored, plus PrevPosition. Hashes are lower-case hex,
// positions eventstore.Position's "major.minor" form.
type Envelope struct {
	EventID  string `json:"event_id"`
	Stream   string `json:"stream"`
	Version  uint64 `json:"version"`
	Position string `json:"position"`
	// PrevPosition is the position of the event the relay published before
	// this one in the same merchant partition ("0.0", Start, for the
	// partition's first event), or "" when the relay does not know it.
	// Consumers compare it with their checkpoint to notice a lost message,
	// even one of another stream. It is set even when the previous event
	// was never published (see Options.SkipEvent), which is the point.
	PrevPosition  string              `json:"prev_position"`
	Type          string              `json:"type"`
	SchemaVersion int                 `json:"schema_version"`
	Data          json.RawMessage     `json:"data"`
	Metadata      eventstore.Metadata `json:"metadata"`
	RecordedAt    time.Time           `json:"recorded_at"`
	Hash          string              `json:"hash"`
	PrevHash      string              `json:"prev_hash"`
}

// NewEnvelope returns e's envelope; prev is the partition's previous
// position, nil when unknown.
func NewEnvelope(e eventstore.RecordedEvent, prev *eventstore.Position) Envelope {
	env := Envelope{
		EventID:       e.ID.String(),
		Stream:        e.Stream,
		Version:       e.Version,
		Position:      e.Position.String(),
		Type:          e.Type,
		SchemaVersion: e.SchemaVersion,
		Data:          e.Data,
		Metadata:      e.Metadata,
		RecordedAt:    e.RecordedAt,
		Hash:          hex.EncodeToString(e.Hash),
		PrevHash:      hex.EncodeToString(e.PrevHash),
	}
	if prev != nil {
		env.PrevPosition = prev.String()
	}
	return env
}

// Encode returns the message the relay publishes for e: UUID and Nats-Msg-Id
// are the event id, the payload is its Envelope, and the metadata carries
// the trace context, the merchant and the partition.
func Encode(e eventstore.RecordedEvent, prev *eventstore.Position, partition int) (*message.Message, error) {
	payload, err := json.Marshal(NewEnvelope(e, prev))
	if err != nil {
		return nil, fmt.Errorf("relay: encode event %s: %w", e.ID, err)
	}
	msg := message.NewMessage(e.ID.String(), payload)
	msg.Metadata.Set(MsgIDKey, e.ID.String())
	msg.Metadata.Set(MerchantKey, merchantOf(e))
	msg.Metadata.Set(PartitionKey, fmt.Sprint(partition))
	if e.Metadata.TraceParent != "" {
		msg.Metadata.Set(TraceParentKey, e.Metadata.TraceParent)
	}
	if e.Metadata.TraceState != "" {
		msg.Metadata.Set(TraceStateKey, e.Metadata.TraceState)
	}
	return msg, nil
}

// Decode parses a message payload published by the relay into the delivery
// a projections.Runner takes. It fails with ErrInvalidMessage on anything
// that is not a complete Envelope; it never trusts the payload further than
// its shape (hashes are verified by the consumer against the store, if at
// all).
func Decode(payload []byte) (projections.Delivery, error) {
	var env Envelope
	if err := json.Unmarshal(payload, &env); err != nil {
		return projections.Delivery{}, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	bad := func(format string, args ...any) (projections.Delivery, error) {
		return projections.Delivery{}, fmt.Errorf("%w: "+format, append([]any{ErrInvalidMessage}, args...)...)
	}
	id, err := uuid.Parse(env.EventID)
	if err != nil {
		return bad("event_id %q", env.EventID)
	}
	if env.Stream == "" || env.Version == 0 || env.Type == "" || env.SchemaVersion < 1 {
		return bad("event %s: missing stream, version, type or schema_version", id)
	}
	if env.Metadata.MerchantID == "" {
		return bad("event %s: missing merchant_id", id)
	}
	if len(env.Data) == 0 {
		return bad("event %s: missing data", id)
	}
	pos, err := eventstore.ParsePosition(env.Position)
	if err != nil || pos.IsZero() {
		return bad("event %s: position %q", id, env.Position)
	}
	var prev *eventstore.Position
	if env.PrevPosition != "" {
		p, err := eventstore.ParsePosition(env.PrevPosition)
		if err != nil || !p.Less(pos) {
			return bad("event %s: prev_position %q", id, env.PrevPosition)
		}
		prev = &p
	}
	hash, err1 := hex.DecodeString(env.Hash)
	prevHash, err2 := hex.DecodeString(env.PrevHash)
	if err1 != nil || err2 != nil {
		return bad("event %s: hash", id)
	}
	if len(hash) == 0 {
		hash = nil
	}
	if len(prevHash) == 0 {
		prevHash = nil
	}
	return projections.Delivery{
		Event: eventstore.RecordedEvent{
			ID:            id,
			Stream:        env.Stream,
			Version:       env.Version,
			Position:      pos,
			Type:          env.Type,
			SchemaVersion: env.SchemaVersion,
			Data:          env.Data,
			Metadata:      env.Metadata,
			RecordedAt:    env.RecordedAt,
			Hash:          hash,
			PrevHash:      prevHash,
		},
		PrevPosition: prev,
	}, nil
}
