// Package auth authenticates API callers: it verifies the bearer JWT of each
// request (SPEC.md §3) and turns its claims into a Principal that handlers read
// from the request context.
//
// Two modes exist, chosen by configuration (API.md "Configuration"):
//
//   - HS256 with a shared secret (POS_JWT_SECRET), the default; see NewHS256.
//   - RS256 against a JWKS URL (POS_JWKS_URL); see NewJWKS. HS256 is then
//     refused.
//
// The algorithm is pinned by the mode, never taken from the token, so
// "alg: none" and key-confusion tokens (HS256 signed with an RSA public key)
// are rejected. Every failure wraps ErrUnauthorized, which the API's single
// error writer maps to 401 `unauthorized`; this package writes no response
// bodies.
package auth

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"pos/domain"
)

// ErrUnauthorized is wrapped by every error of Verify and Middleware: the
// caller is not authenticated (no token, bad signature, disallowed algorithm,
// expired, missing or malformed claim). The API maps it to 401 `unauthorized`.
// The wrapping messages say why in fixed words and never contain the token or
// any part of it.
var ErrUnauthorized = errors.New("unauthorized")

const (
	// Leeway is the clock skew tolerated on exp, nbf and iat: a token is
	// accepted up to Leeway after its exp, and up to Leeway before its nbf or
	// iat. It covers small drift between the issuer's clock and ours.
	Leeway = 30 * time.Second

	// MinSecretLen is the shortest HS256 secret accepted, in bytes: the
	// SHA-256 output size, as RFC 7518 §3.2 requires.
	MinSecretLen = 32

	// MaxTokenLen bounds the token Verify will parse, in bytes, so oversized
	// input is refused before any decoding. It leaves room for a few hundred
	// branch ids.
	MaxTokenLen = 16 << 10

	// minRSABits is the smallest RSA modulus accepted from a JWKS.
	minRSABits = 2048

	// JWKS fetching: jwksRefreshInterval bounds how long a key removed from
	// the set (revoked) stays trusted; a token whose kid is unknown triggers
	// an early refresh, rate-limited by keyfunc to one per five minutes, and
	// waits for it at most jwksUnknownKIDWait (so unknown-kid floods cannot
	// park requests for long).
	jwksRefreshInterval = 15 * time.Minute
	jwksHTTPTimeout     = 10 * time.Second
	jwksUnknownKIDWait  = 5 * time.Second

	// A Verifier remembers up to verifiedTokens tokens it verified, each
	// for at most verifiedMaxAge: a client sends the same token with every
	// request, and checking its signature and decoding its claims again each
	// time was a tenth of a cached read's CPU. The time claims are checked
	// again on every use, so a remembered token still expires on time;
	// verifiedMaxAge only bounds how long a token signed by a key since
	// removed from the JWKS stays accepted past jwksRefreshInterval.
	verifiedTokens = 4096
	verifiedMaxAge = time.Minute
)

// Verifier checks bearer tokens and extracts their Principal. Build one with
// NewHS256 or NewJWKS; the zero value is not usable.
//
// A Verifier is safe for concurrent use by multiple goroutines: after
// construction its state is read-only, except the JWKS key cache, which
// keyfunc guards itself, and the memory of verified tokens (a thread-safe
// LRU).
type Verifier struct {
	parser    *jwt.Parser    // read-only after construction, hence safe to share
	validator *jwt.Validator // the parser's claims rules, for remembered tokens
	keyFunc   jwt.Keyfunc
	stop      context.CancelFunc // ends the JWKS refresh goroutine; nil for HS256
	once      sync.Once
	// verified remembers tokens whose signature and claims checked out
	// (see verifiedTokens); failures are never remembered.
	verified *lru.Cache[string, verifiedToken]
	now      func() time.Time
}

// verifiedToken is what a Verifier remembers of a token it verified.
type verifiedToken struct {
	claims    jwt.MapClaims // read-only once remembered
	principal Principal
	at        time.Time // when it was verified
}

// claimRules are the claims rules that jwt checks itself: exp required,
// exp/nbf/iat checked with Leeway against now.
func claimRules(now func() time.Time) []jwt.ParserOption {
	return []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(now),
	}
}

// newVerifier returns a Verifier for exactly one algorithm, with strict
// (canonical) base64url so a token has exactly one valid spelling.
func newVerifier(alg string, keyFunc jwt.Keyfunc, stop context.CancelFunc) *Verifier {
	v := &Verifier{keyFunc: keyFunc, stop: stop, now: time.Now}
	v.verified, _ = lru.New[string, verifiedToken](verifiedTokens) // only a size <= 0 fails
	now := func() time.Time { return v.now() }
	v.parser = jwt.NewParser(append(claimRules(now), jwt.WithValidMethods([]string{alg}), jwt.WithStrictDecoding())...)
	v.validator = jwt.NewValidator(claimRules(now)...)
	return v
}

