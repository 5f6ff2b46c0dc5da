package auth_test

import (
	"testing"

	"github.com/google/uuid"

	"pos/api/auth"
)

func TestCanActOnBranch(t *testing.T) {
	other := uuid.MustParse("0190a4c2-7a3e-7c4b-9f61-0000000000ff")
	limited := auth.Principal{Role: auth.RoleCashier, BranchIDs: []uuid.UUID{testBranch1, testBranch2}}
	unlimited := auth.Principal{Role: auth.RoleManager}
	cases := []struct {
		name   string
		p      auth.Principal
		branch uuid.UUID
		want   bool
	}{
		{name: "limited, listed branch", p: limited, branch: testBranch2, want: true},
		{name: "limited, other branch", p: limited, branch: other, want: false},
		{name: "unlimited, any branch", p: unlimited, branch: other, want: true},
		{name: "unlimited, nil branch", p: unlimited, branch: uuid.Nil, want: false},
		{name: "limited, nil branch", p: limited, branch: uuid.Nil, want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.CanActOnBranch(tc.branch); got != tc.want {
				t.Errorf("CanActOnBranch: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRoleHelpers(t *testing.T) {
	cases := []struct {
		role           auth.Role
		valid, cmds    bool
		managerOrAdmin bool
	}{
		{role: auth.RoleCashier, valid: true, cmds: true},
		{role: auth.RoleManager, valid: true, cmds: true, managerOrAdmin: true},
		{role: auth.RoleAdmin, valid: true, cmds: true, managerOrAdmin: true},
		{role: auth.RoleAuditor, valid: true},
		{role: "cashier"},
		{role: ""},
	}
	for _, tc := range cases {
		t.Run(string(tc.role), func(t *testing.T) {
			p := auth.Principal{Role: tc.role}
			if got := tc.role.Valid(); got != tc.valid {
				t.Errorf("Valid: got %v, want %v", got, tc.valid)
			}
			if got := p.CanIssueCommands(); got != tc.cmds {
				t.Errorf("CanIssueCommands: got %v, want %v", got, tc.cmds)
			}
			if got := p.HasRole(auth.RoleManager, auth.RoleAdmin); got != tc.managerOrAdmin {
				t.Errorf("HasRole(MANAGER, ADMIN): got %v, want %v", got, tc.managerOrAdmin)
			}
		})
	}
}

func TestContextRoundTrip(t *testing.T) {
	want := auth.Principal{Subject: "s", MerchantID: testMerchant, Role: auth.RoleAdmin}
	got, ok := auth.FromContext(auth.NewContext(t.Context(), want))
	if !ok || !principalsEqual(got, want) {
		t.Errorf("FromContext(NewContext(p)): got %+v, %v; want %+v, true", got, ok, want)
	}
}
