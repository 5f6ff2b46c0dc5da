package commands

import "context"

// An outside write is one a command makes apart from the store its Handlers
// were built over: a stock ledger's append on Deps.Ledgers, which commits on
// its own and outlives a request whose transaction rolls back.

type guardKey struct{}

// WithOutsideWriteGuard returns ctx with guard, which every command that
// writes outside (see above) calls first, before it takes any stream lock,
// so that guard may wait for another request without holding up this
// process's commands. A caller whose transaction decides whether the
// request may have effects at all (an idempotency key another request
// holds) refuses them there: the command returns guard's error and writes
// nothing. guard is called again for each such command of the request, on
// the command's goroutine, and must answer alike.
func WithOutsideWriteGuard(ctx context.Context, guard func(context.Context) error) context.Context {
	return context.WithValue(ctx, guardKey{}, guard)
}

// guardOutside runs ctx's outside-write guard, if it has one.
func guardOutside(ctx context.Context) error {
	if guard, ok := ctx.Value(guardKey{}).(func(context.Context) error); ok {
		return guard(ctx)
	}
	return nil
}
