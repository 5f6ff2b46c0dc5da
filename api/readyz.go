package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"pos/eventstore"
)

// Readiness (API.md "Operations"): GET /readyz answers 200 when the event
// store, the database and every Config.ReadyChecks dependency (the broker,
// the read store) answer within readyTimeout, and 503 otherwise. A failing
// Config.OptionalChecks dependency (the cache, without which reads fall back
// to PostgreSQL) is reported "degraded" and does not fail readiness.
//
// The body is {"status": "ok" | "degraded" | "unavailable", "checks": {name:
// "ok" | "unreachable" | "degraded"}}; why a check failed is logged, not
// answered.

// ReadyCheck reports whether a dependency answers: nil when it does. It
// should return once ctx is done; /readyz counts one still running then as
// failed.
type ReadyCheck func(ctx context.Context) error

// readyTimeout bounds all of /readyz's checks, which run concurrently.
const readyTimeout = 2 * time.Second

// Values of /readyz's "checks" and "status".
const (
	readyOK          = "ok"
	readyUnreachable = "unreachable"
	readyDegraded    = "degraded"
	readyUnavailable = "unavailable"
)

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	type check struct {
		name     string
		run      ReadyCheck
		optional bool
	}
	checks := []check{
		{name: "event_store", run: func(ctx context.Context) error {
			_, err := s.store.ReadAll(ctx, eventstore.Start, eventstore.Filter{}, 1)
			return err
		}},
		{name: "database", run: s.pool.Ping},
	}
	builtin := func(name string) bool { return name == "event_store" || name == "database" }
	for name, run := range s.readyChecks {
		if !builtin(name) && run != nil {
			checks = append(checks, check{name: name, run: run})
		}
	}
	for name, run := range s.optionalChecks {
		if _, required := s.readyChecks[name]; !builtin(name) && !required && run != nil {
			checks = append(checks, check{name: name, run: run, optional: true})
		}
	}

	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(checks)) // a late check never blocks
	for i, c := range checks {
		go func() {
			defer func() {
				if v := recover(); v != nil {
					results <- result{i, fmt.Errorf("check panicked: %v", v)}
				}
			}()
			results <- result{i, c.run(ctx)}
		}()
	}
	errs := make([]error, len(checks))
	done := make([]bool, len(checks))
	for range checks {
		select {
		case res := <-results:
			errs[res.i], done[res.i] = res.err, true
		case <-ctx.Done(): // out of time: take what has answered, no more
			select {
			case res := <-results:
				errs[res.i], done[res.i] = res.err, true
			default:
			}
		}
	}

	out := make(map[string]string, len(checks))
	status, code := readyOK, http.StatusOK
	for i, c := range checks {
		err := errs[i]
		if !done[i] {
			err = fmt.Errorf("no answer within %s: %w", readyTimeout, context.Cause(ctx))
		}
		switch {
		case err == nil:
			out[c.name] = readyOK
		case c.optional:
			out[c.name] = readyDegraded
			if status == readyOK {
				status = readyDegraded
			}
			s.log.WarnContext(r.Context(), "readiness: optional dependency unreachable; serving without it", "check", c.name, "err", err)
		default:
			out[c.name] = readyUnreachable
			status, code = readyUnavailable, http.StatusServiceUnavailable
			s.log.WarnContext(r.Context(), "readiness: dependency unreachable", "check", c.name, "err", err)
		}
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": out})
}
