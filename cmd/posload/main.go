// Command posload drives complete sales (open, three items, checkout, cash,
// complete) against a running pos server with vegeta, closed loop (N clients
// as fast as they go) or open loop (a fixed command rate, which does not
// suffer from coordinated omission), and reports sales/s, commands/s and
// latency percentiles. scripts/load.sh (`make load`) runs the scenarios
// beside pgbench; `posload -h` lists the flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "posload:", err)
		os.Exit(1)
	}
}
