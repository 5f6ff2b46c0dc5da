package auth_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"pos/api/auth"
	"pos/domain"
)

// authCase is one row of a verification table. token goes to Verify and, as
// "Bearer <token>", through Middleware; headers, when set, replace that
// Authorization header (and the case is then about Middleware only).
type authCase struct {
	name     string
	token    string
	headers  []string // Authorization values; nil means "Bearer " + token
	noHeader bool     // send no Authorization header at all
	want     *auth.Principal
}

func TestVerifyHS256(t *testing.T) {
	v, err := auth.NewHS256(testSecret)
	if err != nil {
		t.Fatalf("NewHS256: %v", err)
	}
	rsaKey, _, _ := testRSAKeys(t)
	now := time.Now()
	hs := func(edits map[string]any) string {
		return joseSign(t, jose.HS256, testSecret, "", claims(now, edits))
	}
	valid := hs(nil)
	cashier := &auth.Principal{
		Subject:    "user-1",
		MerchantID: testMerchant,
		Role:       auth.RoleCashier,
		BranchIDs:  []uuid.UUID{testBranch1, testBranch2},
	}
	hsHeader := map[string]any{"alg": "HS256", "typ": "JWT"}

	cases := []authCase{
		{name: "valid token", token: valid, want: cashier},
		{name: "valid token without branch_ids", token: hs(map[string]any{"branch_ids": nil, "role": "MANAGER"}),
			want: &auth.Principal{Subject: "user-1", MerchantID: testMerchant, Role: auth.RoleManager}},
		{name: "valid token by hand-built HMAC", token: handJWT(t, hsHeader, claims(now, nil), testSecret), want: cashier},
		{name: "each role accepted", token: hs(map[string]any{"role": "AUDITOR", "branch_ids": nil}),
			want: &auth.Principal{Subject: "user-1", MerchantID: testMerchant, Role: auth.RoleAuditor}},
		{name: "expired within leeway accepted", token: hs(map[string]any{"exp": now.Add(-10 * time.Second).Unix()}), want: cashier},
		{name: "lowercase bearer scheme accepted", token: valid, headers: []string{"bearer " + valid}, want: cashier},
		{name: "uppercase BEARER scheme accepted", token: valid, headers: []string{"BEARER " + valid}, want: cashier},

		{name: "alg none with empty signature", token: handJWT(t, map[string]any{"alg": "none"}, claims(now, nil), nil)},
		{name: "alg None mixed case", token: handJWT(t, map[string]any{"alg": "None"}, claims(now, nil), nil)},
		{name: "alg none with HMAC signature kept", token: func() string {
			parts := strings.Split(valid, ".")
			none := handJWT(t, map[string]any{"alg": "none"}, claims(now, nil), nil)
			return none + parts[2]
		}()},
		{name: "no alg header", token: handJWT(t, map[string]any{"typ": "JWT"}, claims(now, nil), testSecret)},
		{name: "wrong secret", token: joseSign(t, jose.HS256, otherSecret, "", claims(now, nil))},
		{name: "tampered claims", token: func() string {
			parts := strings.Split(valid, ".")
			forged := handJWT(t, hsHeader, claims(now, map[string]any{"role": "ADMIN"}), otherSecret)
			return strings.Join([]string{parts[0], strings.Split(forged, ".")[1], parts[2]}, ".")
		}()},
		{name: "HS512 with the right secret", token: joseSign(t, jose.HS512, append(slices.Clone(testSecret), testSecret...), "", claims(now, nil))},
		{name: "RS256 token given to HS256 mode", token: joseSign(t, jose.RS256, rsaKey, "", claims(now, nil))},
		{name: "expired", token: hs(map[string]any{"exp": now.Add(-time.Hour).Unix()})},
		{name: "nbf in the future", token: hs(map[string]any{"nbf": now.Add(time.Hour).Unix()})},
		{name: "iat in the future", token: hs(map[string]any{"iat": now.Add(time.Hour).Unix()})},
		{name: "missing exp", token: hs(map[string]any{"exp": nil})},
		{name: "exp zero", token: hs(map[string]any{"exp": 0})},
		{name: "exp as string", token: hs(map[string]any{"exp": "9999999999"})},
		{name: "missing sub", token: hs(map[string]any{"sub": nil})},
		{name: "empty sub", token: hs(map[string]any{"sub": ""})},
		{name: "blank sub", token: hs(map[string]any{"sub": "  "})},
		{name: "sub not a string", token: hs(map[string]any{"sub": 42})},
		{name: "sub longer than any aggregate records", token: hs(map[string]any{"sub": strings.Repeat("u", domain.MaxActorLen+1)})},
		{name: "missing merchant_id", token: hs(map[string]any{"merchant_id": nil})},
		{name: "merchant_id not a uuid", token: hs(map[string]any{"merchant_id": "not-a-uuid"})},
		{name: "merchant_id nil uuid", token: hs(map[string]any{"merchant_id": uuid.Nil.String()})},
		{name: "merchant_id without dashes", token: hs(map[string]any{"merchant_id": strings.ReplaceAll(testMerchant.String(), "-", "")})},
		{name: "merchant_id urn form", token: hs(map[string]any{"merchant_id": "urn:uuid:" + testMerchant.String()})},
		{name: "merchant_id not a string", token: hs(map[string]any{"merchant_id": 7})},
		{name: "missing role", token: hs(map[string]any{"role": nil})},
		{name: "role SUPERUSER", token: hs(map[string]any{"role": "SUPERUSER"})},
		{name: "role in lowercase", token: hs(map[string]any{"role": "cashier"})},
		{name: "role as array", token: hs(map[string]any{"role": []string{"ADMIN"}})},
		{name: "branch_ids with a bad uuid", token: hs(map[string]any{"branch_ids": []string{testBranch1.String(), "nope"}})},
		{name: "branch_ids with nil uuid", token: hs(map[string]any{"branch_ids": []string{uuid.Nil.String()}})},
		{name: "branch_ids not an array", token: hs(map[string]any{"branch_ids": testBranch1.String()})},
		{name: "branch_ids of numbers", token: hs(map[string]any{"branch_ids": []int{1, 2}})},
		{name: "branch_ids empty array", token: hs(map[string]any{"branch_ids": []string{}})},
		{name: "unknown critical header", token: handJWT(t,
			map[string]any{"alg": "HS256", "crit": []string{"exp-ext"}, "exp-ext": true}, claims(now, nil), testSecret)},
		{name: "padded base64", token: strings.Replace(valid, ".", "=.", 1)},
		{name: "too large", token: hs(map[string]any{"pad": strings.Repeat("x", auth.MaxTokenLen)})},

		{name: "empty string", token: ""},
		{name: "abc", token: "abc"},
		{name: "a.b", token: "a.b"},
		{name: "a.b.c", token: "a.b.c"},
		{name: "four segments", token: valid + ".x"},
		{name: "the word Bearer", token: "Bearer"},

		{name: "no Authorization header", noHeader: true},
		{name: "Bearer without token", headers: []string{"Bearer"}},
		{name: "Bearer with blank token", headers: []string{"Bearer   "}},
		{name: "Basic credentials", headers: []string{"Basic dXNlcjpwYXNzd29yZA=="}},
		{name: "Basic with a valid JWT", headers: []string{"Basic " + valid}},
		{name: "scheme glued to token", headers: []string{"Bearer" + valid}},
		{name: "two tokens", headers: []string{"Bearer " + valid + " " + valid}},
		{name: "two tokens comma separated", headers: []string{"Bearer " + valid + ",Bearer " + valid}},
		{name: "two Authorization headers", headers: []string{"Bearer " + valid, "Bearer " + valid}},
	}
	runAuthCases(t, v, cases)
}

