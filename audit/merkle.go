package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"pos/eventstore"
)

// Leaf is one stream head as an anchor commits to it.
type Leaf struct {
	Stream  string
	Version uint64
	Hash    []byte
}

// leafTag separates leaf hashes of this encoding from any other SHA-256 use
// and names its version.
const leafTag = "pos.anchor.leaf.v1"

// leafHash is SHA-256(0x00 ‖ tag ‖ stream ‖ version ‖ hash), every variable
// field length-prefixed (uint32 big-endian), so that no two leaves encode
// alike. The 0x00 prefix (0x01 for inner nodes) is RFC 6962's domain
// separation: a leaf can never be passed off as an inner node.
func leafHash(l Leaf) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	h.Write([]byte{0})
	str := func(s string) {
		binary.BigEndian.PutUint32(n[:4], uint32(len(s)))
		h.Write(n[:4])
		h.Write([]byte(s))
	}
	str(leafTag)
	str(l.Stream)
	binary.BigEndian.PutUint64(n[:], l.Version)
	h.Write(n[:])
	binary.BigEndian.PutUint32(n[:4], uint32(len(l.Hash)))
	h.Write(n[:4])
	h.Write(l.Hash)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// MerkleRoot returns the RFC 6962 Merkle tree hash of leaves, which must be
// sorted by stream name with no stream twice (SortedLeaves builds them so).
// Inner nodes are SHA-256(0x01 ‖ left ‖ right); an odd node is promoted to
// the next level unpaired, never duplicated (duplicating would let two
// different leaf lists share a root). The root of no leaves is SHA-256 of
// the empty string.
func MerkleRoot(leaves []Leaf) ([]byte, error) {
	for i := 1; i < len(leaves); i++ {
		if strings.Compare(leaves[i-1].Stream, leaves[i].Stream) >= 0 {
			return nil, fmt.Errorf("audit: merkle leaves not sorted or repeated at %q", leaves[i].Stream)
		}
	}
	if len(leaves) == 0 {
		sum := sha256.Sum256(nil)
		return sum[:], nil
	}
	level := make([][sha256.Size]byte, len(leaves))
	for i, l := range leaves {
		level[i] = leafHash(l)
	}
	var buf [1 + 2*sha256.Size]byte
	buf[0] = 1
	for len(level) > 1 {
		next := level[:0]
		for i := 0; i < len(level); i += 2 {
			if i+1 == len(level) {
				next = append(next, level[i])
				break
			}
			copy(buf[1:], level[i][:])
			copy(buf[1+sha256.Size:], level[i+1][:])
			next = append(next, sha256.Sum256(buf[:]))
		}
		level = next
	}
	return level[0][:], nil
}

// SortedLeaves turns stream heads into leaves sorted by stream name.
func SortedLeaves(heads map[string]eventstore.Head) []Leaf {
	leaves := make([]Leaf, 0, len(heads))
	for s, h := range heads {
		leaves = append(leaves, Leaf{Stream: s, Version: h.Version, Hash: h.Hash})
	}
	slices.SortFunc(leaves, func(a, b Leaf) int { return strings.Compare(a.Stream, b.Stream) })
	return leaves
}

// encodeLeaves is the stored form of an anchor's heads: for each leaf, the
// stream name (uint16 length, bytes), the version (uint64) and the hash
// (uint8 length, bytes), big-endian.
func encodeLeaves(leaves []Leaf) []byte {
	size := 0
	for _, l := range leaves {
		size += 2 + len(l.Stream) + 8 + 1 + len(l.Hash)
	}
	out := make([]byte, 0, size)
	for _, l := range leaves {
		out = binary.BigEndian.AppendUint16(out, uint16(len(l.Stream)))
		out = append(out, l.Stream...)
		out = binary.BigEndian.AppendUint64(out, l.Version)
		out = append(out, byte(len(l.Hash)))
		out = append(out, l.Hash...)
	}
	return out
}

var errBadLeaves = errors.New("audit: malformed stored heads")

// decodeLeaves reverses encodeLeaves.
func decodeLeaves(b []byte) ([]Leaf, error) {
	var out []Leaf
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errBadLeaves
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if len(b) < n+8+1 {
			return nil, errBadLeaves
		}
		l := Leaf{Stream: string(b[:n]), Version: binary.BigEndian.Uint64(b[n:])}
		b = b[n+8:]
		hl := int(b[0])
		b = b[1:]
		if len(b) < hl {
			return nil, errBadLeaves
		}
		l.Hash = slices.Clone(b[:hl])
		b = b[hl:]
		out = append(out, l)
	}
	return out, nil
}
