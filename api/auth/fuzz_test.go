package auth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"pos/api/auth"
)

// FuzzVerify feeds arbitrary strings to Verify. It must never panic; it must
// accept only the exact valid tokens of the seed corpus (strict base64 gives
// every token one spelling, so no mutation of them can still verify) and
// reject everything else with ErrUnauthorized and a zero Principal.
func FuzzVerify(f *testing.F) {
	v, err := auth.NewHS256(testSecret)
	if err != nil {
		f.Fatalf("NewHS256: %v", err)
	}
	rsaKey, _, _ := testRSAKeys(f)
	// Fixed times: the fuzzing engine runs this setup in several worker
	// processes, which must agree on which tokens are the valid seeds.
	now := time.Unix(1_700_000_000, 0)
	long := map[string]any{"exp": time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Unix()}
	valid := map[string]bool{
		joseSign(f, jose.HS256, testSecret, "", claims(now, long)):                                           true,
		joseSign(f, jose.HS256, testSecret, "k", claims(now, with(long, map[string]any{"branch_ids": nil}))): true,
	}
	for token := range valid {
		f.Add(token)
		f.Add(token[:len(token)-1])
		f.Add(strings.ToUpper(token))
	}
	for _, seed := range []string{
		"", "abc", "a.b", "a.b.c", "Bearer", "..", "...", "\x00", strings.Repeat(".", 100),
		handJWT(f, map[string]any{"alg": "none"}, claims(now, nil), nil),
		handJWT(f, map[string]any{"alg": "HS256", "crit": []string{"x"}}, claims(now, nil), testSecret),
		handJWT(f, map[string]any{"alg": "HS256"}, map[string]any{"exp": 1e300}, testSecret),
		joseSign(f, jose.HS256, otherSecret, "", claims(now, nil)),
		joseSign(f, jose.RS256, rsaKey, "", claims(now, nil)),
		joseSign(f, jose.HS256, testSecret, "", claims(now, map[string]any{"role": "SUPERUSER"})),
		joseSign(f, jose.HS256, testSecret, "", claims(now, map[string]any{"branch_ids": []any{"x", 1, nil}})),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		p, err := v.Verify(token)
		if err == nil {
			if !valid[token] {
				t.Fatalf("Verify accepted a token that is not a seed: %q -> %+v", token, p)
			}
			if p.Subject == "" || !p.Role.Valid() || p.MerchantID != testMerchant {
				t.Fatalf("Verify returned an incomplete principal: %+v", p)
			}
			return
		}
		if !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("Verify error %v does not wrap ErrUnauthorized", err)
		}
		if p.Subject != "" || p.Role != "" || len(p.BranchIDs) != 0 || p.MerchantID != uuid.Nil {
			t.Fatalf("Verify returned principal %+v alongside an error", p)
		}
	})
}