// runAuthCases checks each case through Verify (unless it is about headers)
// and through Middleware.
func runAuthCases(t *testing.T, v *auth.Verifier, cases []authCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.headers == nil && !tc.noHeader {
				got, err := v.Verify(tc.token)
				checkOutcome(t, "Verify", tc, got, err)
			}
			headers := tc.headers
			if headers == nil && !tc.noHeader {
				headers = []string{"Bearer " + tc.token}
			}
			got, err, called := serve(t, v, headers)
			if called == (tc.want == nil) {
				t.Errorf("Middleware: next called = %v, want %v", called, tc.want != nil)
			}
			checkOutcome(t, "Middleware", tc, got, err)
		})
	}
}

// checkOutcome compares a verification result with the case's expectation.
func checkOutcome(t *testing.T, via string, tc authCase, got auth.Principal, err error) {
	t.Helper()
	if tc.want != nil {
		if err != nil {
			t.Fatalf("%s: got error %v, want principal", via, err)
		}
		if !principalsEqual(got, *tc.want) {
			t.Errorf("%s: got principal %+v, want %+v", via, got, *tc.want)
		}
		return
	}
	if err == nil {
		t.Fatalf("%s: got principal %+v, want an error", via, got)
	}
	t.Logf("%s: %v", via, err)
	if !errors.Is(err, auth.ErrUnauthorized) {
		t.Errorf("%s: got error %v, want one wrapping ErrUnauthorized", via, err)
	}
	if !principalsEqual(got, auth.Principal{}) {
		t.Errorf("%s: got principal %+v alongside an error, want the zero Principal", via, got)
	}
	assertNoEcho(t, err, append(slices.Clone(tc.headers), tc.token)...)
}

