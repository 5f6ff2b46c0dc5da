package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// maxSyncCommands bounds one offline batch (API.md: at most 500).
const maxSyncCommands = 500

type syncRequest struct {
	Commands []syncCommand `json:"commands"`
}

type syncCommand struct {
	IdempotencyKey string          `json:"idempotency_key"`
	Method         string          `json:"method"`
	Path           string          `json:"path"`
	Body           json.RawMessage `json:"body,omitempty"`
	// OccurredAt is when the terminal ran the command offline (RFC 3339),
	// used by the commands that ring up a sale (ringsUpASale) and ignored
	// by the others; absent, the command happens now. It is bounded (maxClockSkew, maxOffline) but not
	// checked against the sale's earlier events: the till's order stands.
	OccurredAt *time.Time `json:"occurred_at,omitempty"`
}

// Bounds of a sync command's occurred_at: a terminal's clock may run a
// little ahead, and a terminal offline longer than maxOffline is more
// likely a wrong clock than a sale.
const (
	maxClockSkew = 5 * time.Minute
	maxOffline   = 30 * 24 * time.Hour
)

// occurredAtKey is the context key of a sync command's occurred_at.
type occurredAtKey struct{}

// occurredAt is the time a sync command ran offline, or zero.
func occurredAt(r *http.Request) time.Time {
	at, _ := r.Context().Value(occurredAtKey{}).(time.Time)
	return at
}

type syncResult struct {
	IdempotencyKey string          `json:"idempotency_key"`
	Status         int             `json:"status"`
	Body           json.RawMessage `json:"body"`
}

// posSync replays a terminal's offline commands in order, each through the
// same route, authentication context and idempotency key handling as if it
// had been sent alone, so a batch re-sent after a lost answer applies
// nothing twice. One command failing does not stop the others; each result
// carries the status and body its own request would have had.
func (s *Server) posSync(commands http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req syncRequest
		if err := decode(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
		if len(req.Commands) == 0 || len(req.Commands) > maxSyncCommands {
			s.fail(w, r, invalid(fmt.Sprintf("commands must hold 1 to %d commands", maxSyncCommands), FieldError{Field: "commands", Code: "out_of_range"}))
			return
		}
		results := make([]syncResult, len(req.Commands))
		for i, c := range req.Commands {
			if p := checkSyncCommand(i, c, time.Now()); p != nil {
				results[i] = s.syncFailure(c, p) // this one only: the rest still run
				continue
			}
			body := []byte(c.Body)
			if len(bytes.TrimSpace(body)) == 0 {
				body = []byte("{}")
			}
			sub, err := http.NewRequestWithContext(r.Context(), c.Method, c.Path, bytes.NewReader(body))
			if err != nil {
				results[i] = s.syncFailure(c, invalid("path is not a valid URL path"))
				continue
			}
			sub.Header.Set("Content-Type", "application/json")
			sub.Header.Set("Idempotency-Key", c.IdempotencyKey)
			for _, h := range []string{"X-Correlation-ID", "traceparent", "tracestate"} {
				if v := r.Header.Get(h); v != "" {
					sub.Header.Set(h, v)
				}
			}
			ctx := context.WithValue(r.Context(), chi.RouteCtxKey, chi.NewRouteContext())
			if c.OccurredAt != nil && ringsUpASale(c.Path) {
				ctx = context.WithValue(ctx, occurredAtKey{}, c.OccurredAt.UTC())
			}
			rec := newRecorder()
			commands.ServeHTTP(rec, sub.WithContext(ctx))
			out := rec.body.Bytes()
			if !json.Valid(out) {
				out, _ = json.Marshal(string(out))
			}
			results[i] = syncResult{IdempotencyKey: c.IdempotencyKey, Status: rec.status, Body: out}
		}
		writeJSON(w, http.StatusOK, map[string]any{"results": results})
	}
}

// ringsUpASale reports a command path of a sale's own flow, whose time a
// till may give (occurred_at). Voids, refunds, settings and stock happen
// when they reach the server, whatever occurred_at says (ignored, not
// refused, so a till that dates every queued command loses none): dating
// them back would move money or stock into days already reported.
func ringsUpASale(path string) bool {
	if path == "/v1/transactions" {
		return true
	}
	return strings.HasPrefix(path, "/v1/transactions/") && !strings.HasSuffix(path, "/void") && !strings.HasSuffix(path, "/refunds")
}

// checkSyncCommand refuses a command that is not one sync may replay.
func checkSyncCommand(i int, c syncCommand, now time.Time) *Problem {
	field := func(name string) FieldError {
		return FieldError{Field: fmt.Sprintf("commands[%d].%s", i, name), Code: "invalid"}
	}
	switch {
	case !validKey(c.IdempotencyKey):
		return invalid("every command needs its own idempotency_key", field("idempotency_key"))
	case c.Method != http.MethodPost && c.Method != http.MethodDelete && c.Method != http.MethodPut:
		return invalid("method must be POST, PUT or DELETE", field("method"))
	case !strings.HasPrefix(c.Path, "/v1/") || strings.HasPrefix(c.Path, "/v1/pos/") || strings.ContainsAny(c.Path, "?#"):
		return invalid("path must be a /v1 command path", field("path"))
	case c.OccurredAt != nil && ringsUpASale(c.Path) && (c.OccurredAt.After(now.Add(maxClockSkew)) || c.OccurredAt.Before(now.Add(-maxOffline))):
		return invalid("occurred_at must be within the last 30 days and not in the future", FieldError{Field: fmt.Sprintf("commands[%d].occurred_at", i), Code: "out_of_range"})
	}
	return nil
}

func (s *Server) syncFailure(c syncCommand, p *Problem) syncResult {
	b, _ := json.Marshal(p)
	return syncResult{IdempotencyKey: c.IdempotencyKey, Status: p.Status, Body: b}
}
