package api

import (
	"testing"
	"time"
)

// An export's dates are the merchant's days, as the daily sales count
// them: each day begins at the first instant whose local date it is, also
// where a clock change skips midnight.
func TestDayStart(t *testing.T) {
	for _, c := range []struct {
		zone, date, want string
	}{
		{"Asia/Jakarta", "2026-12-07", "2026-12-06T17:00:00Z"},
		{"UTC", "2026-12-07", "2026-12-07T00:00:00Z"},
		{"America/Los_Angeles", "2026-03-08", "2026-03-08T08:00:00Z"}, // the clock jumps at 02:00, after midnight
		{"America/Santiago", "2024-09-08", "2024-09-08T04:00:00Z"},    // 00:00 does not exist: the day starts at 01:00 (-03)
		{"America/Santiago", "2024-09-07", "2024-09-07T04:00:00Z"},
		{"America/Havana", "2026-03-08", "2026-03-08T05:00:00Z"},
	} {
		loc, err := time.LoadLocation(c.zone)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := time.Parse(time.DateOnly, c.date)
		got := dayStart(d, loc)
		if got.Format(time.RFC3339) != c.want {
			t.Errorf("%s %s starts at %s, want %s", c.zone, c.date, got.Format(time.RFC3339), c.want)
		}
		// The instant before belongs to the day before; the start to the day.
		if local := got.In(loc).Format(time.DateOnly); local != c.date {
			t.Errorf("%s %s: its start is local date %s", c.zone, c.date, local)
		}
		if local := got.Add(-time.Nanosecond).In(loc).Format(time.DateOnly); local == c.date {
			t.Errorf("%s %s: the instant before its start is on it too", c.zone, c.date)
		}
	}
}
