package commands

import (
	"hash/fnv"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/google/uuid"

	"pos/eventstore"
)

// DefaultSnapshots is the number of aggregates a Snapshots keeps when
// NewSnapshots is given 0: the stock ledgers in use and the sales of the
// last minute or so at 1,000 commands/s.
const DefaultSnapshots = 16384

// Snapshots keeps recently used aggregates in memory, so that loading a long
// stream (a popular SKU's ledger gains events with every sale) reads only
// the events appended since, not the whole history, and, with
// Deps.TrustSnapshots, a sale's next command reads nothing at all.
//
// A snapshot is a hint: it records the id of the last event it includes,
// and a load re-reads that event and uses the snapshot only when the store
// still has it at that version. A snapshot taken inside a transaction that
// later rolled back, or one overtaken in any other way, is thus detected
// and the stream loaded from the start. With Deps.TrustSnapshots a command
// skips that read and lets its append's expected version do the proving. Aggregates are cloned
// in and out, so callers never share state. Safe for concurrent use.
type Snapshots struct {
	cache *lru.Cache[string, snapshot]
}

type snapshot struct {
	agg     any // the kind's aggregate type; a private clone
	version uint64
	lastID  uuid.UUID
	pos     eventstore.Position
}

// NewSnapshots returns a cache of up to size aggregates (0 means
// DefaultSnapshots).
func NewSnapshots(size int) *Snapshots {
	if size <= 0 {
		size = DefaultSnapshots
	}
	c, err := lru.New[string, snapshot](size)
	if err != nil {
		panic(err) // only for a size ≤ 0, excluded above
	}
	return &Snapshots{cache: c}
}

func (s *Snapshots) get(stream string) (snapshot, bool) {
	if s == nil {
		return snapshot{}, false
	}
	return s.cache.Get(stream)
}

func (s *Snapshots) remove(stream string) {
	if s != nil {
		s.cache.Remove(stream)
	}
}

func (s *Snapshots) put(stream string, snap snapshot) {
	if s == nil || snap.version == 0 {
		return
	}
	if cur, ok := s.cache.Peek(stream); ok && cur.version > snap.version && cur.agg != snap.agg {
		return // keep the newer one
	}
	s.cache.Add(stream, snap)
}

// StreamLocks serialize, within one process, the load–decide–append cycles
// of the kinds that ask for it (stock ledgers): commands on a popular SKU's
// ledger then queue here instead of racing to append and deciding again
// after every lost race. Other processes still race optimistically; the
// lock only removes the conflicts this process would have had with itself.
// Streams share stripes by hash, so unrelated streams rarely wait on each
// other. Safe for concurrent use; the zero value is ready.
type StreamLocks struct {
	stripes [256]sync.Mutex
}

func (l *StreamLocks) lock(stream string) func() {
	if l == nil {
		return func() {}
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(stream))
	m := &l.stripes[h.Sum32()%uint32(len(l.stripes))]
	m.Lock()
	return m.Unlock
}
