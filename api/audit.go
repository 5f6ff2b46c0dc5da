package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"pos/api/auth"
	"pos/audit"
	"pos/commands"
	"pos/domain/settings"
	"pos/domain/stock"
	"pos/domain/transaction"
	"pos/eventstore"
)

// Audit endpoints (SPEC §6, API.md "Audit"): a stream's whole history, an
// aggregate replayed as of a version or a time, the merchant's ordered feed
// (JSON pages, or an NDJSON export), and verification of the hash chains
// and signed anchors. Only AUDITOR and ADMIN read them. Every read is of the
// caller's merchant: stream names carry the merchant, so another merchant's
// stream simply does not exist (404, like a missing one).
//
// History is read from the store as stored (no upcasting): hashes are over
// the stored form, and an auditor must see exactly that. Only the state
// replay upcasts, as the command handlers do, before the domain's own Apply.

const (
	// feedLimit and maxFeedLimit bound one page of GET /v1/audit/events.
	feedLimit    = 50
	maxFeedLimit = 500
	// exportPage is how many events one store read of an export fetches.
	exportPage = 1000
	// exportClockSkew: recorded times follow the feed order only roughly
	// (each is its append's transaction start), so an export bounded by
	// `to` reads on until an event is this much later than `to`.
	exportClockSkew = time.Minute
	// ndjson is the export's media type.
	ndjson = "application/x-ndjson"
)

// auditRoutes mounts the audit endpoints on r (under /v1), behind the role
// check.
func (s *Server) auditRoutes(r chi.Router) {
	r.Use(auditorsOnly)
	r.Get("/audit/streams/{aggregate}/{id}/events", s.auditStreamEvents)
	r.Get("/audit/{aggregate}/{id}/state", s.auditState)
	r.With(wholeMerchant).Get("/audit/events", s.auditFeed)
	r.With(wholeMerchant).Get("/audit/verify", s.auditVerify)
}

// mayAudit checks that a token limited to branches may read the stream
// whose first event is first: the aggregate's branch is the branch_id of
// its first event (a sale's TransactionOpened; every stock event carries
// its ledger's). Without one the stream is refused to such a token.
func mayAudit(r *http.Request, first eventstore.RecordedEvent) error {
	p := principalOf(r)
	if len(p.BranchIDs) == 0 {
		return nil
	}
	var b struct {
		BranchID uuid.UUID `json:"branch_id"`
	}
	if err := json.Unmarshal(first.Data, &b); err != nil || !p.CanActOnBranch(b.BranchID) {
		return errForbidden
	}
	return nil
}