// NewHS256 returns a Verifier accepting only HS256 tokens signed with secret.
// It refuses a secret shorter than MinSecretLen bytes. The secret is copied.
func NewHS256(secret []byte) (*Verifier, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("auth: HS256 secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	}
	key := append([]byte(nil), secret...)
	return newVerifier(jwt.SigningMethodHS256.Alg(), func(*jwt.Token) (any, error) { return key, nil }, nil), nil
}

// NewJWKS returns a Verifier accepting only RS256 tokens signed by an RSA key
// (2048 bits or more) of the JWK Set at jwksURL. HS256 and every other
// algorithm are refused.
//
// The set is fetched before NewJWKS returns, which fails if the fetch fails or
// the set holds no usable RSA key, so a wrong URL stops the server at start.
// Afterwards keyfunc refreshes the set in the background every 15 minutes, and
// early (rate-limited) when a token names an unknown kid; a failed refresh
// keeps the cached keys and is logged by keyfunc to slog.Default. A token
// without a kid is tried against every cached RSA key.
//
// ctx bounds the first fetch and the life of the background refresh: pass a
// context that lives as long as the Verifier (the server's), not a request's.
// Close stops the refresh too. jwksURL must be an absolute http or https URL;
// use https anywhere but a loopback development setup.
func NewJWKS(ctx context.Context, jwksURL string) (*Verifier, error) {
	u, err := url.Parse(jwksURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("auth: JWKS URL must be an absolute http(s) URL")
	}
	ctx, cancel := context.WithCancel(ctx)
	noErrorOnFirstFetch := false
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{jwksURL}, keyfunc.Override{
		HTTPTimeout:               jwksHTTPTimeout,
		NoErrorReturnFirstHTTPReq: &noErrorOnFirstFetch,
		RateLimitWaitMax:          jwksUnknownKIDWait,
		RefreshInterval:           jwksRefreshInterval,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("auth: load JWKS from %s: %w", u.Redacted(), err)
	}
	set, err := kf.VerificationKeySet(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("auth: read JWKS from %s: %w", u.Redacted(), err)
	}
	if len(usableRSAKeys(set.Keys)) == 0 {
		cancel()
		return nil, fmt.Errorf("auth: JWKS at %s holds no RSA key of %d bits or more", u.Redacted(), minRSABits)
	}
	return newVerifier(jwt.SigningMethodRS256.Alg(), rsaOnly(kf.Keyfunc), cancel), nil
}

// Close stops the background JWKS refresh. The Verifier keeps verifying with
// the keys it has cached, but no longer learns new ones. Cancelling the ctx
// given to NewJWKS has the same effect. Close is idempotent, safe for
// concurrent use and a no-op for an HS256 Verifier; it always returns nil.
func (v *Verifier) Close() error {
	v.once.Do(func() {
		if v.stop != nil {
			v.stop()
		}
	})
	return nil
}

// errNoUsableKey is returned by rsaOnly when keyfunc found only keys that are
// not RSA public keys of minRSABits or more (e.g. an "oct" key in the set).
var errNoUsableKey = errors.New("no usable RSA key")

// rsaOnly wraps keyfunc's lookup so that only RSA public keys of at least
// minRSABits bits ever reach the RS256 check, whatever else the set holds.
func rsaOnly(lookup jwt.Keyfunc) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		key, err := lookup(t)
		if err != nil {
			return nil, err
		}
		switch k := key.(type) {
		case *rsa.PublicKey:
			if len(usableRSAKeys([]jwt.VerificationKey{k})) == 1 {
				return k, nil
			}
		case jwt.VerificationKeySet:
			if keys := usableRSAKeys(k.Keys); len(keys) > 0 {
				return jwt.VerificationKeySet{Keys: keys}, nil
			}
		}
		return nil, errNoUsableKey
	}
}

// usableRSAKeys returns the keys that are RSA public keys of minRSABits or
// more.
func usableRSAKeys(keys []jwt.VerificationKey) []jwt.VerificationKey {
	var out []jwt.VerificationKey
	for _, key := range keys {
		if k, ok := key.(*rsa.PublicKey); ok && k.N != nil && k.N.BitLen() >= minRSABits {
			out = append(out, k)
		}
	}
	return out
}

