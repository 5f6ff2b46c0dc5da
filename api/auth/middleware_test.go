package auth_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"pos/api/auth"
)

func newHS256(t *testing.T) *auth.Verifier {
	t.Helper()
	v, err := auth.NewHS256(testSecret)
	if err != nil {
		t.Fatalf("NewHS256: %v", err)
	}
	return v
}

func TestMiddlewareWithoutTokenCallsOnError(t *testing.T) {
	var gotErr error
	calls := 0
	onError := func(w http.ResponseWriter, r *http.Request, err error) {
		calls++
		gotErr = err
		w.WriteHeader(http.StatusUnauthorized)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("next handler ran for a request without a token")
	})
	rec := httptest.NewRecorder()
	auth.Middleware(newHS256(t), onError)(next).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/transactions", nil))

	if calls != 1 {
		t.Fatalf("onError calls: got %d, want 1", calls)
	}
	if !errors.Is(gotErr, auth.ErrUnauthorized) {
		t.Errorf("onError error: got %v, want ErrUnauthorized", gotErr)
	}
	if got, want := rec.Header().Get("WWW-Authenticate"), "Bearer"; got != want {
		t.Errorf("WWW-Authenticate: got %q, want %q", got, want)
	}
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("status: got %d, want %d (written by onError)", rec.Code, http.StatusUnauthorized)
	}
}

func TestMiddlewareInvalidTokenChallenge(t *testing.T) {
	onError := func(w http.ResponseWriter, r *http.Request, err error) {}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("next handler ran for an invalid token")
	})
	req := httptest.NewRequest(http.MethodGet, "/v1/reports", nil)
	req.Header.Set("Authorization", "Bearer a.b.c")
	rec := httptest.NewRecorder()
	auth.Middleware(newHS256(t), onError)(next).ServeHTTP(rec, req)
	if got, want := rec.Header().Get("WWW-Authenticate"), `Bearer error="invalid_token"`; got != want {
		t.Errorf("WWW-Authenticate: got %q, want %q", got, want)
	}
}

func TestMiddlewarePrincipalDownstream(t *testing.T) {
	token := joseSign(t, jose.HS256, testSecret, "", claims(time.Now(), map[string]any{"role": "MANAGER"}))
	onError := func(w http.ResponseWriter, r *http.Request, err error) {
		t.Errorf("onError called for a valid token: %v", err)
	}
	var got auth.Principal
	var ok bool
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok = auth.FromContext(r.Context())
		w.WriteHeader(http.StatusNoContent)
	})
	req := httptest.NewRequest(http.MethodGet, "/v1/transactions", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	auth.Middleware(newHS256(t), onError)(next).ServeHTTP(rec, req)

	if !ok {
		t.Fatal("FromContext downstream: no principal")
	}
	if got.Subject != "user-1" || got.MerchantID != testMerchant || got.Role != auth.RoleManager {
		t.Errorf("principal downstream: got %+v", got)
	}
	if !got.CanActOnBranch(testBranch1) || got.CanActOnBranch(testMerchant) {
		t.Errorf("principal downstream: branch limits lost: %+v", got.BranchIDs)
	}
	if rec.Code != http.StatusNoContent {
		t.Errorf("status: got %d, want %d", rec.Code, http.StatusNoContent)
	}
}

func TestMiddlewarePanicsOnMissingDependencies(t *testing.T) {
	onError := func(http.ResponseWriter, *http.Request, error) {}
	for name, build := range map[string]func(){
		"nil verifier": func() { auth.Middleware(nil, onError) },
		"nil onError":  func() { auth.Middleware(newHS256(t), nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Middleware did not panic")
				}
			}()
			build()
		})
	}
}

func TestFromContextWithoutPrincipal(t *testing.T) {
	if p, ok := auth.FromContext(t.Context()); ok {
		t.Errorf("FromContext on a bare context: got %+v, true; want false", p)
	}
}
