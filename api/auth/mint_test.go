package auth_test

import (
	"crypto/hmac"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"pos/api/auth"
)

func TestMintRoundTrip(t *testing.T) {
	v := newHS256(t)
	for _, p := range []auth.Principal{
		{Subject: "cashier-7", MerchantID: testMerchant, Role: auth.RoleCashier, BranchIDs: []uuid.UUID{testBranch1}},
		{Subject: "admin-1", MerchantID: testMerchant, Role: auth.RoleAdmin},
		{Subject: "auditor-1", MerchantID: testMerchant, Role: auth.RoleAuditor},
	} {
		t.Run(p.Subject, func(t *testing.T) {
			token, err := auth.Mint(testSecret, p, time.Hour, time.Now())
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			got, err := v.Verify(token)
			if err != nil {
				t.Fatalf("Verify(Mint(p)): %v", err)
			}
			if !principalsEqual(got, p) {
				t.Errorf("round trip: got %+v, want %+v", got, p)
			}
		})
	}
}

// TestMintClaims reads a minted token with go-jose, not with the library
// that minted it, and checks its header and claims.
func TestMintClaims(t *testing.T) {
	now := time.Unix(1_760_000_000, 0)
	p := auth.Principal{Subject: "u", MerchantID: testMerchant, Role: auth.RoleManager}
	token, err := auth.Mint(testSecret, p, 15*time.Minute, now)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	obj, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.HS256})
	if err != nil {
		t.Fatalf("go-jose parse: %v", err)
	}
	payload, err := obj.Verify(testSecret)
	if err != nil {
		t.Fatalf("go-jose verify: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatalf("claims JSON: %v", err)
	}
	want := map[string]any{
		"sub":         "u",
		"merchant_id": testMerchant.String(),
		"role":        "MANAGER",
		"iat":         float64(now.Unix()),
		"nbf":         float64(now.Unix()),
		"exp":         float64(now.Add(15 * time.Minute).Unix()),
	}
	if len(got) != len(want) {
		t.Errorf("claims: got %v, want exactly %v (branch_ids omitted when empty)", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("claim %s: got %v, want %v", k, got[k], w)
		}
	}
	if _, err := obj.Verify(otherSecret); err == nil {
		t.Error("go-jose verified the minted token with another secret")
	}
	if hmac.Equal(testSecret, otherSecret) {
		t.Fatal("test secrets must differ")
	}
}

func TestMintedTokenExpires(t *testing.T) {
	p := auth.Principal{Subject: "u", MerchantID: testMerchant, Role: auth.RoleCashier}
	token, err := auth.Mint(testSecret, p, time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	if _, err := newHS256(t).Verify(token); !errors.Is(err, auth.ErrUnauthorized) {
		t.Errorf("Verify of an expired minted token: got %v, want ErrUnauthorized", err)
	}
}

func TestMintRefuses(t *testing.T) {
	good := auth.Principal{Subject: "u", MerchantID: testMerchant, Role: auth.RoleCashier}
	cases := []struct {
		name   string
		secret []byte
		p      auth.Principal
		ttl    time.Duration
	}{
		{name: "short secret", secret: []byte("short"), p: good, ttl: time.Hour},
		{name: "zero ttl", secret: testSecret, p: good, ttl: 0},
		{name: "negative ttl", secret: testSecret, p: good, ttl: -time.Minute},
		{name: "blank subject", secret: testSecret, p: auth.Principal{Subject: " ", MerchantID: testMerchant, Role: auth.RoleCashier}, ttl: time.Hour},
		{name: "nil merchant", secret: testSecret, p: auth.Principal{Subject: "u", Role: auth.RoleCashier}, ttl: time.Hour},
		{name: "invalid role", secret: testSecret, p: auth.Principal{Subject: "u", MerchantID: testMerchant, Role: "SUPERUSER"}, ttl: time.Hour},
		{name: "nil branch", secret: testSecret, p: auth.Principal{Subject: "u", MerchantID: testMerchant, Role: auth.RoleCashier, BranchIDs: []uuid.UUID{uuid.Nil}}, ttl: time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if token, err := auth.Mint(tc.secret, tc.p, tc.ttl, time.Now()); err == nil {
				t.Errorf("Mint: got token %q, want an error", token)
			}
		})
	}
}