// auditorsOnly lets only AUDITOR and ADMIN read audit endpoints.
func auditorsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !principalOf(r).HasRole(auth.RoleAuditor, auth.RoleAdmin) {
			writeProblem(w, errForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// auditAggregate is one aggregate type as the audit paths name it.
type auditAggregate struct {
	stream func(merchant, id uuid.UUID) string
	// state replays events (upcast, in version order) with the domain's
	// own Apply and returns the state's wire form.
	state func(events []eventstore.RecordedEvent) (any, error)
}

// auditAggregates maps the aggregate names of the audit paths to their
// streams ("stock" takes a ledger id, as stock answers carry it).
// "approvals" and "journal" (API.md) answer 404 not_found until the
// Approval and Journal aggregates exist and are added here.
var auditAggregates = map[string]auditAggregate{
	"transactions": {stream: commands.TransactionStream, state: transactionState},
	"stock":        {stream: commands.LedgerStream, state: ledgerState},
}

// auditTarget resolves {aggregate}/{id} to the caller's stream. An unknown
// aggregate or a malformed id is not found, like a missing stream.
func auditTarget(r *http.Request) (auditAggregate, string, error) {
	agg, ok := auditAggregates[chi.URLParam(r, "aggregate")]
	if !ok {
		return auditAggregate{}, "", errNotFound
	}
	id, err := pathUUID(r, "id")
	if err != nil {
		return auditAggregate{}, "", err
	}
	return agg, agg.stream(principalOf(r).MerchantID, id), nil
}

// readStreamUntil reads stream from version 1 in pages, in version order,
// while keep accepts the events; it stops at the first event keep refuses.
func (s *Server) readStreamUntil(r *http.Request, stream string, keep func(eventstore.RecordedEvent) bool) ([]eventstore.RecordedEvent, error) {
	var out []eventstore.RecordedEvent
	from := uint64(1)
	for {
		page, err := s.store.ReadStream(r.Context(), stream, from, exportPage)
		if err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", stream, err)
		}
		for _, e := range page {
			if !keep(e) {
				return out, nil
			}
			out = append(out, e)
		}
		if len(page) < exportPage {
			return out, nil
		}
		from = page[len(page)-1].Version + 1
	}
}

func (s *Server) auditStreamEvents(w http.ResponseWriter, r *http.Request) {
	_, stream, err := auditTarget(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	events, err := s.readStreamUntil(r, stream, func(eventstore.RecordedEvent) bool { return true })
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(events) == 0 {
		s.fail(w, r, errNotFound)
		return
	}
	if err := mayAudit(r, events[0]); err != nil {
		s.fail(w, r, err)
		return
	}
	views := make([]auditEventView, len(events))
	for i, e := range events {
		views[i] = viewEvent(e)
	}
	writeAuditJSON(w, struct {
		Events []auditEventView `json:"events"`
	}{views})
}

func (s *Server) auditState(w http.ResponseWriter, r *http.Request) {
	agg, stream, err := auditTarget(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	keep, version, err := asOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	events, err := s.readStreamUntil(r, stream, keep)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(events) == 0 {
		s.fail(w, r, errNotFound) // no such aggregate, or none yet at that point
		return
	}
	if err := mayAudit(r, events[0]); err != nil {
		s.fail(w, r, err)
		return
	}
	if version != 0 && events[len(events)-1].Version != version {
		s.fail(w, r, errNotFound) // a version the stream has not reached
		return
	}
	for i := range events {
		if s.registry != nil {
			if events[i], err = s.registry.Upcast(events[i]); err != nil {
				s.fail(w, r, err)
				return
			}
		}
	}
	state, err := agg.state(events)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	last := events[len(events)-1]
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(last.Version, 10)))
	writeAuditJSON(w, state)
}

// asOf reads as_of_version or as_of_time (at most one) into the test that
// keeps the events up to that point, and the version asked for (0 when
// none). Neither: the whole history.
func asOf(r *http.Request) (keep func(eventstore.RecordedEvent) bool, version uint64, err error) {
	q := r.URL.Query()
	v, at := q.Get("as_of_version"), q.Get("as_of_time")
	switch {
	case v != "" && at != "":
		return nil, 0, invalid("give as_of_version or as_of_time, not both", FieldError{Field: "as_of_time", Code: "invalid"})
	case v != "":
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil || n == 0 {
			return nil, 0, invalid("as_of_version must be a version, 1 or more", FieldError{Field: "as_of_version", Code: "invalid"})
		}
		return func(e eventstore.RecordedEvent) bool { return e.Version <= n }, n, nil
	case at != "":
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return nil, 0, invalid("as_of_time must be an RFC 3339 time", FieldError{Field: "as_of_time", Code: "invalid"})
		}
		// The longest prefix recorded at or before t: a later event's
		// successors never count, whatever their clocks say.
		return func(e eventstore.RecordedEvent) bool { return !e.RecordedAt.After(t) }, 0, nil
	}
	return func(eventstore.RecordedEvent) bool { return true }, 0, nil
}

// transactionState replays a transaction's events with transaction.Load,
// the aggregate's own Apply: the audit view has no logic of its own.
func transactionState(events []eventstore.RecordedEvent) (any, error) {
	history := make([]transaction.Event, len(events))
	for i, re := range events {
		e, err := transaction.Decode(re.Type, re.Data)
		if err != nil {
			return nil, fmt.Errorf("audit: %s event %d: %w", re.Stream, re.Version, err)
		}
		history[i] = e
	}
	t, err := transaction.Load(history)
	if err != nil {
		return nil, fmt.Errorf("audit: replay %s: %w", events[0].Stream, err)
	}
	last := events[len(events)-1]
	return viewTransactionState(t, last), nil
}

