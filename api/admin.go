package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"pos/api/auth"
	"pos/rebuild"
)

// Projections (ADMIN), API.md "Projections (ADMIN)" and SPEC §7: each
// projection's position and lag and the rebuild of it in progress, and
// starting a rebuild. A rebuild replays every merchant's history: the
// read models are shared tables, so ADMIN here acts for the whole
// deployment. Config.Operators keeps that to the operator's merchants
// (POS_OPERATOR_MERCHANTS); without it, any merchant's ADMIN may.

// Rebuilds is what the admin routes need of a *rebuild.Rebuilder.
type Rebuilds interface {
	Start(ctx context.Context, name string) (uuid.UUID, error)
	Status(ctx context.Context) ([]rebuild.Projection, error)
}

var errRebuildBusy = problem(http.StatusConflict, "invalid_state", "a rebuild is already running; follow it at GET /v1/admin/projections")

// adminRoutes mounts the projection endpoints on r (under /v1): ADMIN
// only, without a branch limit, and of an operator merchant when
// Config.Operators names some.
func (s *Server) adminRoutes(r chi.Router) {
	r.Use(onlyRoles(auth.RoleAdmin), wholeMerchant, s.operatorsOnly)
	r.Get("/admin/projections", s.listProjections)
	r.Post("/admin/projections/{name}/rebuild", s.startRebuild)
}

type rebuildJSON struct {
	RebuildID   uuid.UUID  `json:"rebuild_id"`
	Projections []string   `json:"projections"`
	State       string     `json:"state"`
	EventsDone  uint64     `json:"events_done"`
	EventsTotal *uint64    `json:"events_total"`
	Rate        float64    `json:"rate"`
	ETASeconds  *float64   `json:"eta_seconds"`
	StartedAt   time.Time  `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
}

func rebuildOf(p *rebuild.Progress) *rebuildJSON {
	if p == nil {
		return nil
	}
	out := &rebuildJSON{RebuildID: p.ID, Projections: p.Projections, State: p.State, EventsDone: p.Done,
		Rate: math.Round(p.Rate()*10) / 10, StartedAt: p.StartedAt.UTC()}
	if p.Counted {
		t := p.Total
		out.EventsTotal = &t
	}
	if eta, ok := p.ETA(); ok {
		secs := math.Ceil(eta.Seconds())
		out.ETASeconds = &secs
	}
	if !p.FinishedAt.IsZero() {
		f := p.FinishedAt.UTC()
		out.FinishedAt = &f
	}
	return out
}

type projectionJSON struct {
	Name        string       `json:"name"`
	Position    string       `json:"position"`
	Lag         *uint64      `json:"lag"`
	Rebuild     *rebuildJSON `json:"rebuild"`
	LastRebuild *rebuildJSON `json:"last_rebuild"`
}

func (s *Server) listProjections(w http.ResponseWriter, r *http.Request) {
	list, err := s.rebuilds.Status(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]projectionJSON, len(list))
	for i, p := range list {
		out[i] = projectionJSON{Name: p.Name, Position: p.Position.String(), Lag: p.Lag,
			Rebuild: rebuildOf(p.Rebuild), LastRebuild: rebuildOf(p.Last)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"projections": out})
}

func (s *Server) startRebuild(w http.ResponseWriter, r *http.Request) {
	id, err := s.rebuilds.Start(r.Context(), chi.URLParam(r, "name"))
	switch {
	case errors.Is(err, rebuild.ErrUnknown):
		writeProblem(w, errNotFound)
		return
	case errors.Is(err, rebuild.ErrBusy):
		writeProblem(w, errRebuildBusy)
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"rebuild_id": id})
}

// operatorsOnly refuses the projection endpoints to a merchant that is not
// an operator, when operators are configured.
func (s *Server) operatorsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.operators) > 0 && !slices.Contains(s.operators, principalOf(r).MerchantID) {
			writeProblem(w, errForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
