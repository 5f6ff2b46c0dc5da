package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Mint returns an HS256 token for p, signed with secret, for the `token`
// subcommand and local development. Its claims are sub, merchant_id, role,
// branch_ids (omitted when p.BranchIDs is empty, meaning every branch), iat and
// nbf (now) and exp (now+ttl), in whole seconds.
//
// Mint refuses what Verify would refuse: a secret shorter than MinSecretLen, a
// blank Subject, a nil MerchantID, an invalid Role, a nil branch id, and a ttl
// that is not positive. It is safe for concurrent use.
func Mint(secret []byte, p Principal, ttl time.Duration, now time.Time) (string, error) {
	switch {
	case len(secret) < MinSecretLen:
		return "", fmt.Errorf("auth: mint: HS256 secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	case ttl <= 0:
		return "", errors.New("auth: mint: ttl must be positive")
	case strings.TrimSpace(p.Subject) == "":
		return "", errors.New("auth: mint: subject is blank")
	case p.MerchantID == uuid.Nil:
		return "", errors.New("auth: mint: merchant id is nil")
	case !p.Role.Valid():
		return "", fmt.Errorf("auth: mint: invalid role %q", p.Role)
	case slices.Contains(p.BranchIDs, uuid.Nil):
		return "", errors.New("auth: mint: nil branch id")
	}
	claims := jwt.MapClaims{
		"sub":         p.Subject,
		"merchant_id": p.MerchantID.String(),
		"role":        string(p.Role),
		"iat":         now.Unix(),
		"nbf":         now.Unix(),
		"exp":         now.Add(ttl).Unix(),
	}
	if len(p.BranchIDs) > 0 {
		ids := make([]string, len(p.BranchIDs))
		for i, id := range p.BranchIDs {
			ids[i] = id.String()
		}
		claims["branch_ids"] = ids
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return token, nil
}
