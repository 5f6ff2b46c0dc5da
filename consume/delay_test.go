package consume

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
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

// A retried attempt is logged as a warning, with its error and fields; once
// the consumer is closing, as the drained logger would (its quieting).
func TestRetriesAreWarnings(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	c := &Consumer{}
	l := retryLogger{drainedLogger{watermill.NewSlogLogger(log), c}, log}.With(watermill.LogFields{"handler": "projector_p03"})
	l.Error("Error occurred, retrying", errors.New("context canceled"), watermill.LogFields{"retry_no": 1})
	line := buf.String()
	for _, want := range []string{`"level":"WARN"`, `"err":"context canceled"`, `"retry_no":1`, `"handler":"projector_p03"`} {
		if !strings.Contains(line, want) {
			t.Errorf("retry logged as %s, want %s in it", line, want)
		}
	}
}
