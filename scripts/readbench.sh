#!/usr/bin/env bash
# The read side's benchmarks (issue #5; `make bench-read`, also part of
# `make bench`), in one run against the real server:
#
#   1. lag: bin/pos serve (every default: NATS embedded, Redis cache on) on
#      a fresh database pos_readbench; the sales load (cmd/posload, open loop)
#      at SALES_RATE commands/s for SALES_SECONDS, with -read-side: events/s
#      applied by the projections and the lag from append to the commit of
#      the read model (pos.projection.lag, p50/p99 from its buckets in
#      /metrics). Target: p99 <= 100 ms at 1,000 commands/s. Beside it the
#      ceiling: the same sales, with a read side batched a sale at a time,
#      run by PostgreSQL alone (pgbench's sale script,
#      scripts/pgbench-floor.sh, 32 clients), and the share of the two cores
#      the target's rate would take at that ceiling. First the same
#      load at SUSTAINED_RATE commands/s, a rate these two cores carry with
#      their read side, for the pipeline's own lag (no target).
#   2. reads: READ_SALES more complete sales created (each waited for in the
#      read model), then GET /v1/transactions/{id} over them, ids drawn
#      uniformly, with vegeta (posload reads): as fast as CONNECTIONS
#      connections go, then at a fixed READ_RATE requests/s through the same
#      connections; on a freshly started server with the cache on, again with
#      POS_CACHE=off, and on the floor: a bare chi handler in posload's
#      process answering the server's bytes for one sale. Targets: cached
#      max rate >= 0.50 x the bare handler's; cached p99 <= 25 ms at
#      5,000 req/s; cache hit rate > 0.90 over the cached reads (the misses
#      that fill the cache included).
#   3. replay: BenchmarkReplay (projections): Runner.Catchup over a seeded
#      backlog of REPLAY_EVENTS events. Target: >= 20,000 events/s for the
#      sales load's shape (merchants=16); merchants=1 is the best case.
#
# The server is restarted (same database, same Redis) before each read
# phase, and each waits until the projections have nothing left to apply
# (wait_quiet), so each starts from a fresh, idle process: in particular the cache's
# "distrust after a failed invalidation" (cache.Reader bypasses Redis for the
# entry TTL, 5 minutes, after one invalidation timed out) does not carry
# over from the write phases; the summary reports how many invalidations
# failed during them. The floor of a read is the bare handler, measured with
# the same client on the same cores; the writes get the ceiling above.
#
# Prints a summary with ratios and PASS/FAIL; exits 0 when targets are
# missed (as load.sh does) and 1 when the run itself fails. Raw outputs go to
# bench-results/read/. Traffic goes to 127.0.0.1 only; about 8 minutes.
#
# Environment: PGHOST_ADDR (127.0.0.1), SALES_RATE (1000), SUSTAINED_RATE
# (350; 0 skips it), SALES_SECONDS (30), WARMUP_SECONDS (3), MERCHANTS (16),
# READ_SALES (2000), READ_SECONDS (10), READ_WARMUP_SECONDS (2), READ_RATE
# (5000), CONNECTIONS (50), QUIET_SECONDS (35), REPLAY_EVENTS (20000).
set -euo pipefail

cd "$(dirname "$0")/.."
start=$(date +%s)
# shellcheck source=scripts/pgbench-floor.sh
. scripts/pgbench-floor.sh # floor_psql
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh # pick_port, wait_ready, stop_server, mint_tokens