// ledgerState replays a stock ledger's events with its own Apply, like
// transactionState; the ledger's key comes from its first event.
func ledgerState(events []eventstore.RecordedEvent) (any, error) {
	var l *stock.Ledger
	for _, re := range events {
		e, err := stock.Decode(re.Type, re.Data)
		if err != nil {
			return nil, fmt.Errorf("audit: %s event %d: %w", re.Stream, re.Version, err)
		}
		if l == nil {
			l = stock.New(e.LedgerKey())
		}
		if err := l.Apply(e); err != nil {
			return nil, fmt.Errorf("audit: replay %s: %w", re.Stream, err)
		}
	}
	last := events[len(events)-1]
	k := l.Key()
	v := auditLedger{ID: k.LedgerID.String(), MerchantID: k.MerchantID.String(), levelView: viewLevel(l),
		Version: l.Version(), Position: last.Position.String(), RecordedAt: last.RecordedAt, Reservations: []auditReservation{}}
	res := l.Reservations()
	for _, id := range slices.SortedFunc(maps.Keys(res), func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) }) {
		r := res[id]
		v.Reservations = append(v.Reservations, auditReservation{TransactionID: id.String(), Reserved: r.Reserved, Released: r.Released,
			Sold: r.Sold, SoldCost: int64(r.SoldCost), Returned: r.Returned})
	}
	return v, nil
}

// auditLedger is a stock ledger's state as replayed.
type auditLedger struct {
	ID         string `json:"id"`
	MerchantID string `json:"merchant_id"`
	levelView
	Version      uint64             `json:"version"`
	Position     string             `json:"position"`
	RecordedAt   time.Time          `json:"recorded_at"`
	Reservations []auditReservation `json:"reservations"`
}

// auditReservation is what a ledger knows of one transaction.
type auditReservation struct {
	TransactionID string `json:"transaction_id"`
	Reserved      int64  `json:"reserved"`
	Released      bool   `json:"released"`
	Sold          int64  `json:"sold"`
	SoldCost      int64  `json:"sold_cost"`
	Returned      int64  `json:"returned"`
}

func (s *Server) auditFeed(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, err := eventstore.ParsePosition(q.Get("from_position"))
	if err != nil {
		s.fail(w, r, invalid("from_position must be a position this API returned", FieldError{Field: "from_position", Code: "invalid"}))
		return
	}
	if acceptsNDJSON(r) {
		s.auditExport(w, r, from)
		return
	}
	limit := feedLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxFeedLimit {
			s.fail(w, r, invalid(fmt.Sprintf("limit must be 1 to %d", maxFeedLimit), FieldError{Field: "limit", Code: "out_of_range"}))
			return
		}
		limit = n
	}
	filter := eventstore.Filter{MerchantID: principalOf(r).MerchantID.String()}
	events, err := s.store.ReadAll(r.Context(), from, filter, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := auditFeedPage{Events: make([]auditEventView, len(events)), NextPosition: from.String()}
	for i, e := range events {
		page.Events[i] = viewEvent(e)
	}
	if len(events) > 0 {
		page.NextPosition = events[len(events)-1].Position.String()
	}
	writeAuditJSON(w, page)
}

// acceptsNDJSON reports whether the request's Accept lists the NDJSON
// export's media type (with a non-zero q).
func acceptsNDJSON(r *http.Request) bool {
	for _, h := range r.Header.Values("Accept") {
		for _, part := range strings.Split(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && mt == ndjson && params["q"] != "0" && !strings.HasPrefix(params["q"], "0.0") {
				return true
			}
		}
	}
	return false
}

// exportBound is one end of an export's range: an instant (RFC 3339), or
// a day (YYYY-MM-DD) in the merchant's time zone, or neither (open).
type exportBound struct {
	at  time.Time
	day string
}

// exportBounds are an export's from and to. A day is read in the
// merchant's time zone in force when the event was recorded (a change of
// zone applies from the settings event that makes it), as the daily sales
// read the zone. Events in [from, to] are exported: from an instant on,
// before an instant, on or after a from day, on or before a to day.
type exportBounds struct{ from, to exportBound }

// byDay reports whether a bound is a day, which needs the merchant's zone.
func (b exportBounds) byDay() bool { return b.from.day != "" || b.to.day != "" }

