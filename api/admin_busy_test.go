package api_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// Once GET /v1/admin/projections shows a rebuild ended (rebuild null,
// last_rebuild done), a new POST must not be told 409 "a rebuild is already
// running".
func TestRebuildRightAfterTheLastOneEndedIsNot409(t *testing.T) {
	e := newEnvWith(t, options{reads: true, rebuilds: true, consistencyWait: 2 * time.Second})
	merchant, branch := uuid.New(), uuid.New()
	admin := newUser(t, merchant, "ADMIN")
	e.paidSale(&admin, branch)
	conflicts := 0
	for i := range 20 {
		r := e.do(request{method: "POST", path: "/v1/admin/projections/merchant_settings/rebuild", user: &admin})
		if r.status == 409 {
			conflicts++
			t.Logf("POST %d: 409 %s, though the last rebuild had ended", i, r.body)
			continue
		}
		id := must(t, r, 202).str(t, "rebuild_id")
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			p := projectionOf(t, must(t, e.do(request{method: "GET", path: "/v1/admin/projections", user: &admin}), 200), "merchant_settings")
			if l, ok := p["last_rebuild"].(map[string]any); ok && l["rebuild_id"] == id && p["rebuild"] == nil {
				if l["state"] != "done" {
					t.Fatalf("rebuild %s: %v", id, l)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rebuild %s did not end", id)
			}
		}
	}
	if conflicts > 0 {
		t.Fatalf("%d of 20 POSTs answered 409 invalid_state right after GET showed no rebuild running", conflicts)
	}
}