PGHOST_ADDR=${PGHOST_ADDR:-127.0.0.1}
SALES_RATE=${SALES_RATE:-1000}
SALES_SECONDS=${SALES_SECONDS:-30}
SUSTAINED_RATE=${SUSTAINED_RATE:-350}
WARMUP_SECONDS=${WARMUP_SECONDS:-3}
MERCHANTS=${MERCHANTS:-16}
READ_SALES=${READ_SALES:-2000}
READ_SECONDS=${READ_SECONDS:-10}
READ_WARMUP_SECONDS=${READ_WARMUP_SECONDS:-2}
READ_RATE=${READ_RATE:-5000}
CONNECTIONS=${CONNECTIONS:-50}
QUIET_SECONDS=${QUIET_SECONDS:-35}
REPLAY_EVENTS=${REPLAY_EVENTS:-20000}
GO=${GO:-go}
DB=pos_readbench
FLOOR_DB=pos_readbench_pgbench
PGBENCH_SECONDS=${PGBENCH_SECONDS:-10}
OUT=bench-results/read

scripts/services.sh

rm -rf "$OUT"
mkdir -p "$OUT" bin

cleanup() {
	stop_server
	rm -rf "$OUT/data" # the embedded NATS server's streams
	floor_psql -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	floor_psql -d postgres -c "DROP DATABASE IF EXISTS $FLOOR_DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "readbench: building bin/pos and bin/posload" >&2
$GO build -o bin/pos ./cmd/pos
$GO build -o bin/posload ./cmd/posload

floor_psql -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"

pick_port readbench

# start_server NAME [VAR=VALUE...]: bin/pos serve as `make run` does (every
# default) on $DB and $port, its log in $OUT/server-NAME.log.
start_server() {
	local name=$1
	shift
	stop_server
	echo "readbench: starting bin/pos serve ($name) on $base, database $DB" >&2
	env -u EVENTSTORE_URL -u POS_JWKS_URL -u POS_CACHE -u NATS_URL -u POS_READ_SIDE \
		DATABASE_URL="postgres://postgres@$PGHOST_ADDR:5432/$DB?sslmode=disable" POS_ADDR="127.0.0.1:$port" \
		POS_DATA_DIR="$OUT/data" "$@" bin/pos serve >"$OUT/server-$name.log" 2>&1 &
	server_pid=$!
	wait_ready readbench "$OUT/server-$name.log"
}

# metric NAME: the sum of NAME's series on the running server's /metrics.
metric() {
	curl -fsS -m 5 "$base/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

# wait_quiet: waits (at most 5 minutes) until the server's projections and
# process manager have applied nothing for QUIET_SECONDS: the lag phase
# leaves a backlog (the stock process manager's above all), and reads
# measured while it drains would measure the draining too. The window
# exceeds the consumers' AckWait (30 s): messages the stopped server held
# come back only then, and until they do their partitions look quiet.
wait_quiet() {
	local last=-1 same=0 n
	for _ in $(seq 1 300); do
		# Events delivered and applied, and events read to fill gaps (a
		# restarted worker first fills its partitions from the store); a
		# failed scrape counts as a change.
		n=$(($(metric pos_projection_events_total || echo -1) + $(metric pos_projection_gap_fill_reads_total || echo -1)))
		if [ "$n" = "$last" ]; then
			same=$((same + 1))
			[ "$same" -ge "$QUIET_SECONDS" ] && return 0
		else
			same=0
		fi
		last=$n
		sleep 1
	done
	echo "readbench: the projections were still applying after 5 minutes; reading anyway" >&2
}

# posload_run FILE ARGS...: one posload run, its report to $OUT/FILE; fails
# the whole run when posload does.
posload_run() {
	local file=$1
	shift
	floor_psql -d postgres -c CHECKPOINT
	if ! bin/posload "$@" >"$OUT/$file" 2>&1; then
		cat "$OUT/$file" >&2
		echo "readbench: posload $* failed" >&2
		exit 1
	fi
	grep -v '^ROW \|^LAG \|^CACHE ' "$OUT/$file" | sed 's/^/  /' >&2 || true
}

start_server writes

mint_tokens bin/pos "$OUT/tokens.txt" "$MERCHANTS"

# The ceiling, in this session, while the (idle) server is up.
floor_create "$FLOOR_DB"
floor_write_scripts "$OUT"
echo "readbench: pgbench sale (the ceiling), 32 clients, ${PGBENCH_SECONDS}s" >&2
sale_tps=$(floor_pgbench "$FLOOR_DB" "$OUT/sale.sql" 32 "$PGBENCH_SECONDS" "$OUT/pgbench-sale-c32.txt")
floor_psql -d postgres -c "DROP DATABASE IF EXISTS $FLOOR_DB WITH (FORCE)"

# 1. The sales load, with the projections' lag: at a rate the machine
# sustains, then at the target's (each run measures its own events).
if [ "$SUSTAINED_RATE" -gt 0 ]; then
	echo "readbench: sales load, open loop ${SUSTAINED_RATE} commands/s, ${SALES_SECONDS}s" >&2
	posload_run sales-sustained.txt -url "$base" -tokens-file "$OUT/tokens.txt" -server-pid "$server_pid" \
		-name "open-${SUSTAINED_RATE}/s" -mode open -rate "$SUSTAINED_RATE" -duration "${SALES_SECONDS}s" \
		-warmup "${WARMUP_SECONDS}s" -timeout 10s -read-side -json "$OUT/sales-sustained.json"
fi
echo "readbench: sales load, open loop ${SALES_RATE} commands/s, ${SALES_SECONDS}s" >&2
posload_run sales.txt -url "$base" -tokens-file "$OUT/tokens.txt" -server-pid "$server_pid" \
	-name "open-${SALES_RATE}/s" -mode open -rate "$SALES_RATE" -duration "${SALES_SECONDS}s" \
	-warmup "${WARMUP_SECONDS}s" -timeout 10s -read-side -json "$OUT/sales.json"

# 2. The sales to read, each waited for in the read model.
echo "readbench: creating $READ_SALES complete sales to read" >&2
posload_run create.txt reads -url "$base" -tokens-file "$OUT/tokens.txt" -create "$READ_SALES" \
	-ids "$OUT/ids.txt" -server=false
inval_errors=$(metric pos_cache_invalidation_errors_total)
write_fallbacks=$(metric pos_cache_fallbacks_total)

read_flags=(-url "$base" -tokens-file "$OUT/tokens.txt" -ids "$OUT/ids.txt" -connections "$CONNECTIONS"
	-rate "$READ_RATE" -duration "${READ_SECONDS}s" -warmup "${READ_WARMUP_SECONDS}s" -timeout 10s)
start_server cache-on
echo "readbench: waiting for the projections to finish the backlog" >&2
wait_quiet
echo "readbench: reads, cache on" >&2
posload_run reads-cache-on.txt reads "${read_flags[@]}" -label cache-on -json "$OUT/reads-cache-on.json"
start_server cache-off POS_CACHE=off
wait_quiet
echo "readbench: reads, cache off, and the bare handler" >&2
posload_run reads-cache-off.txt reads "${read_flags[@]}" -label cache-off -bare -json "$OUT/reads-cache-off.json"
stop_server
server_errors=$(cat "$OUT"/server-*.log | grep -c '"level":"ERROR"' || true)

# 3. The backlog replay.
echo "readbench: BenchmarkReplay, $REPLAY_EVENTS events" >&2
if ! POS_BENCH_REPLAY_EVENTS=$REPLAY_EVENTS $GO test -run '^$' -bench '^BenchmarkReplay$' -benchtime 1x -timeout 30m \
	./projections/ >"$OUT/replay.txt" 2>&1; then
	cat "$OUT/replay.txt" >&2
	echo "readbench: BenchmarkReplay failed" >&2
	exit 1
fi
sed 's/^/  /' "$OUT/replay.txt" >&2

{
	if [ -f "$OUT/sales-sustained.txt" ]; then grep -h '^LAG \|^ROW ' "$OUT/sales-sustained.txt"; fi
	grep -h '^LAG \|^ROW \|^CACHE ' "$OUT/sales.txt" "$OUT/reads-cache-on.txt" "$OUT/reads-cache-off.txt"
	# BenchmarkReplay/merchants=16-2  1  123 ns/op  20007 events  668.0 events/s
	awk '/^BenchmarkReplay\// { n = $1; sub(/^BenchmarkReplay\//, "", n); sub(/-[0-9]+$/, "", n)
		for (i = 3; i < NF; i++) if ($(i + 1) == "events/s") r = $i; else if ($(i + 1) == "events") e = $i
		print "REPLAY", n, e, r }' "$OUT/replay.txt"
} >"$OUT/rows.txt"

{
	printf '\nRead side (issue #5) against bin/pos serve, %s merchants (%s, %s cores shared by server, PostgreSQL %s, Redis, NATS and load generator)\n' \
		"$MERCHANTS" "$(date -u +%FT%TZ)" "$(nproc)" "$(floor_psql -d postgres -tAc 'SHOW server_version' | awk '{ print $1 }')"
	awk -v rate="$READ_RATE" -v conns="$CONNECTIONS" -v sales="$READ_SALES" -v secs="$READ_SECONDS" \
		-v salesrate="$SALES_RATE" -v salessecs="$SALES_SECONDS" -v inval="$inval_errors" -v wfall="$write_fallbacks" \
		-v sale_tps="$sale_tps" -v cores="$(nproc)" '
		function verdict(ok) { if (!ok) missed++; return ok ? "PASS" : "FAIL" }
		# A lag quantile at the histogram'"'"'s top bound is only known to be above it.
		function ms(v) { return (lag_top > 0 && v >= lag_top) ? sprintf(">%d", lag_top) : sprintf("%.2f", v) }
		# posload -read-side: LAG name events/s p50-ms p99-ms events drained top-bucket-ms
		#   relay-p50-ms relay-p99-ms (-1 from a server without pos_relay_lag_seconds)
		$1 == "LAG" { ln++; lag_name[ln] = $2; lag_eps[ln] = $3; lag50[ln] = $4; lag99[ln] = $5; lag_n[ln] = $6; lag_drained[ln] = $7; lag_top = $8
			relay50[ln] = $9; relay99[ln] = $10 }
		# posload (sales): ROW name sales/s commands/s p50 p95 p99 errors warm-up-errors CPU×4
		$1 == "ROW" && NF == 13 { sales_cmds[$2] = $4; sales_p95[$2] = $6; sales_p99[$2] = $7; sales_err += $8 + $9 }
		# posload reads: ROW name target mode rate ok/s p50 p95 p99 errors warm-up-errors hit-rate
		$1 == "ROW" && NF == 12 { n++; name[n] = $2; target[n] = $3; mode[n] = $4; rps[n] = $6
			p50[n] = $7; p95[n] = $8; p99[n] = $9; err[n] = $10 + $11; hit[n] = $12; key[$3 " " $4] = n; errors += $10 + $11 }
		$1 == "CACHE" && $2 == "cache-on" { hits = $3; misses = $4; falls = $5; rate_on = $6 }
		$1 == "REPLAY" { rn++; rname[rn] = $2; revents[rn] = $3; reps[rn] = $4 }
		END {
			missed = 0
			printf "\n1. Projection lag under the sales load (open loop, %ss each; lag from append to the read model commit)\n", salessecs
			printf "%-14s %10s %14s %11s %11s %9s %12s  %s\n", "scenario", "commands/s", "events/s appl", "lag p50 ms", "lag p99 ms", "events", "cmd p95/p99", "target"
			for (i = 1; i <= ln; i++) {
				nm = lag_name[i]
				t = (nm == "open-" salesrate "/s") ? "p99<=100 " verdict(lag99[i] >= 0 && lag99[i] <= 100) : "- (a rate the cores sustain)"
				printf "%-14s %10.1f %14.1f %11s %11s %9d %5.0f/%-6.0f  %s\n", nm, sales_cmds[nm], lag_eps[i], ms(lag50[i]), ms(lag99[i]), lag_n[i], sales_p95[nm], sales_p99[nm], t
				if (relay50[i] ~ /^[0-9.]+$/ && relay99[i] ~ /^[0-9.]+$/)
					printf "   %s: the part before the broker (append to its acknowledgement, pos_relay_lag_seconds): p50 %s ms, p99 %s ms\n", nm, ms(relay50[i]), ms(relay99[i])
				if (lag_drained[i] != "true") printf "   %s: the projections were still applying 3 minutes after the load: the lag misses the slowest events\n", nm
			}
			if (ln == 0) { print "no lag result"; missed++ }
			printf "   ceiling: PostgreSQL alone (pgbench sale, 32 clients) runs these sales, their read side batched a sale at a time, at %.0f commands/s on all %d cores;\n", sale_tps * 7, cores
			printf "   %d commands/s would take %.2f of them before any server, broker or load generator\n", salesrate, salesrate / (sale_tps * 7)
			if (sales_err > 0) printf "   sales load errors: %d\n", sales_err
			printf "   cache during the writes: %d invalidations failed (each makes that process bypass the cache for 5 min), %d fallbacks\n", inval, wfall

			printf "\n2. GET /v1/transactions/{id}: %s completed sales read uniformly, %ss each after warm-up, at most %s connections\n", sales, secs, conns
			printf "%-20s %10s %8s %8s %8s %7s %8s %9s  %s\n", "scenario", "ok req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "÷ bare", "cache hit", "target"
			bmax = key["bare max"]; bfix = key["bare fixed"]
			for (i = 1; i <= n; i++) {
				b = (mode[i] == "max") ? bmax : bfix
				ratio = (b && rps[b] > 0) ? sprintf("%.2f", rps[i] / rps[b]) : "-"
				t = "-"
				if (target[i] == "cache-on" && mode[i] == "max") t = ">= 0.50 x bare " verdict(b && rps[i] >= 0.5 * rps[b])
				if (target[i] == "cache-on" && mode[i] == "fixed") t = "p99<=25 " verdict(p99[i] <= 25 && err[i] == 0)
				h = (hit[i] >= 0) ? sprintf("%.4f", hit[i]) : "-"
				printf "%-20s %10.1f %8.2f %8.2f %8.2f %7d %8s %9s  %s\n", name[i], rps[i], p50[i], p95[i], p99[i], err[i], ratio, h, t
			}
			printf "cache hit rate over the cache-on reads: %d hits, %d misses, %d fallbacks = %s  > 0.90 %s\n", hits, misses, falls, rate_on, verdict(rate_on + 0 > 0.90)
			printf "errors, sales load and reads (warm-ups included): %d  zero errors %s\n", errors + sales_err, verdict(errors + sales_err == 0)

			printf "\n3. Backlog replay (BenchmarkReplay: Runner.Catchup from Start, every projection)\n"
			printf "%-14s %9s %10s  %s\n", "backlog", "events", "events/s", "target"
			for (i = 1; i <= rn; i++) {
				t = (rname[i] == "merchants=16") ? ">= 20000 " verdict(reps[i] >= 20000) : "- (best case)"
				printf "%-14s %9d %10.0f  %s\n", rname[i], revents[i], reps[i], t
			}
			if (rn == 0) { print "no BenchmarkReplay result"; missed++ }
			print missed > "/dev/stderr"
		}' "$OUT/rows.txt" 2>"$OUT/missed.txt"
	printf '\nserver logs: %s ERROR lines\n' "$server_errors"
	printf 'targets missed: %s; took %ds; raw output in %s/\n' "$(cat "$OUT/missed.txt")" "$(($(date +%s) - start))" "$OUT"
} | tee "$OUT/summary.txt"
