package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"

	"pos/eventstore"
	"pos/projections"
	"pos/queries"
)

// Read routes (SPEC §5): transaction lists and details and the daily sales
// report, read from the projections' read models. Every role of the
// merchant may read them, AUDITOR included. Each answers X-Position, the
// position the read models it reads reflect for the caller's merchant
// partition, and honours X-Min-Position (or ?min_position=): it waits, up
// to the consistency bound, until those read models have reached it, and
// answers 503 not_yet_consistent otherwise.

// DefaultConsistencyWait bounds the wait for X-Min-Position when Config
// does not say.
const DefaultConsistencyWait = 2 * time.Second

// consistencyPoll is how often a waiting query rereads the checkpoints.
const consistencyPoll = 10 * time.Millisecond

var errNotYetConsistent = func() *Problem {
	p := problem(http.StatusServiceUnavailable, "not_yet_consistent",
		"the read model has not reached X-Min-Position yet; retry")
	p.RetryAfter = 1
	return p
}()

// queryRoutes installs the read routes (only when a Reader is configured).
func (s *Server) queryRoutes(r chi.Router) {
	r.Get("/transactions", s.listTransactions)
	r.Get("/transactions/{id}", s.getTransaction)
	r.Get("/reports/daily-sales", s.dailySales)
	r.Get("/stock", s.listStock)
	r.Get("/stock/{sku}/movements", s.stockMovements)
}

// consistent waits until every projection in names has applied the
// caller's merchant partition up to the requested minimum position, then
// sets X-Position to the lowest of their checkpoints (read before the
// query runs, so the answer reflects at least that position).
func (s *Server) consistent(w http.ResponseWriter, r *http.Request, names ...string) error {
	raw := r.Header.Get("X-Min-Position")
	field := "X-Min-Position"
	if raw == "" {
		raw, field = r.URL.Query().Get("min_position"), "min_position"
	}
	want, err := eventstore.ParsePosition(raw)
	if err != nil {
		return invalid(field+" must be a position, as in X-Position", FieldError{Field: field, Code: "invalid"})
	}
	ctx := r.Context()
	merchant := principalOf(r).MerchantID.String()
	deadline := time.Now().Add(s.consistencyWait)
	for !want.IsZero() { // no minimum asked: every projection has reached Start
		reached := true
		for _, name := range names {
			ok, err := s.checkpoints.Reached(ctx, name, merchant, want)
			if err != nil {
				return err
			}
			reached = reached && ok
		}
		if reached {
			break
		}
		if !time.Now().Before(deadline) {
			return errNotYetConsistent
		}
		if err := sleepCtx(ctx, min(consistencyPoll, time.Until(deadline))); err != nil {
			return err
		}
	}
	pos, err := s.readPosition(ctx, merchant, names)
	if err != nil {
		return err
	}
	if pos.Less(want) {
		pos = want // every checkpoint was seen at or past it just now
	}
	w.Header().Set("X-Position", pos.String())
	return nil
}

// readPosition is the lowest checkpoint of names in merchant's partition,
// as read at most positionTTL ago: checkpoints only move forward, so an
// older reading is still a position the answer reflects at least, and a hot
// read (served from Redis) then needs no database round trip at all.
func (s *Server) readPosition(ctx context.Context, merchant string, names []string) (eventstore.Position, error) {
	partition := projections.Partition(merchant, s.partitions)
	var low eventstore.Position
	for i, name := range names {
		p, err := s.positions.get(name, partition, func() (map[int]eventstore.Position, error) {
			// Shared by every request waiting on it (singleflight): one
			// caller's going away must not fail the others.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), positionReadTimeout)
			defer cancel()
			return s.checkpoints.Positions(rctx, name)
		})
		if err != nil {
			return eventstore.Position{}, err
		}
		if i == 0 || p.Less(low) {
			low = p
		}
	}
	return low, nil
}

// positionTTL bounds how old a cached checkpoint reading may be;
// positionReadTimeout bounds a reading.
const (
	positionTTL         = 20 * time.Millisecond
	positionReadTimeout = 2 * time.Second
)