// exportRange reads the from and to parameters (see exportBounds).
func exportRange(r *http.Request) (b exportBounds, err error) {
	parse := func(field string) (exportBound, error) {
		v := r.URL.Query().Get(field)
		if v == "" {
			return exportBound{}, nil
		}
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return exportBound{at: t.UTC()}, nil
		}
		if _, err := time.Parse(time.DateOnly, v); err != nil {
			return exportBound{}, invalid(field+" must be an RFC 3339 time or a YYYY-MM-DD date", FieldError{Field: field, Code: "invalid"})
		}
		return exportBound{day: v}, nil
	}
	if b.from, err = parse("from"); err != nil {
		return
	}
	if b.to, err = parse("to"); err != nil {
		return
	}
	if !b.from.at.IsZero() && !b.to.at.IsZero() && !b.from.at.Before(b.to.at) || b.from.day != "" && b.to.day != "" && b.from.day > b.to.day {
		err = invalid("from must be before to", FieldError{Field: "to", Code: "invalid"})
	}
	return
}

// keeps reports whether the export holds an event recorded at at, in a
// merchant whose time zone was then loc.
func (b exportBounds) keeps(at time.Time, loc *time.Location) bool {
	day := ""
	if b.byDay() {
		day = at.In(loc).Format(time.DateOnly)
	}
	switch {
	case !b.from.at.IsZero() && at.Before(b.from.at), b.from.day != "" && day < b.from.day:
		return false
	case !b.to.at.IsZero() && !at.Before(b.to.at), b.to.day != "" && day > b.to.day:
		return false
	}
	return true
}

// past reports whether an event recorded at at, and every one after it in
// the feed, is beyond the range's end: recorded times follow the feed only
// roughly (exportClockSkew), and a day ends at the latest 14 hours after
// its UTC midnight (UTC−12) plus a clock change.
func (b exportBounds) past(at time.Time) bool {
	end := b.to.at
	if b.to.day != "" {
		d, _ := time.Parse(time.DateOnly, b.to.day)
		end = d.AddDate(0, 0, 2)
	}
	return !end.IsZero() && at.After(end.Add(exportClockSkew))
}

// exportZones follows the merchant's time zone through its feed, for an
// export by days: the zone in force after position (the settings stream's
// last change at or before it, else the default), then each change of the
// settings stream as the export meets it.
type exportZones struct {
	stream string
	loc    *time.Location
}

func (s *Server) exportZones(ctx context.Context, merchant uuid.UUID, after eventstore.Position) (*exportZones, error) {
	z := &exportZones{stream: commands.SettingsStream(merchant)}
	if err := z.set(settings.Defaults().Timezone); err != nil {
		return nil, err
	}
	history, err := s.store.ReadStream(ctx, z.stream, 1, 0)
	if err != nil {
		return nil, err
	}
	for _, e := range history {
		if after.Less(e.Position) {
			break
		}
		if err := z.see(e); err != nil {
			return nil, err
		}
	}
	return z, nil
}

// see takes e's change of zone, if e is one (nothing, for an export by
// instants, whose exportZones has no stream).
func (z *exportZones) see(e eventstore.RecordedEvent) error {
	if z.stream == "" || e.Stream != z.stream {
		return nil
	}
	ev, err := settings.Decode(e.Type, e.Data)
	if err != nil {
		return err
	}
	if c, ok := ev.(settings.SettingsChanged); ok {
		return z.set(c.Timezone)
	}
	return nil
}

func (z *exportZones) set(name string) error {
	loc, err := time.LoadLocation(name)
	if err != nil {
		return fmt.Errorf("audit export: time zone %q: %w", name, err)
	}
	z.loc = loc
	return nil
}

