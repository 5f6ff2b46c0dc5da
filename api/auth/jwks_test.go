package auth_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"pos/api/auth"
)

func TestVerifyJWKS(t *testing.T) {
	serverKey, stranger, _ := testRSAKeys(t)
	octSecret := []byte("an-oct-key-someone-put-in-the-jwks-0123")
	srv := newJWKSServer(t,
		publicJWK(serverKey, "k1"),
		jose.JSONWebKey{Key: octSecret, KeyID: "oct1", Algorithm: string(jose.HS256), Use: "sig"},
	)
	v, err := auth.NewJWKS(t.Context(), srv.URL)
	if err != nil {
		t.Fatalf("NewJWKS: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })

	now := time.Now()
	c := claims(now, nil)
	want := &auth.Principal{
		Subject:    "user-1",
		MerchantID: testMerchant,
		Role:       auth.RoleCashier,
		BranchIDs:  []uuid.UUID{testBranch1, testBranch2},
	}
	pemKey := publicKeyPEM(t, &serverKey.PublicKey)
	derKey := publicKeyDER(t, &serverKey.PublicKey)
	pkcs1Key := x509.MarshalPKCS1PublicKey(&serverKey.PublicKey)

	cases := []authCase{
		{name: "valid RS256 token", token: joseSign(t, jose.RS256, serverKey, "k1", c), want: want},
		{name: "valid RS256 token without kid", token: joseSign(t, jose.RS256, serverKey, "", c), want: want},
		{name: "lowercase bearer scheme accepted", headers: []string{"bearer " + joseSign(t, jose.RS256, serverKey, "k1", c)}, want: want},

		{name: "HS256 signed with the public key PEM as secret", token: joseSign(t, jose.HS256, pemKey, "k1", c)},
		{name: "HS256 signed with the public key PEM, no kid", token: joseSign(t, jose.HS256, pemKey, "", c)},
		{name: "HS256 signed with the public key DER as secret", token: joseSign(t, jose.HS256, derKey, "k1", c)},
		{name: "HS256 signed with the PKCS#1 public key as secret", token: joseSign(t, jose.HS256, pkcs1Key, "k1", c)},
		{name: "HS256 signed with an oct key of the set", token: joseSign(t, jose.HS256, octSecret, "oct1", c)},
		{name: "RS256 naming the oct key's kid", token: joseSign(t, jose.RS256, serverKey, "oct1", c)},
		{name: "signed by another RSA key under the known kid", token: joseSign(t, jose.RS256, stranger, "k1", c)},
		{name: "signed by another RSA key, no kid", token: joseSign(t, jose.RS256, stranger, "", c)},
		{name: "kid not in the set", token: joseSign(t, jose.RS256, stranger, "unknown-kid", c)},
		{name: "RS512 with the right key", token: joseSign(t, jose.RS512, serverKey, "k1", c)},
		{name: "PS256 with the right key", token: joseSign(t, jose.PS256, serverKey, "k1", c)},
		{name: "alg none", token: handJWT(t, map[string]any{"alg": "none", "kid": "k1"}, c, nil)},
		{name: "expired", token: joseSign(t, jose.RS256, serverKey, "k1", claims(now, map[string]any{"exp": now.Add(-time.Hour).Unix()}))},
		{name: "missing merchant_id", token: joseSign(t, jose.RS256, serverKey, "k1", claims(now, map[string]any{"merchant_id": nil}))},
		{name: "role SUPERUSER", token: joseSign(t, jose.RS256, serverKey, "k1", claims(now, map[string]any{"role": "SUPERUSER"}))},
		{name: "no Authorization header", noHeader: true},
	}
	runAuthCases(t, v, cases)
}

func TestJWKSKeyRotation(t *testing.T) {
	oldKey, _, newKey := testRSAKeys(t)
	srv := newJWKSServer(t, publicJWK(oldKey, "old"))
	v, err := auth.NewJWKS(t.Context(), srv.URL)
	if err != nil {
		t.Fatalf("NewJWKS: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	c := claims(time.Now(), nil)

	// The issuer publishes a new key and retires the old one; the first token
	// naming the new kid makes the Verifier refetch the set.
	srv.set(publicJWK(newKey, "new"))
	before := srv.hits.Load()
	if _, err := v.Verify(joseSign(t, jose.RS256, newKey, "new", c)); err != nil {
		t.Fatalf("Verify with the rotated-in key: %v", err)
	}
	if got := srv.hits.Load() - before; got != 1 {
		t.Errorf("JWKS fetches on unknown kid: got %d, want 1", got)
	}
	_, err = v.Verify(joseSign(t, jose.RS256, oldKey, "old", c))
	if !errors.Is(err, auth.ErrUnauthorized) {
		t.Errorf("Verify with the retired key: got %v, want ErrUnauthorized", err)
	}
}

func TestNewJWKSRefuses(t *testing.T) {
	serverKey, _, _ := testRSAKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatalf("generate small key: %v", err)
	}
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	notJSON := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<html>login</html>"))
	}))
	t.Cleanup(notJSON.Close)

	cases := []struct {
		name string
		url  string
	}{
		{name: "empty URL", url: ""},
		{name: "relative URL", url: "/jwks.json"},
		{name: "other scheme", url: "file:///etc/jwks.json"},
		{name: "server error", url: failing.URL},
		{name: "not JSON", url: notJSON.URL},
		{name: "empty set", url: newJWKSServer(t).URL},
		{name: "only a symmetric key", url: newJWKSServer(t, jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "o", Use: "sig"}).URL},
		{name: "only a 1024-bit RSA key", url: newJWKSServer(t, publicJWK(small, "small")).URL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := auth.NewJWKS(t.Context(), tc.url)
			if err == nil {
				_ = v.Close()
				t.Fatal("NewJWKS: got nil error, want refusal")
			}
		})
	}
	t.Run("a usable set is accepted", func(t *testing.T) {
		v, err := auth.NewJWKS(t.Context(), newJWKSServer(t, publicJWK(serverKey, "k1")).URL)
		if err != nil {
			t.Fatalf("NewJWKS: %v", err)
		}
		if err := v.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := v.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestJWKSVerifyConcurrent(t *testing.T) {
	serverKey, _, _ := testRSAKeys(t)
	v, err := auth.NewJWKS(t.Context(), newJWKSServer(t, publicJWK(serverKey, "k1")).URL)
	if err != nil {
		t.Fatalf("NewJWKS: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	good := joseSign(t, jose.RS256, serverKey, "k1", claims(time.Now(), nil))
	bad := joseSign(t, jose.RS256, serverKey, "nope", claims(time.Now(), nil))
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			token, wantOK := good, true
			if i%2 == 1 {
				token, wantOK = bad, false
			}
			_, err := v.Verify(token)
			if (err == nil) != wantOK {
				errs <- errors.New("unexpected outcome")
				return
			}
			errs <- nil
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