// positionCache keeps, per projection, a recent reading of every
// partition's checkpoint: one query a TTL for the whole projection, rather
// than one per partition. Safe for concurrent use; the zero value is ready.
// When a reading expires, the requests that need it meanwhile share one
// read (singleflight) rather than each query PostgreSQL.
type positionCache struct {
	mu     sync.Mutex
	seen   map[string]positionReading
	flight singleflight.Group
}

type positionReading struct {
	pos map[int]eventstore.Position // by partition; a missing one is Start
	at  time.Time
}

// get returns partition's checkpoint of name from a reading younger than
// positionTTL, or reads every partition afresh.
func (c *positionCache) get(name string, partition int, read func() (map[int]eventstore.Position, error)) (eventstore.Position, error) {
	c.mu.Lock()
	r, ok := c.seen[name]
	c.mu.Unlock()
	if ok && time.Since(r.at) < positionTTL {
		return r.pos[partition], nil
	}
	v, err, _ := c.flight.Do(name, func() (any, error) {
		at := time.Now()
		pos, err := read()
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.seen == nil {
			c.seen = map[string]positionReading{}
		}
		// A reading that started earlier but finished later must not move
		// a partition back.
		if cur, ok := c.seen[name]; ok {
			for p, old := range cur.pos {
				if pos[p].Less(old) {
					pos[p] = old
				}
			}
		}
		c.seen[name] = positionReading{pos: pos, at: at}
		return pos, nil
	})
	if err != nil {
		return eventstore.Position{}, err
	}
	return v.(map[int]eventstore.Position)[partition], nil
}

// readsOwnWrite reports a read that names a position to wait for
// (X-Min-Position, min_position): it is answered from PostgreSQL, since a
// cache can trail a commit.
func readsOwnWrite(r *http.Request) bool {
	return r.Header.Get("X-Min-Position") != "" || r.URL.Query().Get("min_position") != ""
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// branchFilter reads an optional branch_id query parameter; a token limited
// to branches may only name one of them (403). Such a token that names none
// reads its only branch, or, limited to several, must name one (400): a
// list across branches would show the others too.
func branchFilter(r *http.Request) (*uuid.UUID, error) {
	v := r.URL.Query().Get("branch_id")
	if v == "" {
		switch limited := principalOf(r).BranchIDs; len(limited) {
		case 0:
			return nil, nil
		case 1:
			id := limited[0]
			return &id, nil
		default:
			return nil, invalid("a token limited to several branches must name one in branch_id", FieldError{Field: "branch_id", Code: "required"})
		}
	}
	id, err := uuid.Parse(v)
	if err != nil || id == uuid.Nil {
		return nil, invalid("branch_id must be a UUID", FieldError{Field: "branch_id", Code: "invalid"})
	}
	if !principalOf(r).CanActOnBranch(id) {
		return nil, errForbidden
	}
	return &id, nil
}

func queryTime(r *http.Request, field string) (time.Time, error) {
	v := r.URL.Query().Get(field)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, invalid(field+" must be an RFC 3339 time", FieldError{Field: field, Code: "invalid"})
	}
	return t.UTC(), nil
}

func queryDate(r *http.Request, field string) (time.Time, error) {
	v := r.URL.Query().Get(field)
	if v == "" {
		return time.Time{}, invalid(field+" is required", FieldError{Field: field, Code: "required"})
	}
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, invalid(field+" must be a date, YYYY-MM-DD", FieldError{Field: field, Code: "invalid"})
	}
	return t, nil
}

func queryLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return queries.DefaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > queries.MaxLimit {
		return 0, invalid("limit must be an integer from 1 to 500", FieldError{Field: "limit", Code: "out_of_range"})
	}
	return n, nil
}

type transactionSummaryView struct {
	ID        string     `json:"id"`
	Code      string     `json:"code"`
	BranchID  string     `json:"branch_id"`
	Status    string     `json:"status"`
	Totals    totalsView `json:"totals"`
	CreatedAt time.Time  `json:"created_at"`
	Version   uint64     `json:"version"`
}

type transactionPageView struct {
	Items      []transactionSummaryView `json:"items"`
	NextCursor string                   `json:"next_cursor,omitempty"`
}

