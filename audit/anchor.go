// Package audit proves that a merchant's history was neither altered nor cut
// short.
//
// The event store chains every event to the previous one of its stream by a
// SHA-256 hash (eventstore.Hash), and eventstore.Verify recomputes the
// chains. A chain exposes an edited or removed middle event, but a removed
// tail or a whole removed stream leaves every remaining chain intact. Signed
// anchors close that gap: periodically the Anchorer writes, for each merchant
// whose history moved, an Ed25519 signature over an RFC 6962 Merkle root of
// all the merchant's stream heads (stream, version, hash) at a feed position.
// Anchors go to an append-only table (audit_anchors) and to the log, one
// line each (msg="audit anchor"), so that an auditor can keep them outside
// the database. Auditor.Verify recomputes the chains and compares the
// current heads with each merchant's latest anchor: a stream missing, or
// shorter than anchored, or whose anchored event changed, is reported by
// stream and version.
//
// Anchors are monotone: a new anchor keeps every head of the previous one
// that the store no longer shows, so deleting events between two anchors (or
// before a restart) never makes them disappear from the next anchor.
package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"pos/eventstore"
)

// anchorTag separates the signed message of this encoding from anything
// else the key might sign, and names its version.
const anchorTag = "pos.anchor.v1"

// Anchor is a signed statement of one merchant's stream heads at a feed
// position.
type Anchor struct {
	// Seq is the ledger's sequence number, assigned on insert; not signed.
	Seq        int64
	MerchantID string
	// Position is the feed position of the merchant's last event covered.
	Position eventstore.Position
	// CreatedAt is when the anchor was made, at microsecond precision (what
	// PostgreSQL keeps).
	CreatedAt time.Time
	// Streams is the number of heads, Events the sum of their versions.
	Streams uint64
	Events  uint64
	// Root is the Merkle root of Heads (see MerkleRoot).
	Root []byte
	// Prev is SHA-256 of the merchant's previous anchor's Signature; empty
	// for the merchant's first anchor.
	Prev      []byte
	KeyID     string
	Signature []byte

	// Heads is every stream head the anchor covers. It is nil for an anchor
	// read from a log line, which carries only the root.
	Heads map[string]eventstore.Head
	// LinkBroken is set by the Ledger when an anchor between the last full
	// one and this one is missing or does not chain (rows removed behind
	// the triggers' back).
	LinkBroken bool

	// deltas is how many delta rows the Ledger applied after the last full
	// one to rebuild Heads.
	deltas int
}

// message is the signed byte string: every field but Seq, KeyID, Signature
// and Heads (which Root covers), length-prefixed in a fixed order.
func (a *Anchor) message() []byte {
	var b []byte
	field := func(p []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	field([]byte(anchorTag))
	field([]byte(a.MerchantID))
	field([]byte(a.Position.String()))
	field(binary.BigEndian.AppendUint64(nil, uint64(a.CreatedAt.UnixMicro())))
	field(binary.BigEndian.AppendUint64(nil, a.Streams))
	field(binary.BigEndian.AppendUint64(nil, a.Events))
	field(a.Root)
	field(a.Prev)
	return b
}

// sign sets KeyID and Signature with k.
func (a *Anchor) sign(k Key) {
	a.KeyID = k.Public().ID()
	a.Signature = k.sign(a.message())
}

// SignatureValid reports whether a's signature is p's over a's fields.
func (a *Anchor) SignatureValid(p PublicKey) bool {
	return a.KeyID == p.ID() && p.verify(a.message(), a.Signature)
}

// RootValid reports whether Heads hash to Root, and agree with Streams and
// Events. It is false for an anchor without heads.
func (a *Anchor) RootValid() bool {
	if a.Heads == nil {
		return false
	}
	var events uint64
	for _, h := range a.Heads {
		events += h.Version
	}
	root, err := MerkleRoot(SortedLeaves(a.Heads))
	return err == nil && string(root) == string(a.Root) &&
		uint64(len(a.Heads)) == a.Streams && events == a.Events
}

// verifies reports whether a is authentic and complete: signed by p, its
// heads hashing to its root, its chain of deltas intact.
func (a *Anchor) verifies(p PublicKey) bool {
	return a.SignatureValid(p) && !a.LinkBroken && a.RootValid()
}

// chainHash is what the next anchor's Prev must be.
func chainHash(signature []byte) []byte {
	if len(signature) == 0 {
		return nil
	}
	sum := sha256.Sum256(signature)
	return sum[:]
}

// LogMessage is the msg of the log line every anchor is written to.
const LogMessage = "audit anchor"

// LogAttrs are the attributes of an anchor's log line: every signed field,
// so that the line alone can be checked against the public key.
func (a *Anchor) LogAttrs() []any {
	return []any{
		"merchant", a.MerchantID,
		"seq", a.Seq,
		"position", a.Position.String(),
		"created_at", a.CreatedAt.UTC().Format(time.RFC3339Nano),
		"streams", a.Streams,
		"events", a.Events,
		"root", hex.EncodeToString(a.Root),
		"prev", hex.EncodeToString(a.Prev),
		"key_id", a.KeyID,
		"signature", hex.EncodeToString(a.Signature),
	}
}

// ParseLogLine reads an anchor back from one JSON log line (slog's JSON
// handler, as cmd/pos logs). ok is false for a line that is not an anchor.
func ParseLogLine(line []byte) (a Anchor, ok bool, err error) {
	var rec struct {
		Msg       string      `json:"msg"`
		Merchant  string      `json:"merchant"`
		Seq       json.Number `json:"seq"`
		Position  string      `json:"position"`
		CreatedAt time.Time   `json:"created_at"`
		Streams   json.Number `json:"streams"`
		Events    json.Number `json:"events"`
		Root      string      `json:"root"`
		Prev      string      `json:"prev"`
		KeyID     string      `json:"key_id"`
		Signature string      `json:"signature"`
	}
	if err := json.Unmarshal(line, &rec); err != nil || rec.Msg != LogMessage {
		return Anchor{}, false, nil
	}
	a = Anchor{MerchantID: rec.Merchant, CreatedAt: rec.CreatedAt.UTC(), KeyID: rec.KeyID}
	var errs []error
	num := func(n json.Number, name string) uint64 {
		v, err := strconv.ParseUint(n.String(), 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return v
	}
	bin := func(s, name string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return b
	}
	a.Seq = int64(num(rec.Seq, "seq"))
	a.Streams, a.Events = num(rec.Streams, "streams"), num(rec.Events, "events")
	a.Root, a.Prev, a.Signature = bin(rec.Root, "root"), bin(rec.Prev, "prev"), bin(rec.Signature, "signature")
	if len(a.Prev) == 0 {
		a.Prev = nil
	}
	if a.Position, err = eventstore.ParsePosition(rec.Position); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Anchor{}, true, fmt.Errorf("audit: anchor log line: %w", err)
	}
	return a, true, nil
}
