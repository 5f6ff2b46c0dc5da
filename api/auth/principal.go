package auth

import (
	"context"
	"slices"

	"github.com/google/uuid"
)

// Role is what a principal may do within its merchant (SPEC.md §3). Only the
// four constants below are valid; matching is exact and case-sensitive, so
// "cashier" is not a role.
type Role string

// The roles a token can carry.
const (
	// RoleCashier rings up sales at the branches its token allows.
	RoleCashier Role = "CASHIER"
	// RoleManager may also void, refund over policy, adjust stock and post
	// manual journal entries (with approvals where SPEC.md §4.3 says so).
	RoleManager Role = "MANAGER"
	// RoleAdmin administers the merchant, projections included.
	RoleAdmin Role = "ADMIN"
	// RoleAuditor reads everything of its merchant, audit endpoints included,
	// and can issue no command.
	RoleAuditor Role = "AUDITOR"
)

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool {
	switch r {
	case RoleCashier, RoleManager, RoleAdmin, RoleAuditor:
		return true
	}
	return false
}

// Principal is the authenticated caller, taken from a verified token. The
// merchant comes from here only, never from a path or a body.
//
// A Principal is a plain value and safe to share between goroutines as long as
// nobody modifies BranchIDs; treat it as read-only.
type Principal struct {
	// Subject is the token's "sub": the user, never empty.
	Subject string
	// MerchantID is the tenant every read and command is confined to; never
	// uuid.Nil in a verified principal.
	MerchantID uuid.UUID
	// Role is one of the four valid roles.
	Role Role
	// BranchIDs limits the principal to these branches of its merchant. Empty
	// means every branch. The limit applies whatever the role.
	BranchIDs []uuid.UUID
}

// CanActOnBranch reports whether p may act on branch: true when p is not
// limited to branches (BranchIDs empty) or branch is one of BranchIDs. It
// reports false for uuid.Nil, which names no branch.
func (p Principal) CanActOnBranch(branch uuid.UUID) bool {
	if branch == uuid.Nil {
		return false
	}
	return len(p.BranchIDs) == 0 || slices.Contains(p.BranchIDs, branch)
}

// CanIssueCommands reports whether p's role may issue commands at all: every
// valid role except AUDITOR. Individual commands may demand more (HasRole).
func (p Principal) CanIssueCommands() bool { return p.Role.Valid() && p.Role != RoleAuditor }

// HasRole reports whether p's role is one of roles, e.g.
// p.HasRole(RoleManager, RoleAdmin) for voids and stock adjustments.
func (p Principal) HasRole(roles ...Role) bool {
	return p.Role.Valid() && slices.Contains(roles, p.Role)
}

// principalKey is the context key under which Middleware stores the Principal.
type principalKey struct{}

// NewContext returns a copy of ctx carrying p. Middleware uses it after a
// token is verified; tests of downstream handlers may use it directly.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the Principal stored by Middleware (or NewContext) and
// whether there was one. Handlers behind Middleware can rely on ok being true;
// anywhere else a false ok must be treated as unauthenticated (fail closed).
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