type lineView struct {
	LineID     string `json:"line_id"`
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	Qty        int64  `json:"qty"`
	UnitPrice  int64  `json:"unit_price"`
	TaxRateBps int64  `json:"tax_rate_bps"`
}

type paymentView struct {
	PaymentID string `json:"payment_id"`
	Method    string `json:"method"`
	Amount    int64  `json:"amount"`
	Status    string `json:"status"`
}

type transactionView struct {
	ID        string        `json:"id"`
	Code      string        `json:"code"`
	BranchID  string        `json:"branch_id"`
	Status    string        `json:"status"`
	Version   uint64        `json:"version"`
	Lines     []lineView    `json:"lines"`
	Totals    totalsView    `json:"totals"`
	Payments  []paymentView `json:"payments"`
	Paid      int64         `json:"paid"`
	Refunded  int64         `json:"refunded"`
	CreatedAt time.Time     `json:"created_at"`
}

type daySalesView struct {
	BranchID  string           `json:"branch_id"`
	Date      string           `json:"date"`
	Currency  string           `json:"currency"`
	Count     int64            `json:"count"`
	Gross     int64            `json:"gross"`
	Discounts int64            `json:"discounts"`
	Tax       int64            `json:"tax"`
	Net       int64            `json:"net"`
	Refunds   int64            `json:"refunds"`
	ByMethod  map[string]int64 `json:"by_method"`
}

