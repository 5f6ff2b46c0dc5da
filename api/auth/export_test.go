package auth

import "time"

// SetClock makes v read the time from now, for tests of remembered tokens.
func SetClock(v *Verifier, now func() time.Time) { v.now = now }

// VerifiedMaxAge is verifiedMaxAge, for tests.
const VerifiedMaxAge = verifiedMaxAge
