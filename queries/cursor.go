package queries

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// MinCursorKeyLen is the shortest accepted cursor key, in bytes.
const MinCursorKeyLen = 32

// CursorKey signs list cursors (HMAC-SHA256). Every API instance must use
// the same key, or a cursor made by one is refused by another; changing it
// invalidates the cursors clients hold (they start again from page one).
type CursorKey struct {
	key []byte
}

// NewCursorKey returns a key from secret, which must be at least
// MinCursorKeyLen bytes of random data.
func NewCursorKey(secret []byte) (CursorKey, error) {
	if len(secret) < MinCursorKeyLen {
		return CursorKey{}, fmt.Errorf("queries: a cursor key needs at least %d bytes, got %d", MinCursorKeyLen, len(secret))
	}
	return CursorKey{key: append([]byte(nil), secret...)}, nil
}

// Cursor format, version 1, base64url without padding:
//
//	version (1) | last opened_at, Unix µs (8) | last transaction id (16) | MAC (32)
//
// MAC is HMAC-SHA256 under the key of a purpose label, the merchant, the
// filter's canonical form and the bytes before it. The merchant and filter
// are bound by the MAC rather than carried, so a cursor reveals neither, and
// one used by another merchant or with another filter fails verification
// just as an altered one does.
const (
	cursorVersion = 1
	cursorLen     = 1 + 8 + 16 + sha256.Size
	cursorPurpose = "pos/queries/transactions-cursor"
)

// keyset is the last row of a page: where the next one starts.
type keyset struct {
	openedAt time.Time
	id       uuid.UUID
}

func (k CursorKey) mac(merchant uuid.UUID, f TransactionFilter, payload []byte) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte(cursorPurpose))
	m.Write([]byte{0})
	m.Write(merchant[:])
	m.Write(f.canonical())
	m.Write(payload)
	return m.Sum(nil)
}

// cursorEncoding is the text of every cursor: unpadded base64url, decoded
// strictly: the last character's bits that carry no data must be zero,
// where lenient decoding would take an altered cursor for the same bytes,
// which the MAC then accepts. (Like every Go base64 decoder it skips CR and
// LF, which alter no byte.)
var cursorEncoding = base64.RawURLEncoding.Strict()

func (k CursorKey) encode(merchant uuid.UUID, f TransactionFilter, last keyset) string {
	b := make([]byte, 0, cursorLen)
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(last.openedAt.UnixMicro()))
	b = append(b, last.id[:]...)
	b = append(b, k.mac(merchant, f, b)...)
	return cursorEncoding.EncodeToString(b)
}

func (k CursorKey) decode(merchant uuid.UUID, f TransactionFilter, cursor string) (keyset, error) {
	b, err := cursorEncoding.DecodeString(cursor)
	if err != nil || len(b) != cursorLen || b[0] != cursorVersion {
		return keyset{}, ErrBadCursor
	}
	payload, sum := b[:cursorLen-sha256.Size], b[cursorLen-sha256.Size:]
	if !hmac.Equal(sum, k.mac(merchant, f, payload)) {
		return keyset{}, ErrBadCursor
	}
	var last keyset
	last.openedAt = time.UnixMicro(int64(binary.BigEndian.Uint64(payload[1:9]))).UTC()
	copy(last.id[:], payload[9:25])
	return last, nil
}

// canonical is an unambiguous encoding of the filter (fixed-size fields,
// presence flags, a length-prefixed status).
func (f TransactionFilter) canonical() []byte {
	b := make([]byte, 0, 64)
	if f.BranchID != nil {
		b = append(b, 1)
		b = append(b, f.BranchID[:]...)
	} else {
		b = append(b, 0)
	}
	b = append(b, byte(len(f.Status)))
	b = append(b, f.Status...)
	for _, t := range []time.Time{f.From, f.To} {
		if t.IsZero() {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.BigEndian.AppendUint64(b, uint64(t.UnixMicro()))
	}
	return b
}
