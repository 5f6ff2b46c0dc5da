#!/usr/bin/env bash
# The event store's benchmarks beside pgbench on the same server, at the same
# concurrency (`make bench`).
#
# pgbench is the physical floor: the same row (same columns, ~200-byte JSON
# data, ~330-byte jsonb metadata, 32-byte hashes) into a table with the same
# five indexes as events, with none of the store's work (validation, hashing,
# the Go client, RETURNING). Two scripts:
#   1row:  one single-row INSERT per transaction (autocommit);
#   10row: one multi-row INSERT ... SELECT of 10 rows of one stream per
#          transaction (autocommit) -- the same one-statement shape as a
#          10-event Append, which is a single INSERT ... SELECT FROM unnest.
# The ratio printed is store appends/s ÷ pgbench TPS of the matching script.
#
# Raw outputs go to bench-results/. Environment: PGHOST_ADDR (127.0.0.1),
# PGBENCH_SECONDS (8), GO_BENCHTIME (5s), CLIENTS ("1 8 32").
set -euo pipefail

cd "$(dirname "$0")/.."
start=$(date +%s)

PGHOST_ADDR=${PGHOST_ADDR:-127.0.0.1}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-8}
GO_BENCHTIME=${GO_BENCHTIME:-5s}
CLIENTS=${CLIENTS:-"1 8 32"}
GO=${GO:-go}
DB=pos_bench_pgbench
OUT=bench-results

scripts/services.sh

rm -rf "$OUT"
mkdir -p "$OUT"

psql_admin() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST_ADDR" -U postgres "$@"; }

psql_admin -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
psql_admin -d "$DB" <<'SQL'
CREATE TABLE t (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL UNIQUE,
    stream_name    text        NOT NULL,
    version        bigint      NOT NULL,
    merchant_id    uuid        NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    data           json        NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    hash           bytea       NOT NULL,
    prev_hash      bytea,
    UNIQUE (stream_name, version)
);
CREATE INDEX t_feed_idx ON t (transaction_id, id);
CREATE INDEX t_merchant_feed_idx ON t (merchant_id, transaction_id, id);
SQL

# Row values shared by both scripts; each client is one merchant, as each
# store writer is, and streams are named like the store's.
data='{"line_id":"0193a5c1-7a2b-7c3d-8e4f-5a6b7c8d9e0f","sku":"COF-FW-L","name":"Flat white, oat, large","qty":2,"unit_price":{"amount":"4.50","currency":"EUR"},"tax_code":"VAT-R","note":"extra hot, no lid"}'
meta='{"merchant_id":"0193a5c0-0000-7000-8000-0000000000aa","actor":"0193a5c2-1111-7222-8333-444455556666","role":"CASHIER","correlation_id":"0193a5c3-2222-7333-8444-555566667777","causation_id":"0193a5c3-2222-7333-8444-555566667778","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"pos=terminal-07"}'
hash='\x9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
merchant="('0193a5c0-0000-7000-8000-' || lpad(to_hex(:client_id::int), 12, '0'))::uuid"
stream="'transaction-0193a5c0-0000-7000-8000-' || lpad(to_hex(:client_id::int), 12, '0') || '.' || gen_random_uuid()"

cat >"$OUT/1row.sql" <<SQL
INSERT INTO t (event_id, stream_name, version, merchant_id, event_type, schema_version, data, metadata, hash, prev_hash)
VALUES (gen_random_uuid(), $stream, 1, $merchant, 'ItemAdded', 1, '$data', '$meta', '$hash', '$hash');
SQL
cat >"$OUT/10row.sql" <<SQL
INSERT INTO t (event_id, stream_name, version, merchant_id, event_type, schema_version, data, metadata, hash, prev_hash)
SELECT gen_random_uuid(), s.name, v, $merchant, 'ItemAdded', 1, '$data', '$meta', '$hash', '$hash'
FROM (SELECT $stream AS name) s, generate_series(1, 10) AS v;
SQL

