#!/usr/bin/env bash
# The event store's benchmarks beside pgbench on the same server, at the same
# concurrency (`make bench`). Prints the table to stdout; raw outputs go to
# bench-results/.
#
# pgbench is the physical floor (scripts/pgbench-floor.sh, shared with
# scripts/load.sh): the same row (same columns, ~200-byte JSON data and
# ~330-byte jsonb metadata sent as bind parameters, 32-byte hashes) into a
# table with the same five indexes as events, without the store's own work
# (validation, hashing, the Go client, RETURNING). Two scripts:
#   1row:  one single-row INSERT per transaction (autocommit);
#   10row: one 10-row INSERT ... SELECT ... FROM (VALUES ...) of one stream
#          per transaction (autocommit): the same one-statement,
#          one-round-trip shape as a 10-event Append, which is a single
#          INSERT ... SELECT FROM unnest.
# The ratio printed is store appends/s ÷ pgbench TPS of the matching script.
#
# Each configuration runs ROUNDS times, pgbench and the store back to back in
# alternating order, each from an empty table and a fresh checkpoint; the
# table shows each side's best round, since other work on the machine only
# ever makes a run slower. The last line says how much CPU other processes
# (not counting PostgreSQL itself) took meanwhile: above ~10 % the numbers
# say more about them than about the store.
#
# Environment: PGHOST_ADDR (127.0.0.1), ROUNDS (2), PGBENCH_SECONDS (5),
# GO_BENCHTIME (4s), CLIENTS ("1 8 32").
set -euo pipefail

cd "$(dirname "$0")/.."
start=$(date +%s)
# shellcheck source=scripts/pgbench-floor.sh
. scripts/pgbench-floor.sh

PGHOST_ADDR=${PGHOST_ADDR:-127.0.0.1}
ROUNDS=${ROUNDS:-2}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-5}
GO_BENCHTIME=${GO_BENCHTIME:-4s}
CLIENTS=${CLIENTS:-"1 8 32"}
GO=${GO:-go}
DB=pos_bench_pgbench
OUT=bench-results

scripts/services.sh

rm -rf "$OUT"
mkdir -p "$OUT"

psql_admin() { floor_psql "$@"; }
drop_scratch() { psql_admin -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; }
trap drop_scratch EXIT

