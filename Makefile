# Two commands matter: `make run` and `make test`. Both start PostgreSQL,
# Redis and NATS when they do not answer (scripts/services.sh).

GO       ?= go
FUZZTIME ?= 30s

.PHONY: run test bench load fuzz migrate verify services build lint

run: services
	$(GO) run ./cmd/pos serve

test: services lint
	$(GO) tool gotestsum --format pkgname-and-test-fails -- -race -count=1 -timeout 20m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Benchmarks of the event store beside pgbench on the same server, at the
# same concurrency (scripts/bench.sh prints the ratios), then complete sales
# against the running server beside pgbench (scripts/load.sh).
bench: services
	scripts/bench.sh
	scripts/load.sh
	scripts/readbench.sh
	scripts/stockbench.sh
	$(MAKE) --no-print-directory bench-audit
	$(MAKE) --no-print-directory bench-rebuild

# The audit benchmarks: BenchmarkVerify (pos verify over every merchant)
# and BenchmarkExport (the NDJSON export, with its peak heap) at 100k and 1M
# events. Each seeds its own database (about 30 s per million events).
.PHONY: bench-audit
bench-audit: services
	$(GO) test -run '^$$' -bench '^Benchmark(Verify|Export)$$' -benchtime 3x -timeout 30m ./audit/ ./api/

# The read side (issue #5), in one run: projection lag under the sales load,
# GET /v1/transactions/{id} with the Redis cache on, off and against a bare
# chi handler (vegeta), and BenchmarkReplay (scripts/readbench.sh).
.PHONY: bench-read
bench-read: services
	scripts/readbench.sh

# A rebuild of every projection (pos rebuild all) beside the live runner's
# replay of the same backlog in the same run (BenchmarkRebuild, projections):
# events/s of each and their ratio. POS_BENCH_REPLAY_EVENTS sets the backlog.
.PHONY: bench-rebuild
bench-rebuild: services
	$(GO) test -run '^$$' -bench '^BenchmarkRebuild$$' -benchtime 2x -timeout 30m ./projections/

# The stock benchmark (issue #6), in one run: the sales load, 64 clients
# closed loop, on one hot SKU (one stock ledger) and on the whole catalogue,
# against this tree and against 2adb7ca (before stock reservations): sales/s
# ratio (target >= 0.70), p99, conflict retries per sale
# (scripts/stockbench.sh).
.PHONY: bench-stock
bench-stock: services
	scripts/stockbench.sh

# Only the sales load scenarios (vegeta, closed and open loop) beside pgbench.
load: services
	scripts/load.sh

# Every fuzz target of every package, each for FUZZTIME (go test -fuzz runs
# one target at a time). Findings land in testdata/fuzz/ as regression cases.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

migrate: services
	$(GO) run ./cmd/pos migrate

verify: services migrate
	$(GO) run ./cmd/pos verify

build:
	$(GO) build -o bin/pos ./cmd/pos

services:
	@scripts/services.sh
