// Command pos is the point-of-sale backend: one binary whose subcommands run
// the server, apply migrations and verify the event store's hash chains.
// Run `pos help` for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultGCPercent is the garbage collector's target when GOGC is not set:
// the heap may grow to three times the live data before a collection,
// rather than Go's two. The request paths allocate much and live data is
// small, so that costs little memory: on cached reads, the most
// allocation-bound path, it gave 9-27 % more requests a second. Under a
// tight memory limit, set GOMEMLIMIT (or GOGC) as well.
const defaultGCPercent = 200

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A log reader that went away (the `| tee` of a terminal's Ctrl-C) makes
	// writes to stderr fail instead of killing the process mid-shutdown.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the usage was printed, as asked
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pos:", err)
		os.Exit(1)
	}
}
