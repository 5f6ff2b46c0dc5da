package consume

import (
	"testing"
	"time"
)

func TestDoublingDelay(t *testing.T) {
	d := doublingDelay{first: time.Second, most: 30 * time.Second}
	for _, tc := range []struct {
		delivered uint64
		want      time.Duration
	}{
		{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second},
		{5, 16 * time.Second}, {6, 30 * time.Second}, {7, 30 * time.Second}, {1 << 62, 30 * time.Second},
	} {
		if got := d.WaitTime(tc.delivered); got != tc.want {
			t.Errorf("after %d deliveries: %v, want %v", tc.delivered, got, tc.want)
		}
	}
}
