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
	at := func(major uint64) func() (eventstore.Position, error) {
		return func() (eventstore.Position, error) {
			reads++
			return eventstore.Position{Major: major, Minor: 1}, nil
		}
	}
	if p, _ := c.get("transactions", 3, at(10)); p.Major != 10 || reads != 1 {
		t.Fatalf("first read: %v after %d reads", p, reads)
	}
	if p, _ := c.get("transactions", 3, at(11)); p.Major != 10 || reads != 1 {
		t.Fatalf("within the TTL: %v after %d reads, want the cached 10 and no read", p, reads)
	}
	if p, _ := c.get("transactions", 4, at(5)); p.Major != 5 || reads != 2 {
		t.Fatalf("another partition: %v after %d reads", p, reads)
	}
	time.Sleep(positionTTL + 5*time.Millisecond)
	if p, _ := c.get("transactions", 3, at(12)); p.Major != 12 || reads != 3 {
		t.Fatalf("after the TTL: %v after %d reads, want a fresh 12", p, reads)
	}
	boom := errors.New("down")
	time.Sleep(positionTTL + 5*time.Millisecond)
	if _, err := c.get("transactions", 3, func() (eventstore.Position, error) { return eventstore.Position{}, boom }); !errors.Is(err, boom) {
		t.Fatalf("a failed read: %v, want it reported", err)
	}
}
