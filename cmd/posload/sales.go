package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"

	"github.com/google/uuid"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// A sale is seven commands, each sent only after the previous one's response
// arrived: open, three items, checkout, a cash payment, complete. Every id is
// chosen by the client (transaction and line ids), so every request of a sale
// is known before it starts.
const (
	stepOpen = iota
	stepItem1
	stepItem2
	stepItem3
	stepCheckout
	stepPay
	stepComplete
	stepsPerSale
)

// saleHeader carries the sale a request belongs to, from the Targeter to the
// round tripper that sees its response.
const saleHeader = "X-Posload-Sale"

// item is a catalogue entry; prices in minor units of the merchant's
// currency (the default settings: IDR, tax-exclusive).
type item struct {
	sku, name string
	price     int64
	taxBps    int64
}

var catalogue = []item{
	{"COF-FW-L", "Flat white, oat, large", 48_000, 1100},
	{"COF-AM-M", "Americano, medium", 32_000, 1100},
	{"TEA-JAS-M", "Jasmine tea, medium", 27_000, 1100},
	{"BAK-CRO", "Butter croissant", 35_000, 1100},
	{"BAK-PAN", "Pain au chocolat", 38_000, 1100},
	{"SNK-COOK", "Cookie, double chocolate", 22_000, 1100},
	{"BTL-WTR", "Mineral water 600 ml", 8_000, 0},
	{"SND-CHK", "Chicken sandwich", 55_000, 1100},
}

type line struct {
	id  uuid.UUID
	it  item
	qty int64
}

type sale struct {
	id     uint64
	auth   string // "Bearer <token>"
	tx     uuid.UUID
	branch uuid.UUID
	lines  [3]line
	pay    int64 // a round cash amount at or above the grand total
	next   int   // the step to send next
}

// cashFor returns a round amount (multiple of 50,000) that covers the lines
// with tax: subtotal plus each line's tax rounded up, plus one unit per line
// for any rounding the server does.
func cashFor(lines [3]line) int64 {
	var total int64
	for _, l := range lines {
		net := l.qty * l.it.price
		total += net + (net*l.it.taxBps+9_999)/10_000 + 1
	}
	const note = 50_000
	return (total/note + 1) * note
}

// driver hands vegeta the next request to send: a sale's next step when one
// is ready (its previous response arrived), otherwise the first step of a new
// sale. Its round tripper makes steps ready when their predecessor's response
// has been read. It is safe for concurrent use.
type driver struct {
	base     string
	keys     bool
	tokens   []string      // one per merchant
	branches [][]uuid.UUID // per merchant
	items    []item        // what the sales sell: the catalogue, or its first -skus entries

	mu       sync.Mutex
	rng      *rand.Rand
	ready    []*sale
	inflight map[uint64]*sale
	lastID   uint64
	started  uint64
	finished uint64 // sales whose complete step succeeded
	dropped  uint64 // sales abandoned after a failed step
}

func newDriver(base string, keys bool, tokens []string, branchesPerMerchant int, seed uint64) *driver {
	d := &driver{
		base:     base,
		keys:     keys,
		tokens:   tokens,
		items:    catalogue,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		inflight: make(map[uint64]*sale),
	}
	for range tokens {
		bs := make([]uuid.UUID, branchesPerMerchant)
		for i := range bs {
			bs[i] = uuid.Must(uuid.NewV7())
		}
		d.branches = append(d.branches, bs)
	}
	return d
}

// sellOnly makes the sales sell only the first n catalogue SKUs (n within
// 1..len(catalogue)); 0 keeps the whole catalogue. With n = 1 every line of
// every sale is the same SKU: one hot stock ledger per branch.
func (d *driver) sellOnly(n int) {
	if n > 0 {
		d.items = catalogue[:n]
	}
}

