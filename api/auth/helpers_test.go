package auth_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
)

// Test tokens are built with go-jose or by hand (JSON + crypto/hmac), never
// with golang-jwt, which is what the server verifies with: a bug shared by
// signer and verifier would otherwise go unseen.

var (
	testSecret  = []byte("test-secret-0123456789-abcdefghijklmnop") // 39 bytes
	otherSecret = []byte("another-secret-0123456789-abcdefghijklm")

	testMerchant = uuid.MustParse("0190a4c2-7a3e-7c4b-9f61-2f1d3c4b5a69")
	testBranch1  = uuid.MustParse("0190a4c2-7a3e-7c4b-9f61-000000000001")
	testBranch2  = uuid.MustParse("0190a4c2-7a3e-7c4b-9f61-000000000002")
)

// rsaKeys are generated once per test binary: 2048-bit generation is slow
// under -race.
var rsaKeys = sync.OnceValues(func() ([3]*rsa.PrivateKey, error) {
	var keys [3]*rsa.PrivateKey
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return keys, err
		}
		keys[i] = k
	}
	return keys, nil
})

// testRSAKeys returns the server's key, a stranger's key and a rotation key.
func testRSAKeys(t testing.TB) (server, stranger, rotated *rsa.PrivateKey) {
	t.Helper()
	keys, err := rsaKeys()
	if err != nil {
		t.Fatalf("generate RSA keys: %v", err)
	}
	return keys[0], keys[1], keys[2]
}

// claims returns valid claims for now, changed by edits: a nil value deletes
// the claim.
func claims(now time.Time, edits map[string]any) map[string]any {
	c := map[string]any{
		"sub":         "user-1",
		"merchant_id": testMerchant.String(),
		"role":        "CASHIER",
		"branch_ids":  []string{testBranch1.String(), testBranch2.String()},
		"iat":         now.Unix(),
		"nbf":         now.Unix(),
		"exp":         now.Add(time.Hour).Unix(),
	}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// joseSign signs claims with go-jose as a compact JWS, adding a kid header
// when kid is not empty.
func joseSign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, c map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatalf("new %s signer: %v", alg, err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("marshal claims: %v", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("sign %s: %v", alg, err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return s
}

// b64 is the JWS base64url encoding without padding.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// handJWT builds a compact JWS by hand: header and claims as JSON, then the
// HMAC-SHA256 of the signing input under secret, or an empty signature when
// secret is nil (as "alg: none" tokens have).
func handJWT(t testing.TB, header, c map[string]any, secret []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatalf("marshal header: %v", err)
	}
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("marshal claims: %v", err)
	}
	input := b64(h) + "." + b64(p)
	if secret == nil {
		return input + "."
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil))
}

// publicKeyPEM and publicKeyDER are the encodings an attacker would try as
// an HMAC secret in the key-confusion attack.
func publicKeyPEM(t testing.TB, k *rsa.PublicKey) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: publicKeyDER(t, k)})
}

func publicKeyDER(t testing.TB, k *rsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatalf("marshal public key: %v", err)
	}
	return der
}

// jwksServer serves a JWK Set built with go-jose. set replaces the keys
// served; hits counts the fetches.
type jwksServer struct {
	*httptest.Server
	mu   sync.Mutex
	keys []jose.JSONWebKey
	hits atomic.Int64
}

func newJWKSServer(t testing.TB, keys ...jose.JSONWebKey) *jwksServer {
	t.Helper()
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, err := json.Marshal(jose.JSONWebKeySet{Keys: s.keys})
		s.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(keys ...jose.JSONWebKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = keys
}

// publicJWK is the public half of k as a signing JWK for RS256.
func publicJWK(k *rsa.PrivateKey, kid string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"}
}

// with returns a copy of m with the edits applied (nil deletes).
func with(m map[string]any, edits map[string]any) map[string]any {
	out := maps.Clone(m)
	for k, v := range edits {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}
