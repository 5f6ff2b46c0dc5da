package eventstore

import (
	"context"
	"fmt"
	"time"
)

// FollowOptions tunes Follow.
type FollowOptions struct {
	Filter Filter
	// BatchSize is how many events one read fetches; 0 means 500.
	BatchSize int
	// Idle is how long to wait after reaching the head before reading again;
	// 0 means 100ms.
	Idle time.Duration
	// MaxIdle, when above Idle, lets the wait grow while the feed stays
	// quiet: it doubles after each read at the head that found nothing,
	// up to MaxIdle, and is Idle again once a read finds events or Wake
	// fires. A quiet feed then costs few reads, and the first event after
	// a quiet spell that Wake does not announce waits up to MaxIdle.
	MaxIdle time.Duration
	// Wake, when set, cuts an idle wait short (a backend's append
	// notification, for example).
	Wake <-chan struct{}
}

// Follow reads the global feed after position from and calls handle with each
// batch, in order, until ctx ends or handle fails. At the head it polls every
// Idle. handle sees each event once per call of Follow; a caller that
// checkpoints and restarts resumes from its checkpoint, so delivery across
// restarts is at least once.
func Follow(ctx context.Context, store Store, from Position, opts FollowOptions, handle func(context.Context, []RecordedEvent) error) error {
	batch := opts.BatchSize
	if batch <= 0 {
		batch = 500
	}
	batch = min(batch, MaxReadLimit)
	idle := opts.Idle
	if idle <= 0 {
		idle = 100 * time.Millisecond
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	pos := from
	wait := idle
	for {
		events, err := store.ReadAll(ctx, pos, opts.Filter, batch)
		if err != nil {
			return fmt.Errorf("follow after %s: %w", pos, err)
		}
		if len(events) > 0 {
			if err := handle(ctx, events); err != nil {
				return err
			}
			pos = events[len(events)-1].Position
			wait = idle
		}
		if len(events) == batch {
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-opts.Wake:
			if !timer.Stop() {
				<-timer.C
			}
			wait = idle
		case <-timer.C:
			if len(events) == 0 {
				wait = min(2*wait, max(opts.MaxIdle, idle))
			}
		}
	}
}