// auditExport streams the merchant's feed after from as NDJSON, one event
// per line, in feed order, for events recorded in the requested range. It
// settles first, so the export holds every event committed before it began
// (and perhaps some committed during it: it ends at the first short page).
// Memory stays flat: each page is encoded straight to the response and
// flushed, never accumulated. A failure after the first byte aborts the
// connection, so a client never mistakes a cut export for a complete one.
func (s *Server) auditExport(w http.ResponseWriter, r *http.Request, after eventstore.Position) {
	bounds, err := exportRange(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := r.Context()
	if err := s.store.Settle(ctx); err != nil {
		s.fail(w, r, err)
		return
	}
	merchant := principalOf(r).MerchantID
	zones := &exportZones{}
	if bounds.byDay() {
		if zones, err = s.exportZones(ctx, merchant, after); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	filter := eventstore.Filter{MerchantID: merchant.String()}
	first, err := s.store.ReadAll(ctx, after, filter, exportPage)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", ndjson)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	abort := func(err error) {
		s.log.ErrorContext(ctx, "audit export failed", "err", err)
		panic(http.ErrAbortHandler)
	}
	page := first
	for {
		for _, e := range page {
			if bounds.past(e.RecordedAt) {
				page = nil
				break
			}
			if err := zones.see(e); err != nil {
				abort(err)
			}
			if !bounds.keeps(e.RecordedAt, zones.loc) {
				continue
			}
			if err := enc.Encode(viewEvent(e)); err != nil {
				abort(err)
			}
		}
		if err := bw.Flush(); err != nil {
			abort(err)
		}
		if err := rc.Flush(); err != nil {
			abort(err)
		}
		if len(page) < exportPage {
			return
		}
		after = page[len(page)-1].Position
		if page, err = s.store.ReadAll(ctx, after, filter, exportPage); err != nil {
			abort(err)
		}
	}
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) {
	auditor := s.auditor
	if auditor == nil {
		auditor = &audit.Auditor{Store: s.store}
	}
	rep, err := auditor.Verify(r.Context(), eventstore.VerifyOptions{
		Filter: eventstore.Filter{MerchantID: principalOf(r).MerchantID.String()}, BatchSize: 5000})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeAuditJSON(w, rep)
}

// writeAuditJSON answers 200 with v as JSON without HTML escaping, so that
// event data already stored compact reads back byte for byte and its hash
// can be recomputed from the answer.
func writeAuditJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeProblem(w, errInternal)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// Wire shapes of the audit endpoints.

type auditFeedPage struct {
	Events       []auditEventView `json:"events"`
	NextPosition string           `json:"next_position"`
}

type auditEventView struct {
	EventID       string          `json:"event_id"`
	Stream        string          `json:"stream"`
	Version       uint64          `json:"version"`
	Position      string          `json:"position"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	Data          json.RawMessage `json:"data"`
	Metadata      auditMetadata   `json:"metadata"`
	RecordedAt    time.Time       `json:"recorded_at"`
	// Hash and PrevHash are hex; PrevHash is "" for version 1.
	Hash     string `json:"hash"`
	PrevHash string `json:"prev_hash"`
}

// auditMetadata is API.md's metadata plus the full W3C trace context, which
// the hash covers: with it an auditor can recompute an event's hash from
// the answer alone.
type auditMetadata struct {
	Actor         string `json:"actor"`
	Role          string `json:"role"`
	MerchantID    string `json:"merchant_id"`
	CorrelationID string `json:"correlation_id"`
	CausationID   string `json:"causation_id"`
	TraceID       string `json:"trace_id"`
	TraceParent   string `json:"traceparent"`
	TraceState    string `json:"tracestate"`
}

func viewEvent(e eventstore.RecordedEvent) auditEventView {
	md := e.Metadata
	return auditEventView{
		EventID: e.ID.String(), Stream: e.Stream, Version: e.Version, Position: e.Position.String(),
		Type: e.Type, SchemaVersion: e.SchemaVersion, Data: e.Data,
		Metadata: auditMetadata{Actor: md.Actor, Role: md.Role, MerchantID: md.MerchantID, CorrelationID: md.CorrelationID,
			CausationID: md.CausationID, TraceID: md.TraceID(), TraceParent: md.TraceParent, TraceState: md.TraceState},
		RecordedAt: e.RecordedAt, Hash: hex.EncodeToString(e.Hash), PrevHash: hex.EncodeToString(e.PrevHash),
	}
}

// auditTransaction is a transaction's state as replayed: GET
// /v1/transactions/{id}'s fields and every other figure the aggregate
// holds, with the version, position and recorded time of the last event
// applied.
type auditTransaction struct {
	ID               string          `json:"id"`
	Code             string          `json:"code"`
	MerchantID       string          `json:"merchant_id"`
	BranchID         string          `json:"branch_id"`
	Status           string          `json:"status"`
	Currency         string          `json:"currency"`
	PricesIncludeTax bool            `json:"prices_include_tax"`
	OpenedAt         time.Time       `json:"opened_at"`
	OpenedBy         string          `json:"opened_by"`
	Version          uint64          `json:"version"`
	Position         string          `json:"position"`
	RecordedAt       time.Time       `json:"recorded_at"`
	Lines            []auditLine     `json:"lines"`
	Discounts        []auditDiscount `json:"discounts"`
	Totals           totalsView      `json:"totals"`
	Payments         []auditPayment  `json:"payments"`
	Refunds          []auditRefund   `json:"refunds"`
	Paid             int64           `json:"paid"`
	Pending          int64           `json:"pending"`
	Due              int64           `json:"due"`
	Refunded         int64           `json:"refunded"`
	Refundable       int64           `json:"refundable"`
}

type auditLine struct {
	LineID         string `json:"line_id"`
	SKU            string `json:"sku"`
	Name           string `json:"name"`
	Qty            int64  `json:"qty"`
	UnitPrice      int64  `json:"unit_price"`
	TaxRateBps     int64  `json:"tax_rate_bps"`
	Gross          int64  `json:"gross"`
	Discount       int64  `json:"discount"`
	Net            int64  `json:"net"`
	Tax            int64  `json:"tax"`
	Total          int64  `json:"total"`
	RefundedQty    int64  `json:"refunded_qty"`
	RefundedAmount int64  `json:"refunded_amount"`
}

type auditDiscount struct {
	DiscountID string `json:"discount_id"`
	Kind       string `json:"kind"`
	// Bps for a percent discount, Amount for an amount one, as asked.
	Bps    int64  `json:"bps,omitempty"`
	Amount int64  `json:"amount,omitempty"`
	Reason string `json:"reason"`
}

type auditPayment struct {
	PaymentID     string `json:"payment_id"`
	Method        string `json:"method"`
	Amount        int64  `json:"amount"`
	Applied       int64  `json:"applied"`
	Change        int64  `json:"change"`
	Status        string `json:"status"`
	GatewayRef    string `json:"gateway_ref,omitempty"`
	DeclineReason string `json:"decline_reason,omitempty"`
}

type auditRefund struct {
	RefundID string `json:"refund_id"`
	Amount   int64  `json:"amount"`
	Reason   string `json:"reason"`
}

func viewTransactionState(t *transaction.Transaction, last eventstore.RecordedEvent) auditTransaction {
	tot := t.Totals()
	v := auditTransaction{
		ID: t.ID().String(), Code: t.Code(), MerchantID: t.MerchantID().String(), BranchID: t.BranchID().String(),
		Status: string(t.Status()), Currency: string(t.Currency()), PricesIncludeTax: t.PricesIncludeTax(),
		OpenedAt: t.OpenedAt(), OpenedBy: t.OpenedBy(),
		Version: t.Version(), Position: last.Position.String(), RecordedAt: last.RecordedAt,
		Lines: []auditLine{}, Discounts: []auditDiscount{}, Payments: []auditPayment{}, Refunds: []auditRefund{},
		Totals: totalsView{Currency: string(tot.Currency), Subtotal: int64(tot.Subtotal), Discount: int64(tot.Discount),
			Tax: int64(tot.Tax), GrandTotal: int64(tot.GrandTotal)},
		Paid: int64(t.Paid()), Pending: int64(t.Pending()), Due: int64(t.Due()),
		Refunded: int64(t.Refunded()), Refundable: int64(t.Refundable()),
	}
	for _, l := range t.Lines() {
		v.Lines = append(v.Lines, auditLine{LineID: l.LineID.String(), SKU: l.SKU, Name: l.Name, Qty: l.Qty,
			UnitPrice: int64(l.UnitPrice), TaxRateBps: l.TaxRateBps, Gross: int64(l.Gross), Discount: int64(l.Discount),
			Net: int64(l.Net), Tax: int64(l.Tax), Total: int64(l.Total), RefundedQty: l.RefundedQty, RefundedAmount: int64(l.RefundedAmount)})
	}
	for _, d := range t.Discounts() {
		v.Discounts = append(v.Discounts, auditDiscount{DiscountID: d.DiscountID.String(), Kind: string(d.Kind), Bps: d.Bps,
			Amount: int64(d.Amount), Reason: d.Reason})
	}
	for _, p := range t.Payments() {
		v.Payments = append(v.Payments, auditPayment{PaymentID: p.PaymentID.String(), Method: string(p.Method), Amount: int64(p.Amount),
			Applied: int64(p.Applied), Change: int64(p.Change), Status: string(p.Status), GatewayRef: p.GatewayRef, DeclineReason: p.DeclineReason})
	}
	for _, rf := range t.Refunds() {
		v.Refunds = append(v.Refunds, auditRefund{RefundID: rf.RefundID.String(), Amount: int64(rf.Amount), Reason: rf.Reason})
	}
	return v
}