type dailySalesView struct {
	Items      []daySalesView `json:"items"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

func viewTotals(t queries.Totals) totalsView {
	return totalsView{Currency: t.Currency, Subtotal: t.Subtotal, Discount: t.Discount, Tax: t.Tax, GrandTotal: t.GrandTotal}
}

// listTransactions answers GET /v1/transactions; see branchFilter for
// branch-limited tokens.
func (s *Server) listTransactions(w http.ResponseWriter, r *http.Request) {
	var f queries.TransactionFilter
	var err error
	f.BranchID, err = branchFilter(r)
	if err == nil {
		f.From, err = queryTime(r, "from")
	}
	if err == nil {
		f.To, err = queryTime(r, "to")
	}
	limit := 0
	if err == nil {
		limit, err = queryLimit(r)
	}
	if err == nil {
		err = s.consistent(w, r, projections.Transactions{}.Name())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f.Status = r.URL.Query().Get("status")
	page, err := s.reader.ListTransactions(r.Context(), principalOf(r).MerchantID, f, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := transactionPageView{Items: make([]transactionSummaryView, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, t := range page.Items {
		out.Items = append(out.Items, transactionSummaryView{
			ID: t.ID.String(), Code: t.Code, BranchID: t.BranchID.String(), Status: t.Status,
			Totals: viewTotals(t.Totals), CreatedAt: t.OpenedAt, Version: t.Version,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// TransactionGetter is where transaction details come from: the read model,
// or a cache in front of it.
type TransactionGetter interface {
	GetTransaction(ctx context.Context, merchant, id uuid.UUID) (queries.Transaction, error)
}

// getTransaction answers GET /v1/transactions/{id}, with ETag.
func (s *Server) getTransaction(w http.ResponseWriter, r *http.Request) {
	id, err := pathUUID(r, "id")
	if err == nil {
		err = s.consistent(w, r, projections.Transactions{}.Name())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Taken before the read: a body rendered from tables a rebuild then
	// replaced is kept under the epoch before the swap.
	epoch := s.renderEpoch.Load()
	// The cache can trail a commit by one Redis round trip, so a read that
	// asks for its own write goes to PostgreSQL.
	var src TransactionGetter = s.reader
	if s.hotReads != nil && !readsOwnWrite(r) {
		src = s.hotReads
	}
	t, err := src.GetTransaction(r.Context(), principalOf(r).MerchantID, id)
	if err == nil && !principalOf(r).CanActOnBranch(t.BranchID) {
		err = errForbidden
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(t.Version, 10)))
	key := renderedKey{principalOf(r).MerchantID, t.ID, t.Version, epoch}
	if body, ok := s.rendered.Get(key); ok {
		writeJSONBytes(w, http.StatusOK, body)
		return
	}
	out := transactionView{
		ID: t.ID.String(), Code: t.Code, BranchID: t.BranchID.String(), Status: t.Status, Version: t.Version,
		Lines: make([]lineView, 0, len(t.Lines)), Totals: viewTotals(t.Totals), Payments: make([]paymentView, 0, len(t.Payments)),
		Paid: t.Paid, Refunded: t.Refunded, CreatedAt: t.OpenedAt,
	}
	for _, l := range t.Lines {
		out.Lines = append(out.Lines, lineView{LineID: l.LineID.String(), SKU: l.SKU, Name: l.Name, Qty: l.Qty, UnitPrice: l.UnitPrice, TaxRateBps: l.TaxRateBps})
	}
	for _, p := range t.Payments {
		out.Payments = append(out.Payments, paymentView{PaymentID: p.PaymentID.String(), Method: p.Method, Amount: p.Amount, Status: p.Status})
	}
	body, err := json.Marshal(out)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(body) <= maxRenderedBody {
		s.rendered.Add(key, body)
	}
	writeJSONBytes(w, http.StatusOK, body)
}

// renderedKey names a merchant's transaction detail at one version, as
// rendered between two rebuild swaps (Server.ReadModelsReplaced). The
// merchant is part of it because a client may choose a transaction's id
// (offline sync): two merchants can hold the same one.
type renderedKey struct {
	merchant, id   uuid.UUID
	version, epoch uint64
}

// Server.rendered holds at most renderedTransactions bodies of at most
// maxRenderedBody bytes each (32 MiB in all; a sale of a few lines is about
// 1 KiB): every version of a transaction is a body of its own, and a body
// may be large, so both are bounded.
const (
	renderedTransactions = 4096
	maxRenderedBody      = 8 << 10
)

// DailySalesGetter is where daily sales come from: the read model, or a
// cache in front of it.
type DailySalesGetter interface {
	DailySales(ctx context.Context, merchant uuid.UUID, from, to time.Time, branch *uuid.UUID) ([]queries.DaySales, error)
}

// dailySales answers GET /v1/reports/daily-sales; see branchFilter for
// branch-limited tokens.
func (s *Server) dailySales(w http.ResponseWriter, r *http.Request) {
	from, err := queryDate(r, "from")
	var to time.Time
	if err == nil {
		to, err = queryDate(r, "to")
	}
	var branch *uuid.UUID
	if err == nil {
		branch, err = branchFilter(r)
	}
	limit := 0
	if err == nil {
		limit, err = queryLimit(r)
	}
	if err == nil {
		err = s.consistent(w, r, projections.NewDailySales().Name())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	merchant, cursor := principalOf(r).MerchantID, r.URL.Query().Get("cursor")
	var page queries.DailySalesPage
	if from.Equal(to) {
		// One day is a few rows (branches × currencies), read whole and
		// paged here, so that today's can come from the cache; as for
		// transaction details, a read that asks for its own write goes to
		// PostgreSQL.
		var src DailySalesGetter = s.reader
		if s.hotDailySales != nil && !readsOwnWrite(r) {
			src = s.hotDailySales
		}
		var days []queries.DaySales
		if days, err = src.DailySales(r.Context(), merchant, from, to, branch); err == nil {
			page, err = s.reader.PageDays(merchant, from, to, branch, days, cursor, limit)
		}
	} else {
		page, err = s.reader.DailySalesPage(r.Context(), merchant, from, to, branch, cursor, limit)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	days := page.Days
	out := dailySalesView{Items: make([]daySalesView, 0, len(days)), NextCursor: page.NextCursor}
	for _, d := range days {
		by := d.ByMethod
		if by == nil {
			by = map[string]int64{}
		}
		out.Items = append(out.Items, daySalesView{
			BranchID: d.BranchID.String(), Date: d.Date.Format(time.DateOnly), Currency: d.Currency, Count: d.Count,
			Gross: d.Gross, Discounts: d.Discounts, Tax: d.Tax, Net: d.Net, Refunds: d.Refunds, ByMethod: by,
		})
	}
	writeJSON(w, http.StatusOK, out)
}