// Verify checks token (the bare JWT, without "Bearer ") and returns its
// Principal. It checks, in order: size, structure, the pinned algorithm, the
// signature, exp (required), nbf and iat (each with Leeway), no "crit" header,
// then the claims: sub a non-blank string of at most domain.MaxActorLen
// characters (the actor every command records); merchant_id a canonical, non-nil
// UUID string; role one of the four roles; branch_ids, when present, a
// non-empty array of canonical, non-nil UUID strings.
//
// A token verified less than a minute ago is not parsed again: only its
// time claims are checked anew (see verifiedTokens).
//
// Every error wraps ErrUnauthorized and never contains the token. Verify is
// safe for concurrent use.
func (v *Verifier) Verify(token string) (Principal, error) {
	switch {
	case token == "":
		return Principal{}, unauthorized("missing token")
	case len(token) > MaxTokenLen:
		return Principal{}, unauthorized("token too large")
	}
	if seen, ok := v.verified.Get(token); ok && v.now().Sub(seen.at) < verifiedMaxAge {
		if err := v.validator.Validate(seen.claims); err != nil {
			v.verified.Remove(token)
			return Principal{}, unauthorized(reason(err))
		}
		p := seen.principal
		p.BranchIDs = slices.Clone(p.BranchIDs)
		return p, nil
	}
	at := v.now()
	claims := jwt.MapClaims{}
	parsed, err := v.parser.ParseWithClaims(token, claims, v.keyFunc)
	if err != nil {
		return Principal{}, unauthorized(reason(err))
	}
	if _, ok := parsed.Header["crit"]; ok {
		// RFC 7515 §4.1.11: extensions we do not understand must be refused.
		return Principal{}, unauthorized("unsupported critical header")
	}
	p, err := principalFromClaims(claims)
	if err != nil {
		return Principal{}, err
	}
	kept := p
	kept.BranchIDs = slices.Clone(p.BranchIDs) // the caller may change p's
	v.verified.Add(token, verifiedToken{claims: claims, principal: kept, at: at})
	return p, nil
}

// unauthorized wraps ErrUnauthorized with a fixed reason.
func unauthorized(why string) error {
	return fmt.Errorf("%w: %s", ErrUnauthorized, why)
}

// reason turns a jwt error into fixed words. The jwt and keyfunc messages are
// not passed on because some quote parts of the token (e.g. its kid).
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable token (unknown algorithm or key)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "invalid signature or disallowed algorithm"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing exp claim"
	case errors.Is(err, jwt.ErrInvalidType):
		return "time claim of invalid type"
	default:
		return "invalid token"
	}
}

// principalFromClaims applies the claim rules of Verify to signed, time-valid
// claims.
func principalFromClaims(c jwt.MapClaims) (Principal, error) {
	sub, ok := c["sub"].(string)
	if !ok || strings.TrimSpace(sub) == "" || utf8.RuneCountInString(sub) > domain.MaxActorLen {
		return Principal{}, unauthorized("missing or invalid sub claim")
	}
	merchantRaw, _ := c["merchant_id"].(string)
	merchant, ok := parseID(merchantRaw)
	if !ok {
		return Principal{}, unauthorized("missing or invalid merchant_id claim")
	}
	roleRaw, _ := c["role"].(string)
	role := Role(roleRaw)
	if !role.Valid() {
		return Principal{}, unauthorized("missing or invalid role claim")
	}
	p := Principal{Subject: sub, MerchantID: merchant, Role: role}
	if raw, present := c["branch_ids"]; present {
		// Present but empty (or null) is refused rather than read as "every
		// branch": an issuer meaning "no branch" must not grant all of them.
		list, ok := raw.([]any)
		if !ok || len(list) == 0 {
			return Principal{}, unauthorized("invalid branch_ids claim")
		}
		p.BranchIDs = make([]uuid.UUID, 0, len(list))
		for _, item := range list {
			s, _ := item.(string)
			id, ok := parseID(s)
			if !ok {
				return Principal{}, unauthorized("invalid branch_ids claim")
			}
			p.BranchIDs = append(p.BranchIDs, id)
		}
	}
	return p, nil
}

// parseID accepts only the canonical 36-character UUID form (either case) and
// refuses uuid.Nil; uuid.Parse alone would also take braces, "urn:uuid:" and
// undashed forms.
func parseID(s string) (uuid.UUID, bool) {
	if len(s) != 36 {
		return uuid.Nil, false
	}
	id, err := uuid.Parse(s)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, false
	}
	return id, true
}
