package auth

import (
	"net/http"
	"strings"
)

// Middleware authenticates every request with v before it reaches next.
//
// It reads exactly one "Authorization: Bearer <jwt>" header (the scheme is
// case-insensitive, as RFC 9110 §11.1 says; one or more spaces may separate
// it from the token; anything after the token is refused), verifies the
// token and stores the Principal in the request context (read it with
// FromContext). On any failure it sets "WWW-Authenticate: Bearer" (RFC 6750
// §3), calls onError with an error wrapping ErrUnauthorized, and does not call
// next. It writes no body itself: onError is the API's problem+json writer,
// which maps ErrUnauthorized to 401 `unauthorized`.
//
// Middleware panics if v or onError is nil: that is a wiring mistake, caught
// when the router is built. The returned handler is safe for concurrent use.
func Middleware(v *Verifier, onError func(w http.ResponseWriter, r *http.Request, err error)) func(http.Handler) http.Handler {
	if v == nil || onError == nil {
		panic("auth: Middleware needs a Verifier and an error writer")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, err := bearerToken(r.Header)
			var p Principal
			if err == nil {
				p, err = v.Verify(token)
			}
			if err != nil {
				challenge := "Bearer"
				if token != "" {
					challenge = `Bearer error="invalid_token"`
				}
				w.Header().Set("WWW-Authenticate", challenge)
				onError(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), p)))
		})
	}
}

// bearerToken returns the token of the request's single Authorization header
// in the Bearer scheme. Its errors wrap ErrUnauthorized and never quote the
// header.
func bearerToken(h http.Header) (string, error) {
	values := h.Values("Authorization")
	switch len(values) {
	case 0:
		return "", unauthorized("missing bearer token")
	case 1:
	default:
		return "", unauthorized("more than one Authorization header")
	}
	scheme, rest, _ := strings.Cut(values[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", unauthorized("authorization scheme is not Bearer")
	}
	token := strings.TrimLeft(rest, " ")
	switch {
	case token == "":
		return "", unauthorized("missing bearer token")
	case strings.ContainsAny(token, " \t,"):
		return "", unauthorized("more than one bearer token")
	}
	return token, nil
}
