package api

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"pos/domain/stock"
	"pos/projections"
	"pos/queries"
)

// Stock reads (SPEC §5): GET /v1/stock and GET /v1/stock/{sku}/movements,
// from projections.Stock's read models. Like the other reads (queries.go):
// every role of the merchant may read them, AUDITOR included; a token
// limited to branches reads its branches only (branchFilter); each answers
// X-Position and honours X-Min-Position (or ?min_position=) for the "stock"
// projection.

// StockGetter is where stock levels come from: the read model, or a cache
// in front of it. Config.HotReads serves GET /v1/stock too when it also
// implements StockGetter (cmd/pos wires one value that does both), for
// reads without X-Min-Position only; the cache decides which pages it
// keeps.
type StockGetter interface {
	Stock(ctx context.Context, merchant uuid.UUID, f queries.StockFilter, cursor string, limit int) (queries.StockPage, error)
}

// stockSource is where listStock reads: the hot reads' StockGetter when
// there is one, except for a read that asks for its own write
// (X-Min-Position, min_position): the cache can trail a commit by one Redis
// round trip, so that one goes to PostgreSQL, as for the other cached reads.
func (s *Server) stockSource(r *http.Request) StockGetter {
	hot, ok := s.hotReads.(StockGetter)
	if !ok || r.Header.Get("X-Min-Position") != "" || r.URL.Query().Get("min_position") != "" {
		return s.reader
	}
	return hot
}

// stockLevelView is a level as GET /v1/stock lists it: the commands'
// levelView with the ledger's id and version.
type stockLevelView struct {
	// ID is the ledger id (what the audit paths take).
	ID string `json:"id"`
	levelView
	// Version is the ledger's version as of the read model.
	Version uint64 `json:"version"`
}

type stockLevelPageView struct {
	Items      []stockLevelView `json:"items"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

type stockMovementView struct {
	Kind string `json:"kind"`
	Qty  int64  `json:"qty"`
	// UnitCost is null for kinds that carry no cost.
	UnitCost *int64    `json:"unit_cost"`
	SourceID string    `json:"source_id"`
	At       time.Time `json:"at"`
	BranchID string    `json:"branch_id"`
	LedgerID string    `json:"ledger_id"`
	// Version is the event's version in the ledger's stream.
	Version uint64 `json:"version"`
}

type stockMovementPageView struct {
	Items      []stockMovementView `json:"items"`
	NextCursor string              `json:"next_cursor,omitempty"`
}

// listStock answers GET /v1/stock: levels ordered by branch, then SKU,
// cursor-paged like every list; see branchFilter for branch-limited tokens,
// and stockSource for the cache.
func (s *Server) listStock(w http.ResponseWriter, r *http.Request) {
	var f queries.StockFilter
	var err error
	f.BranchID, err = branchFilter(r)
	if err == nil {
		if f.SKU = r.URL.Query().Get("sku"); f.SKU != "" {
			err = stock.CheckSKU(f.SKU)
		}
	}
	limit := 0
	if err == nil {
		limit, err = queryLimit(r)
	}
	if err == nil {
		err = s.consistent(w, r, projections.Stock{}.Name())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page, err := s.stockSource(r).Stock(r.Context(), principalOf(r).MerchantID, f, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := stockLevelPageView{Items: make([]stockLevelView, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, l := range page.Items {
		out.Items = append(out.Items, stockLevelView{ID: l.LedgerID.String(), Version: l.Version, levelView: levelView{
			BranchID: l.BranchID.String(), SKU: l.SKU, OnHand: l.OnHand, Reserved: l.Reserved, Available: l.Available, AvgCost: l.AvgCost,
		}})
	}
	writeJSON(w, http.StatusOK, out)
}

// stockMovements answers GET /v1/stock/{sku}/movements: newest first,
// cursor-paged, in one branch or all (see branchFilter). A SKU that never
// moved answers an empty list, not 404: every SKU is at zero until received.
func (s *Server) stockMovements(w http.ResponseWriter, r *http.Request) {
	sku, err := pathSKU(r)
	var f queries.StockFilter
	if err == nil {
		f.BranchID, err = branchFilter(r)
	}
	limit := 0
	if err == nil {
		limit, err = queryLimit(r)
	}
	if err == nil {
		err = s.consistent(w, r, projections.Stock{}.Name())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page, err := s.reader.StockMovements(r.Context(), principalOf(r).MerchantID, sku, f.BranchID, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := stockMovementPageView{Items: make([]stockMovementView, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, m := range page.Items {
		out.Items = append(out.Items, stockMovementView{
			Kind: m.Kind, Qty: m.Qty, UnitCost: m.UnitCost, SourceID: m.SourceID.String(), At: m.At,
			BranchID: m.BranchID.String(), LedgerID: m.LedgerID.String(), Version: m.Version,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// pathSKU reads the {sku} path parameter, percent-decoded (chi routes on the
// escaped path when the request's escaping is not the default one, as for a
// SKU with a "/" sent as %2F), and checks it like the ledger does (400).
func pathSKU(r *http.Request) (string, error) {
	sku := chi.URLParam(r, "sku")
	if r.URL.RawPath != "" {
		var err error
		if sku, err = url.PathUnescape(sku); err != nil {
			return "", invalid("sku must be percent-encoded", FieldError{Field: "sku", Code: "invalid"})
		}
	}
	if err := stock.CheckSKU(sku); err != nil {
		return "", err
	}
	return sku, nil
}
