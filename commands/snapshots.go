package commands

import (
	"hash/fnv"
	"strings"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/google/uuid"

	"pos/eventstore"
)

// DefaultSnapshots is the number of aggregates of each stream category a
// Snapshots keeps when NewSnapshots is given 0: the stock ledgers in use,
// and the sales of the last minute or so at 1,000 commands/s.
const DefaultSnapshots = 16384

// Snapshots keeps recently used aggregates in memory, so that loading a long
// stream (a popular SKU's ledger gains events with every sale) reads only
// the events appended since, not the whole history, and, with
// Deps.TrustSnapshots, a sale's next command reads nothing at all. Each
// stream category has its own least-recently-used set, so that a busy hour
// of sales never evicts the ledgers, which are long to rebuild.
//
// A snapshot holds only committed events: the executor keeps what it loaded
// or appended through eventstore.AfterCommit. Loaded without trust, a
// snapshot is a hint: it records the id of the last event it includes, and
// a load re-reads that event and uses the snapshot only when the store
// still has it at that version. With Deps.TrustSnapshots a command skips
// that read and lets its append's expected version do the proving.
// Aggregates are cloned in and out (but for kinds used in place, see
// kind.serialize), so callers never share state. Safe for concurrent use.
type Snapshots struct {
	size   int
	caches sync.Map // stream category -> *lru.Cache[string, snapshot]
}

type snapshot struct {
	agg     any // the kind's aggregate type; a private clone
	version uint64
	lastID  uuid.UUID
	pos     eventstore.Position
}

// NewSnapshots returns a cache of up to size aggregates per stream category
// (0 means DefaultSnapshots).
func NewSnapshots(size int) *Snapshots {
	if size <= 0 {
		size = DefaultSnapshots
	}
	return &Snapshots{size: size}
}

// cache returns the set of stream's category.
func (s *Snapshots) cache(stream string) *lru.Cache[string, snapshot] {
	category, _, _ := strings.Cut(stream, "-")
	if c, ok := s.caches.Load(category); ok {
		return c.(*lru.Cache[string, snapshot])
	}
	c, err := lru.New[string, snapshot](s.size)
	if err != nil {
		panic(err) // only for a size <= 0, excluded by NewSnapshots
	}
	actual, _ := s.caches.LoadOrStore(category, c)
	return actual.(*lru.Cache[string, snapshot])
}

func (s *Snapshots) get(stream string) (snapshot, bool) {
	if s == nil {
		return snapshot{}, false
	}
	return s.cache(stream).Get(stream)
}

func (s *Snapshots) remove(stream string) {
	if s != nil {
		s.cache(stream).Remove(stream)
	}
}

func (s *Snapshots) put(stream string, snap snapshot) {
	if s == nil || snap.version == 0 {
		return
	}
	c := s.cache(stream)
	if cur, ok := c.Peek(stream); ok && cur.version > snap.version && cur.agg != snap.agg {
		return // keep the newer one
	}
	c.Add(stream, snap)
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