declare -A TPS
for script in 1row 10row; do
	for c in $CLIENTS; do
		j=$((c < 2 ? c : 2))
		psql_admin -d "$DB" -c CHECKPOINT
		echo "bench: pgbench $script -c $c -j $j -T $PGBENCH_SECONDS" >&2
		pgbench -h "$PGHOST_ADDR" -U postgres -n -M prepared -c "$c" -j "$j" -T "$PGBENCH_SECONDS" \
			-f "$OUT/$script.sql" "$DB" >"$OUT/pgbench-$script-c$c.txt" 2>&1
		tps=$(awk '/^tps = / { print $3; exit }' "$OUT/pgbench-$script-c$c.txt")
		if [ -z "$tps" ]; then
			echo "bench: no TPS in $OUT/pgbench-$script-c$c.txt:" >&2
			cat "$OUT/pgbench-$script-c$c.txt" >&2
			exit 1
		fi
		TPS[$script,$c]=$tps
	done
done
psql_admin -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"

echo "bench: go test -bench (benchtime $GO_BENCHTIME)" >&2
psql_admin -d postgres -c CHECKPOINT
$GO test -run '^$' -bench . -benchtime "$GO_BENCHTIME" -count 1 -timeout 30m ./eventstore/pgstore/ \
	2>&1 | tee "$OUT/go-bench.txt" >&2

# metric FILE NAME UNIT: the value before UNIT on benchmark NAME's line
# (NAME without the -GOMAXPROCS suffix).
metric() {
	awk -v name="$2" -v unit="$3" '
		$1 ~ /^Benchmark/ {
			n = $1; sub(/-[0-9]+$/, "", n)
			if (n != name) next
			for (i = 2; i <= NF; i++) if ($i == unit) { print $(i - 1); exit }
		}' "$1"
}

{
	printf '\nEvent store vs pgbench (%s, %s cores, PostgreSQL %s)\n\n' "$(date -u +%FT%TZ)" "$(nproc)" \
		"$(psql_admin -d postgres -tAc 'SHOW server_version' | awk '{ print $1 }')"
	printf '%-6s %-7s %12s %12s %-7s %12s %12s %7s  %s\n' \
		events writers appends/s events/s script 'pgbench TPS' 'pgbench r/s' ratio target
	missed=0
	for events in 1 10; do
		script=1row; rows=1
		if [ "$events" = 10 ]; then script=10row; rows=10; fi
		for c in $CLIENTS; do
			name="BenchmarkAppend/events=$events/writers=$c"
			aps=$(metric "$OUT/go-bench.txt" "$name" appends/s)
			eps=$(metric "$OUT/go-bench.txt" "$name" events/s)
			tps=${TPS[$script,$c]}
			# Targets: single-event appends at 32 writers, and 10-event
			# appends at every concurrency, reach half of pgbench's TPS.
			target=""
			if [ "$events" = 10 ] || [ "$c" = 32 ]; then target=0.50; fi
			awk -v e="$events" -v c="$c" -v a="${aps:-0}" -v ev="${eps:-0}" -v s="$script" \
				-v t="$tps" -v r="$rows" -v goal="$target" 'BEGIN {
				ratio = (t > 0) ? a / t : 0
				verdict = "-"
				if (goal != "") verdict = (ratio >= goal) ? ">= 0.50 ok" : ">= 0.50 MISSED"
				printf "%-6s %-7s %12.0f %12.0f %-7s %12.0f %12.0f %7.2f  %s\n", e, c, a, ev, s, t, t * r, ratio, verdict
			}'
			if [ -n "$target" ] && ! awk -v a="${aps:-0}" -v t="$tps" 'BEGIN { exit !(t > 0 && a / t >= 0.5) }'; then
				missed=$((missed + 1))
			fi
		done
	done
	printf '\n%-28s %12s  %s\n' 'global-feed reads' events/s target
	for feed in all merchant; do
		eps=$(metric "$OUT/go-bench.txt" "BenchmarkReadAll/feed=$feed" events/s)
		target=""
		if [ "$feed" = all ]; then target=50000; fi
		awk -v f="$feed" -v ev="${eps:-0}" -v goal="$target" 'BEGIN {
			verdict = "-"
			if (goal != "") verdict = (ev >= goal) ? ">= 50000 ok" : ">= 50000 MISSED"
			printf "%-28s %12.0f  %s\n", "feed=" f " (pages of 1000)", ev, verdict
		}'
		if [ -n "$target" ] && ! awk -v ev="${eps:-0}" 'BEGIN { exit !(ev >= 50000) }'; then
			missed=$((missed + 1))
		fi
	done
	printf '\ntargets missed: %d; took %ds; raw output in %s/\n' "$missed" "$(($(date +%s) - start))" "$OUT"
} | tee "$OUT/summary.txt"
