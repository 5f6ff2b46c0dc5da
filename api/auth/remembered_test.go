package auth_test

import (
	"errors"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"pos/api/auth"
)

// A remembered token (verified less than VerifiedMaxAge ago) skips the
// signature, never the time claims: it still expires on time, and what a
// caller does to the principal it got does not leak into the next one.
func TestRememberedTokensStillExpire(t *testing.T) {
	v, err := auth.NewHS256(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Truncate(time.Second)
	now := t0
	auth.SetClock(v, func() time.Time { return now })
	token := joseSign(t, jose.HS256, testSecret, "", claims(t0, map[string]any{"exp": t0.Add(5 * time.Second).Unix()}))

	first, err := v.Verify(token)
	if err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	first.BranchIDs[0] = uuid.Nil // a careless caller

	now = t0.Add(5*time.Second + auth.Leeway - time.Second) // within exp + leeway
	again, err := v.Verify(token)
	if err != nil {
		t.Fatalf("remembered token within its leeway: %v", err)
	}
	if again.BranchIDs[0] != testBranch1 {
		t.Fatalf("remembered principal changed by a caller: branch %s", again.BranchIDs[0])
	}

	now = t0.Add(5*time.Second + auth.Leeway + time.Second)
	if now.Sub(t0) >= auth.VerifiedMaxAge {
		t.Fatal("the test must stay within VerifiedMaxAge to exercise the remembered path")
	}
	if _, err := v.Verify(token); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("remembered token past exp + leeway: err %v, want unauthorized", err)
	}
}

// A token refused once is refused again, and a token with another signature
// is never taken for a remembered one.
func TestRefusalsAreNotRemembered(t *testing.T) {
	v, err := auth.NewHS256(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := joseSign(t, jose.HS256, testSecret, "", claims(now, nil))
	if _, err := v.Verify(good); err != nil {
		t.Fatal(err)
	}
	forged := joseSign(t, jose.HS256, []byte("another-secret-0123456789-abcdefghijk"), "", claims(now, nil))
	for range 2 {
		if _, err := v.Verify(forged); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("forged token: err %v, want unauthorized", err)
		}
	}
	early := joseSign(t, jose.HS256, testSecret, "", claims(now, map[string]any{"nbf": now.Add(time.Hour).Unix()}))
	for range 2 {
		if _, err := v.Verify(early); !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("token not valid yet: err %v, want unauthorized", err)
		}
	}
}
