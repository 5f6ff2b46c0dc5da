package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
)

// Problem is an RFC 9457 problem document with the stable code of API.md.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Code   string       `json:"code"`
	Detail string       `json:"detail,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
	// SKUs names the short SKUs of an insufficient_stock problem.
	SKUs []string `json:"skus,omitempty"`
	// RetryAfter, when set, becomes a Retry-After header (seconds).
	RetryAfter int `json:"-"`
}

// FieldError names one invalid input field.
type FieldError struct {
	Field string `json:"field"`
	Code  string `json:"code"`
}

// Error lets a *Problem travel as an error from a handler to writeError.
func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail) }

// problem builds a Problem whose detail is safe to show to the client.
func problem(status int, code, detail string) *Problem {
	return &Problem{Type: "urn:pos:problem:" + code, Title: http.StatusText(status), Status: status, Code: code, Detail: detail}
}

// Problems the API answers without consulting the domain.
var (
	errForbidden      = problem(http.StatusForbidden, "forbidden", "this role or branch may not do that")
	errNotFound       = problem(http.StatusNotFound, "not_found", "no such resource")
	errTooLarge       = problem(http.StatusRequestEntityTooLarge, "payload_too_large", "the body is larger than 1 MiB")
	errMediaType      = problem(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
	errUnauthorized   = problem(http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
	errKeyReused      = problem(http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was used with another request")
	errConflict       = problem(http.StatusConflict, "concurrency_conflict", "the resource kept changing; retry")
	errVersion        = problem(http.StatusPreconditionFailed, "version_mismatch", "If-Match does not match the current version")
	errInternal       = problem(http.StatusInternalServerError, "internal", "the server failed; the request may be retried with the same Idempotency-Key")
	errMethodNotAllow = problem(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this path")
)

// invalid is a 400 invalid_request naming the offending fields.
func invalid(detail string, fields ...FieldError) *Problem {
	p := problem(http.StatusBadRequest, "invalid_request", detail)
	p.Errors = fields
	return p
}

// errorMapper turns a domain or command error into a Problem, or returns
// nil for errors it does not know. The API's router installs the mapping of
// every layer it serves (see mapError).
type errorMapper func(error) *Problem

// writeError is the one place an error becomes an HTTP response. A Problem
// is written as is; known errors are mapped; anything else is logged with
// its cause and answered 500 with a generic body: internal text never
// reaches the client.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, mapErr errorMapper, err error) {
	var p *Problem
	if !errors.As(err, &p) {
		p = mapErr(err)
	}
	if p == nil {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		p = errInternal
	}
	writeProblem(w, p)
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	body, err := json.Marshal(p)
	if err != nil { // a Problem always marshals; keep the response well-formed anyway
		body = []byte(`{"type":"urn:pos:problem:internal","title":"Internal Server Error","status":500,"code":"internal"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}
