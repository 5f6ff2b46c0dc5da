package eventstore

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"

	"github.com/google/uuid"
)

// hashDomain separates this encoding from any other SHA-256 use and names its
// version; a future encoding gets a new tag, and old events keep verifying.
const hashDomain = "pos.event.v1"

// Hash returns SHA-256 over the canonical encoding of one event and the hash
// of the previous event in its stream (nil for version 1).
//
// The canonical encoding is the concatenation of length-prefixed fields
// (uint32 big-endian length, then the bytes), in this order: the domain tag
// "pos.event.v1", the event id (16 bytes), the stream name, the version
// (uint64 big-endian), the type, the schema version (uint32 big-endian), the
// data exactly as stored, each metadata field (merchant_id, actor, role,
// correlation_id, causation_id, traceparent, tracestate), and prevHash.
// Length prefixes make the encoding unambiguous: no two different events
// encode to the same bytes. Metadata is hashed field by field, not as JSON, so
// a backend may store it in any JSON form (jsonb reorders keys) and still
// verify. The recorded time and the global position are not hashed: the store
// assigns them, and the chain protects content and order within a stream.
func Hash(id uuid.UUID, stream string, version uint64, eventType string, schemaVersion int, data []byte, md Metadata, prevHash []byte) []byte {
	h := sha256.New()
	var n [8]byte
	field := func(h hash.Hash, b []byte) {
		binary.BigEndian.PutUint32(n[:4], uint32(len(b)))
		h.Write(n[:4])
		h.Write(b)
	}
	str := func(h hash.Hash, s string) {
		binary.BigEndian.PutUint32(n[:4], uint32(len(s)))
		h.Write(n[:4])
		h.Write([]byte(s))
	}
	str(h, hashDomain)
	field(h, id[:])
	str(h, stream)
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], version)
	field(h, v[:])
	str(h, eventType)
	var sv [4]byte
	binary.BigEndian.PutUint32(sv[:], uint32(schemaVersion))
	field(h, sv[:])
	field(h, data)
	str(h, md.MerchantID)
	str(h, md.Actor)
	str(h, md.Role)
	str(h, md.CorrelationID)
	str(h, md.CausationID)
	str(h, md.TraceParent)
	str(h, md.TraceState)
	field(h, prevHash)
	return h.Sum(nil)
}

// HashOf recomputes a recorded event's hash from its stored fields, for
// verification. It is Hash applied to e.
func HashOf(e RecordedEvent) []byte {
	return Hash(e.ID, e.Stream, e.Version, e.Type, e.SchemaVersion, e.Data, e.Metadata, e.PrevHash)
}