// assertNoEcho fails if err's message quotes any segment of the inputs.
func assertNoEcho(t *testing.T, err error, inputs ...string) {
	t.Helper()
	msg := err.Error()
	for _, in := range inputs {
		for _, field := range strings.FieldsFunc(in, func(r rune) bool { return r == '.' || r == ' ' || r == ',' }) {
			if len(field) >= 8 && strings.Contains(msg, field) {
				t.Errorf("error %q echoes part of the input", msg)
				return
			}
		}
	}
}

// serve sends one request with the given Authorization values through
// Middleware and reports the principal seen downstream or the error given to
// onError, and whether the next handler ran.
func serve(t *testing.T, v *auth.Verifier, authorization []string) (got auth.Principal, err error, called bool) {
	t.Helper()
	onErrorCalls := 0
	onError := func(w http.ResponseWriter, r *http.Request, e error) {
		onErrorCalls++
		err = e
		w.WriteHeader(http.StatusUnauthorized)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		p, ok := auth.FromContext(r.Context())
		if !ok {
			t.Error("next: no principal in context")
		}
		got = p
	})
	req := httptest.NewRequest(http.MethodGet, "/v1/transactions", nil)
	for _, a := range authorization {
		req.Header.Add("Authorization", a)
	}
	rec := httptest.NewRecorder()
	auth.Middleware(v, onError)(next).ServeHTTP(rec, req)
	if called && onErrorCalls != 0 {
		t.Errorf("onError called %d times although next ran", onErrorCalls)
	}
	if !called && onErrorCalls != 1 {
		t.Errorf("onError called %d times, want 1", onErrorCalls)
	}
	if !called && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", rec.Header().Get("WWW-Authenticate"))
	}
	if rec.Body.Len() != 0 {
		t.Errorf("middleware wrote a body %q; only onError may", rec.Body.String())
	}
	return got, err, called
}

func principalsEqual(a, b auth.Principal) bool {
	return a.Subject == b.Subject && a.MerchantID == b.MerchantID && a.Role == b.Role &&
		slices.Equal(a.BranchIDs, b.BranchIDs)
}

func TestNewHS256RefusesShortSecrets(t *testing.T) {
	for _, n := range []int{0, 1, 16, auth.MinSecretLen - 1} {
		if _, err := auth.NewHS256(make([]byte, n)); err == nil {
			t.Errorf("NewHS256 with a %d-byte secret: got nil error, want refusal", n)
		}
	}
	if _, err := auth.NewHS256(make([]byte, auth.MinSecretLen)); err != nil {
		t.Errorf("NewHS256 with a %d-byte secret: %v", auth.MinSecretLen, err)
	}
}

func TestNewHS256CopiesTheSecret(t *testing.T) {
	secret := slices.Clone(testSecret)
	v, err := auth.NewHS256(secret)
	if err != nil {
		t.Fatalf("NewHS256: %v", err)
	}
	for i := range secret {
		secret[i] = 0
	}
	token := joseSign(t, jose.HS256, testSecret, "", claims(time.Now(), nil))
	if _, err := v.Verify(token); err != nil {
		t.Errorf("Verify after the caller wiped its secret: %v", err)
	}
}
