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
	"github.com/google/uuid"
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
	// by the others; absent or null, the command happens now. It is bounded (maxClockSkew, maxOffline) but not
	// checked against the sale's earlier events: the till's order stands.
	// It is parsed per command (checkSyncCommand), so one malformed time
	// fails its own command, not the batch.
	OccurredAt json.RawMessage `json:"occurred_at,omitempty"`
}

// occurred parses c.OccurredAt: nil when absent or null.
func (c syncCommand) occurred() (*time.Time, error) {
	raw := bytes.TrimSpace(c.OccurredAt)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var at time.Time
	if err := json.Unmarshal(raw, &at); err != nil {
		return nil, err
	}
	return &at, nil
}

// saleOf returns the sale a command acts on, from its path or, for an
// open, its body's transaction_id, in any form uuid.Parse takes (as the
// routes do); uuid.Nil for another command or an open whose id the server
// picks.
func (c syncCommand) saleOf() uuid.UUID {
	var id string
	if rest, ok := strings.CutPrefix(c.Path, "/v1/transactions/"); ok {
		id, _, _ = strings.Cut(rest, "/")
	} else if c.Path == "/v1/transactions" {
		var open struct {
			TransactionID string `json:"transaction_id"`
		}
		if json.Unmarshal(c.Body, &open) != nil {
			return uuid.Nil
		}
		id = open.TransactionID
	}
	sale, err := uuid.Parse(id)
	if err != nil {
		return uuid.Nil
	}
	return sale
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
		// Sales with a command that failed for a passing reason in this
		// batch (5xx, concurrency_conflict: answers not stored for their
		// keys): their later commands are held back, since what they would
		// answer (404 before the open, 409 before the checkout) would be
		// stored and replayed when the till re-sends the batch. A refusal
		// that the same command would meet again (a 400 of the batch, a
		// 403) holds nothing: re-sending could not lift it.
		unsettled := map[uuid.UUID]bool{}
		for i, c := range req.Commands {
			sale := c.saleOf()
			if sale != uuid.Nil && unsettled[sale] {
				results[i] = s.syncFailure(c, heldBack)
				continue
			}
			at, p := checkSyncCommand(i, c, time.Now())
			if p != nil {
				results[i] = s.syncFailure(c, p) // this one only: the rest still run
				continue
			}
			body := []byte(c.Body)
			if t := bytes.TrimSpace(body); len(t) == 0 || string(t) == "null" {
				body = []byte("{}") // as a request without a body reads
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
			if at != nil && ringsUpASale(c.Path) {
				ctx = context.WithValue(ctx, occurredAtKey{}, at.UTC())
			}
			rec := newRecorder()
			commands.ServeHTTP(rec, sub.WithContext(ctx))
			if sale != uuid.Nil && rec.retryable() {
				unsettled[sale] = true
			}
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

// heldBack answers a command of a sale whose earlier command in the batch
// got no final answer. It is not stored for the command's key, and says
// what a till does with a 409 concurrency_conflict: send it again.
var heldBack = problem(http.StatusConflict, "concurrency_conflict",
	"an earlier command of this sale in the batch did not complete; re-send the batch")

// checkSyncCommand refuses a command that is not one sync may replay, and
// returns its occurred_at (nil when absent).
func checkSyncCommand(i int, c syncCommand, now time.Time) (*time.Time, *Problem) {
	field := func(name string) FieldError {
		return FieldError{Field: fmt.Sprintf("commands[%d].%s", i, name), Code: "invalid"}
	}
	at, err := c.occurred()
	switch {
	case !validKey(c.IdempotencyKey):
		return nil, invalid("every command needs its own idempotency_key", field("idempotency_key"))
	case c.Method != http.MethodPost && c.Method != http.MethodDelete && c.Method != http.MethodPut:
		return nil, invalid("method must be POST, PUT or DELETE", field("method"))
	case !strings.HasPrefix(c.Path, "/v1/") || strings.HasPrefix(c.Path, "/v1/pos/") || strings.ContainsAny(c.Path, "?#"):
		return nil, invalid("path must be a /v1 command path", field("path"))
	case err != nil && ringsUpASale(c.Path): // the others ignore it, whatever it holds
		return nil, invalid("occurred_at must be an RFC 3339 time", field("occurred_at"))
	case at != nil && ringsUpASale(c.Path) && (at.After(now.Add(maxClockSkew)) || at.Before(now.Add(-maxOffline))):
		return nil, invalid("occurred_at must be within the last 30 days and not in the future", FieldError{Field: fmt.Sprintf("commands[%d].occurred_at", i), Code: "out_of_range"})
	}
	return at, nil
}

func (s *Server) syncFailure(c syncCommand, p *Problem) syncResult {
	b, _ := json.Marshal(p)
	return syncResult{IdempotencyKey: c.IdempotencyKey, Status: p.Status, Body: b}
}