// newSaleLocked builds a sale for a random merchant, branch and basket.
func (d *driver) newSaleLocked() *sale {
	d.lastID++
	d.started++
	m := d.rng.IntN(len(d.tokens))
	s := &sale{
		id:     d.lastID,
		auth:   "Bearer " + d.tokens[m],
		tx:     uuid.Must(uuid.NewV7()),
		branch: d.branches[m][d.rng.IntN(len(d.branches[m]))],
	}
	for i := range s.lines {
		s.lines[i] = line{id: uuid.Must(uuid.NewV7()), it: d.items[d.rng.IntN(len(d.items))], qty: 1 + d.rng.Int64N(3)}
	}
	s.pay = cashFor(s.lines)
	return s
}

// Targeter is the vegeta.Targeter: ready continuations first, in the order
// they became ready, else a new sale.
func (d *driver) Targeter() vegeta.Targeter {
	return func(t *vegeta.Target) error {
		d.mu.Lock()
		var s *sale
		if len(d.ready) > 0 {
			s = d.ready[0]
			d.ready[0] = nil
			d.ready = d.ready[1:]
		} else {
			s = d.newSaleLocked()
		}
		d.inflight[s.id] = s
		d.mu.Unlock()
		return d.fill(t, s)
	}
}

// fill writes sale s's next step into t. Only the goroutine holding s (it is
// in flight) touches it, so no lock is needed.
func (d *driver) fill(t *vegeta.Target, s *sale) error {
	path := "/v1/transactions/" + s.tx.String()
	var body any
	switch s.next {
	case stepOpen:
		path = "/v1/transactions"
		body = map[string]string{"branch_id": s.branch.String(), "transaction_id": s.tx.String()}
	case stepItem1, stepItem2, stepItem3:
		l := s.lines[s.next-stepItem1]
		path += "/items"
		body = map[string]any{"line_id": l.id.String(), "sku": l.it.sku, "name": l.it.name, "qty": l.qty,
			"unit_price": l.it.price, "tax_rate_bps": l.it.taxBps}
	case stepCheckout:
		path += "/checkout"
		body = struct{}{}
	case stepPay:
		path += "/payments"
		body = map[string]any{"method": "CASH", "amount": s.pay}
	case stepComplete:
		path += "/complete"
		body = struct{}{}
	default:
		return fmt.Errorf("sale %d has no step %d", s.id, s.next)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	t.Method = http.MethodPost
	t.URL = d.base + path
	t.Body = b
	t.Header = http.Header{
		"Authorization": {s.auth},
		"Content-Type":  {"application/json"},
		saleHeader:      {strconv.FormatUint(s.id, 10)},
	}
	if d.keys {
		t.Header.Set("Idempotency-Key", uuid.NewString())
	}
	return nil
}

// done records the outcome of sale id's step in flight: a success makes the
// next step ready; a failure abandons the sale (it has been counted as an
// error by the caller of the attack).
func (d *driver) done(id uint64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.inflight[id]
	if s == nil {
		return
	}
	delete(d.inflight, id)
	switch {
	case !ok:
		d.dropped++
	case s.next+1 < stepsPerSale:
		s.next++
		d.ready = append(d.ready, s)
	default:
		d.finished++
	}
}

// counts returns how many sales were started, completed and abandoned.
func (d *driver) counts() (started, finished, dropped uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started, d.finished, d.dropped
}

// chainTransport wraps the attacker's transport: when a response body has
// been read to its end, the sale's next step becomes ready (or the sale is
// dropped on a transport error or a non-2xx status).
type chainTransport struct {
	next http.RoundTripper
	d    *driver
}

func (c chainTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	id, _ := strconv.ParseUint(req.Header.Get(saleHeader), 10, 64)
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		c.d.done(id, false)
		return nil, err
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	resp.Body = &watchedBody{ReadCloser: resp.Body, done: func(read bool) { c.d.done(id, ok && read) }}
	return resp, nil
}

// watchedBody reports once: read in full (io.EOF reached without error), or
// not (closed early or a read error).
type watchedBody struct {
	io.ReadCloser
	done     func(read bool)
	reported bool
}

func (b *watchedBody) report(read bool) {
	if !b.reported {
		b.reported = true
		b.done(read)
	}
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.report(true)
	case err != nil:
		b.report(false)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	b.report(false) // a no-op when the body was read to its end
	return err
}