# CPU accounting, in clock ticks, for the "other load" line.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
own_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$$/stat"; }
pg_ticks() { # live PostgreSQL processes plus the backends they reaped
	local t=0 p
	for p in $(pgrep -u postgres 2>/dev/null || true); do
		t=$((t + $(awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
busy0=$(busy_ticks) own0=$(own_ticks) pg0=$(pg_ticks) wall0=$(date +%s.%N)

floor_create "$DB"
floor_write_scripts "$OUT"

echo "bench: building the benchmark binary" >&2
$GO test -c -o "$OUT/pgstore.test" ./eventstore/pgstore/
: >"$OUT/go-bench.txt"

# run_pgbench SCRIPT CLIENTS ROUND: one pgbench run from an empty table.
run_pgbench() {
	local f="$OUT/pgbench-$1-c$2-r$3.txt" tps
	if ! tps=$(floor_pgbench "$DB" "$OUT/$1.sql" "$2" "$PGBENCH_SECONDS" "$f"); then
		echo "bench: pgbench $1 -c $2 failed" >&2
		exit 1
	fi
	echo "bench: round $3: pgbench $1 -c $2: $tps TPS" >&2
	echo "$1 $2 $3 $tps" >>"$OUT/pgbench-tps.txt"
}

# run_store PATTERN: one run of the benchmark binary (each BenchmarkAppend and
# BenchmarkReadAll run makes its own fresh database).
run_store() {
	local log="$OUT/go-bench-run.txt"
	psql_admin -d postgres -c CHECKPOINT
	if ! (cd eventstore/pgstore && "../../$OUT/pgstore.test" -test.run '^$' -test.bench "$1" \
		-test.benchtime "$GO_BENCHTIME" -test.count 1 -test.timeout 30m) >"$log" 2>&1; then
		cat "$log" >&2
		echo "bench: go benchmark $1 failed" >&2
		exit 1
	fi
	cat "$log" >>"$OUT/go-bench.txt"
	sed -n 's/^Benchmark/bench: Benchmark/p' "$log" >&2
	rm -f "$log"
}

: >"$OUT/pgbench-tps.txt"
for round in $(seq 1 "$ROUNDS"); do
	for events in 1 10; do
		script=1row
		if [ "$events" = 10 ]; then script=10row; fi
		for c in $CLIENTS; do
			pattern="^BenchmarkAppend\$/^events=$events\$/^writers=$c\$"
			if [ $((round % 2)) = 1 ]; then
				run_pgbench "$script" "$c" "$round"
				run_store "$pattern"
			else
				run_store "$pattern"
				run_pgbench "$script" "$c" "$round"
			fi
		done
	done
	run_store '^BenchmarkReadAll$'
done
drop_scratch

busy1=$(busy_ticks) own1=$(own_ticks) pg1=$(pg_ticks) wall1=$(date +%s.%N)
other=$(awk -v b=$((busy1 - busy0)) -v o=$((own1 - own0)) -v p=$((pg1 - pg0)) \
	-v w="$(awk -v a="$wall0" -v b="$wall1" 'BEGIN { print b - a }')" -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" \
	'BEGIN { x = (b - o - p) / (w * hz * n) * 100; printf "%.0f", (x < 0 ? 0 : x) }')

# best FILE NAME UNIT: the largest value before UNIT on benchmark NAME's lines
# (NAME without the -GOMAXPROCS suffix).
best() {
	awk -v name="$2" -v unit="$3" '
		$1 ~ /^Benchmark/ {
			n = $1; sub(/-[0-9]+$/, "", n)
			if (n != name) next
			for (i = 2; i <= NF; i++) if ($i == unit && $(i - 1) + 0 > m) m = $(i - 1) + 0
		}
		END { print m + 0 }' "$1"
}
best_tps() { # SCRIPT CLIENTS
	awk -v s="$1" -v c="$2" '$1 == s && $2 == c && $4 + 0 > m { m = $4 + 0 } END { print m + 0 }' "$OUT/pgbench-tps.txt"
}

{
	printf '\nEvent store vs pgbench: best of %s rounds (%s, %s cores, PostgreSQL %s)\n\n' "$ROUNDS" \
		"$(date -u +%FT%TZ)" "$(nproc)" "$(psql_admin -d postgres -tAc 'SHOW server_version' | awk '{ print $1 }')"
	printf '%-6s %-7s %10s %10s  %-6s %11s %11s %6s  %s\n' \
		events writers appends/s events/s script 'pgbench TPS' 'pgbench r/s' ratio target
	missed=0
	for events in 1 10; do
		script=1row rows=1
		if [ "$events" = 10 ]; then script=10row rows=10; fi
		for c in $CLIENTS; do
			name="BenchmarkAppend/events=$events/writers=$c"
			aps=$(best "$OUT/go-bench.txt" "$name" appends/s)
			eps=$(best "$OUT/go-bench.txt" "$name" events/s)
			tps=$(best_tps "$script" "$c")
			# Targets: single-event appends at 32 writers, and 10-event
			# appends at every concurrency, reach half of pgbench's TPS.
			goal=""
			if [ "$events" = 10 ] || [ "$c" = 32 ]; then goal=0.50; fi
			line=$(awk -v e="$events" -v c="$c" -v a="$aps" -v ev="$eps" -v s="$script" \
				-v t="$tps" -v r="$rows" -v goal="$goal" 'BEGIN {
				ratio = (t > 0) ? a / t : 0
				verdict = "-"
				if (goal != "") verdict = (ratio >= goal) ? ">= 0.50 ok" : ">= 0.50 MISSED"
				printf "%-6s %-7s %10.0f %10.0f  %-6s %11.0f %11.0f %6.2f  %s\n", e, c, a, ev, s, t, t * r, ratio, verdict
			}')
			echo "$line"
			if [[ $line == *MISSED ]]; then missed=$((missed + 1)); fi
		done
	done
	printf '\n%-30s %10s  %s\n' 'global-feed reads' events/s target
	for feed in all merchant; do
		eps=$(best "$OUT/go-bench.txt" "BenchmarkReadAll/feed=$feed" events/s)
		goal=""
		if [ "$feed" = all ]; then goal=50000; fi
		line=$(awk -v f="$feed" -v ev="$eps" -v goal="$goal" 'BEGIN {
			verdict = "-"
			if (goal != "") verdict = (ev >= goal) ? ">= 50000 ok" : ">= 50000 MISSED"
			printf "%-30s %10.0f  %s\n", "feed=" f ", pages of 1000", ev, verdict
		}')
		echo "$line"
		if [[ $line == *MISSED ]]; then missed=$((missed + 1)); fi
	done
	printf '\ntargets missed: %d; took %ds; CPU taken by other processes meanwhile: %s%%; raw output in %s/\n' \
		"$missed" "$(($(date +%s) - start))" "$other" "$OUT"
} | tee "$OUT/summary.txt"
