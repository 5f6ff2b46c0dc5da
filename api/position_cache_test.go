package api

import (
	"errors"
	"testing"
	"time"

	"pos/eventstore"
)

func TestPositionCache(t *testing.T) {
	var c positionCache
	reads := 0
	at := func(major uint64) func() (map[int]eventstore.Position, error) {
		return func() (map[int]eventstore.Position, error) {
			reads++
			return map[int]eventstore.Position{3: {Major: major, Minor: 1}, 4: {Major: major / 2, Minor: 1}}, nil
		}
	}
	if p, _ := c.get("transactions", 3, at(10)); p.Major != 10 || reads != 1 {
		t.Fatalf("first read: %v after %d reads", p, reads)
	}
	if p, _ := c.get("transactions", 3, at(11)); p.Major != 10 || reads != 1 {
		t.Fatalf("within the TTL: %v after %d reads, want the cached 10 and no read", p, reads)
	}
	if p, _ := c.get("transactions", 4, at(11)); p.Major != 5 || reads != 1 {
		t.Fatalf("another partition within the TTL: %v after %d reads, want 5 from the same reading", p, reads)
	}
	if p, _ := c.get("transactions", 7, at(11)); p != eventstore.Start || reads != 1 {
		t.Fatalf("a partition without checkpoint: %v after %d reads, want Start", p, reads)
	}
	if p, _ := c.get("daily_sales", 3, at(40)); p.Major != 40 || reads != 2 {
		t.Fatalf("another projection: %v after %d reads", p, reads)
	}
	time.Sleep(positionTTL + 5*time.Millisecond)
	if p, _ := c.get("transactions", 3, at(12)); p.Major != 12 || reads != 3 {
		t.Fatalf("after the TTL: %v after %d reads, want a fresh 12", p, reads)
	}
	time.Sleep(positionTTL + 5*time.Millisecond)
	if p, _ := c.get("transactions", 3, at(8)); p.Major != 12 || reads != 4 {
		t.Fatalf("a reading behind the last one: %v after %d reads, want 12 kept (checkpoints never move back)", p, reads)
	}
	boom := errors.New("down")
	time.Sleep(positionTTL + 5*time.Millisecond)
	if _, err := c.get("transactions", 3, func() (map[int]eventstore.Position, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("a failed read: %v, want it reported", err)
	}
}
