#!/usr/bin/env bash
# The stock benchmark of issue #6 (`make bench-stock`, also part of
# `make bench`): the sales load against this tree's build and against a
# build of BASE_REF (2adb7ca, the last commit before stock reservations), in
# one run on the same PostgreSQL.
#
# Builds both `cmd/pos` (BASE_REF from `git archive` into a temp dir, the
# working tree as it is) and cmd/posload into a temp dir (bin/ is left
# alone). For each scenario and each build, base first: a fresh database
# pos_stockbench, `pos serve` with every default but POS_READ_SIDE=inprocess
# (the read models and the stock process manager follow the store's feed in
# the server's process, no broker: the same for both builds) on a free
# loopback port, one CASHIER token per merchant (minted by that build's
# `pos token`; the cashier also receives the stock), then posload closed
# loop with CLIENTS clients for WARMUP_SECONDS + LOAD_SECONDS. A sale is
# open, 3 items, checkout, cash, complete. Scenarios:
#
#   hot      posload -skus 1, one merchant with one branch: every line of
#            every sale is the same SKU, so every checkout reserves on one
#            stock ledger and every payment sells from it (the process
#            manager): the hot ledger of a popular SKU;
#   spread   posload's defaults as in scripts/load.sh: 16 merchants with 4
#            branches each, the whole catalogue (8 SKUs), so 512 ledgers:
#            the cost of stock without a hot ledger, as context (SPREAD=0
#            skips it).
#
# Against the base build posload's stock setup answers 404 and is skipped
# (no reservations there). The server's /metrics are read before and after
# each run: pos_command_conflicts_total (lost append races, by category:
# stock ledgers, transactions) over the completed sales the server counted
# (pos_command_duration_seconds_count of POST .../complete with a 2xx), warm-up
# included on both sides of the ratio. The base build has no such counter:
# n/a.
#
# Prints a summary: sales/s, commands/s, p50/p99, errors and conflicts per
# sale of each run, and per scenario current ÷ base sales/s with PASS/FAIL
# against the target (hot: >= 0.70). Exits 0 when the target is missed (as
# load.sh does) and 1 when the run itself fails. Raw outputs go to
# bench-results/stock/. Traffic goes to 127.0.0.1 only; about 3.5 minutes.
#
# Environment: PGHOST_ADDR (127.0.0.1), BASE_REF (2adb7ca), CLIENTS (64),
# LOAD_SECONDS (30), WARMUP_SECONDS (5), SPREAD (1), SPREAD_MERCHANTS (16),
# SPREAD_BRANCHES (4), POSLOAD_FLAGS (more posload flags for every run, e.g.
# -keys=false; none by default: an Idempotency-Key on every command).
set -euo pipefail

cd "$(dirname "$0")/.."
start=$(date +%s)
# shellcheck source=scripts/pgbench-floor.sh
. scripts/pgbench-floor.sh # floor_psql
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh # pick_port, wait_ready, stop_server, mint_tokens

PGHOST_ADDR=${PGHOST_ADDR:-127.0.0.1}
BASE_REF=${BASE_REF:-2adb7ca}
CLIENTS=${CLIENTS:-64}
LOAD_SECONDS=${LOAD_SECONDS:-30}
WARMUP_SECONDS=${WARMUP_SECONDS:-5}
SPREAD=${SPREAD:-1}
SPREAD_MERCHANTS=${SPREAD_MERCHANTS:-16}
SPREAD_BRANCHES=${SPREAD_BRANCHES:-4}
read -r -a posload_flags <<<"${POSLOAD_FLAGS:-}"
GO=${GO:-go}
DB=pos_stockbench
OUT=bench-results/stock

scripts/services.sh

rm -rf "$OUT"
mkdir -p "$OUT"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/stockbench.XXXXXX")

cleanup() {
	stop_server
	floor_psql -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

base_commit=$(git rev-parse --short "$BASE_REF^{commit}")
echo "stockbench: building $BASE_REF ($base_commit, git archive), the working tree's cmd/pos and cmd/posload into $tmp" >&2
mkdir -p "$tmp/base-src"
git archive "$BASE_REF" | tar -x -C "$tmp/base-src"
(cd "$tmp/base-src" && $GO build -o "$tmp/pos-base" ./cmd/pos)
$GO build -o "$tmp/pos-current" ./cmd/pos
$GO build -o "$tmp/posload" ./cmd/posload

pick_port stockbench

# start_server RUN BINARY: BINARY serve on a fresh $DB and $port, its log in
# $OUT/RUN-server.log.
start_server() {
	local run=$1 bin=$2
	stop_server
	floor_psql -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
	echo "stockbench: $run: starting $(basename "$bin") serve on $base, database $DB, POS_READ_SIDE=inprocess" >&2
	env -u EVENTSTORE_URL -u POS_JWKS_URL -u POS_CACHE -u NATS_URL \
		DATABASE_URL="postgres://postgres@$PGHOST_ADDR:5432/$DB?sslmode=disable" POS_ADDR="127.0.0.1:$port" \
		POS_READ_SIDE=inprocess POS_DATA_DIR="$tmp/data-$run" "$bin" serve >"$OUT/$run-server.log" 2>&1 &
	server_pid=$!
	wait_ready stockbench "$OUT/$run-server.log"
}

# counters FILE: "STOCK TRANSACTION SALES" from a /metrics snapshot: the
# conflicts by category and the completed sales (2xx answers to complete).
# Label values hold spaces (the route), so lines are matched whole and the
# value is the last field.
counters() {
	awk '
		index($0, "pos_command_conflicts_total{") == 1 {
			if (index($0, "category=\"stock\"")) stock += $NF
			else if (index($0, "category=\"transaction\"")) tx += $NF
		}
		index($0, "pos_command_duration_seconds_count{") == 1 && index($0, "route=\"POST /v1/transactions/{id}/complete\"") &&
			$0 ~ /status="2[0-9][0-9]"/ { sales += $NF }
		END { printf "%d %d %d\n", stock, tx, sales }' "$1"
}

: >"$OUT/rows.txt"
# run SCENARIO BUILD MERCHANTS BRANCHES POSLOAD-FLAGS...: one server, one
# posload run; its ROW to rows.txt as "SCENARIO BUILD <posload ROW fields>
# STOCK TX SALES HAS_COUNTER SERVER_ERRORS".
run() {
	local scenario=$1 build=$2 merchants=$3 branches=$4 run="$1-$2" bin="$tmp/pos-$2"
	shift 4
	start_server "$run" "$bin"
	mint_tokens "$bin" "$OUT/$run-tokens.txt" "$merchants" $((0x5b00))
	floor_psql -d postgres -c CHECKPOINT
	curl -fsS -m 5 "$base/metrics" >"$OUT/$run-metrics-before.txt"
	echo "stockbench: $run: closed loop, $CLIENTS clients, ${WARMUP_SECONDS}s warm-up + ${LOAD_SECONDS}s" >&2
	if ! "$tmp/posload" -url "$base" -tokens-file "$OUT/$run-tokens.txt" -server-pid "$server_pid" -name "$run" \
		-mode closed -clients "$CLIENTS" -branches "$branches" -duration "${LOAD_SECONDS}s" -warmup "${WARMUP_SECONDS}s" \
		-timeout 10s -json "$OUT/$run.json" "$@" "${posload_flags[@]}" >"$OUT/$run.txt" 2>&1; then
		cat "$OUT/$run.txt" >&2
		echo "stockbench: posload $run failed" >&2
		exit 1
	fi
	curl -fsS -m 5 "$base/metrics" >"$OUT/$run-metrics-after.txt"
	stop_server
	grep -v '^ROW ' "$OUT/$run.txt" | sed 's/^/  /' >&2
	# Only the current build has the conflicts counter (and one never
	# incremented is not exposed, so its absence says nothing).
	local has=0 s0 t0 c0 s1 t1 c1 errs
	if [ "$build" = current ]; then has=1; fi
	read -r s0 t0 c0 < <(counters "$OUT/$run-metrics-before.txt")
	read -r s1 t1 c1 < <(counters "$OUT/$run-metrics-after.txt")
	errs=$(grep -c '"level":"ERROR"' "$OUT/$run-server.log" || true)
	printf '%s %s %s %d %d %d %d %d\n' "$scenario" "$build" "$(grep '^ROW ' "$OUT/$run.txt" | cut -d' ' -f3-)" \
		$((s1 - s0)) $((t1 - t0)) $((c1 - c0)) "$has" "$errs" >>"$OUT/rows.txt"
	grep '^  status ' "$OUT/$run.txt" | sed "s/^  status */$run /" >>"$OUT/status.txt"
}

: >"$OUT/status.txt"
run hot base 1 1 -skus 1
run hot current 1 1 -skus 1
if [ "$SPREAD" != 0 ]; then
	run spread base "$SPREAD_MERCHANTS" "$SPREAD_BRANCHES"
	run spread current "$SPREAD_MERCHANTS" "$SPREAD_BRANCHES"
fi

{
	printf '\nStock benchmark (issue #6): complete sales (open, 3 items, checkout, cash, complete), closed loop %s clients,\n' "$CLIENTS"
	printf '%ss measured after %ss warm-up, POS_READ_SIDE=inprocess, posload flags: %s\n' \
		"$LOAD_SECONDS" "$WARMUP_SECONDS" "${POSLOAD_FLAGS:-none (an Idempotency-Key on every command)}"
	printf 'base = %s (before stock reservations), current = the working tree (HEAD %s)\n' "$base_commit" "$(git rev-parse --short HEAD)"
	printf 'hot = 1 merchant x 1 branch, every line one SKU: one hot stock ledger\n'
	printf 'spread = %s merchants x %s branches x the 8 catalogue SKUs: %s ledgers\n' "$SPREAD_MERCHANTS" "$SPREAD_BRANCHES" \
		"$((SPREAD_MERCHANTS * SPREAD_BRANCHES * 8))"
	printf '(%s, %s cores shared by server, PostgreSQL %s and load generator)\n\n' "$(date -u +%FT%TZ)" "$(nproc)" \
		"$(floor_psql -d postgres -tAc 'SHOW server_version' | awk '{ print $1 }')"
	awk '
		BEGIN {
			printf "%-8s %-8s %8s %10s %7s %7s %7s %10s %16s %13s  %s\n", "scenario", "build", "sales/s", "commands/s",
				"p50 ms", "p95 ms", "p99 ms", "errors", "stock confl/sale", "tx confl/sale", "CPU cores: server/pg/loadgen/other"
		}
		{
			sc = $1; b = $2; sales = $3; cmds = $4; p50 = $5; p95 = $6; p99 = $7; err = $8; werr = $9
			stock = $14; tx = $15; done = $16; has = $17
			e = err; if (werr > 0) e = err "+" werr "w"
			cs = "n/a"; ct = "n/a"
			if (has) {
				if (done > 0) { cs = sprintf("%.3f", stock / done); ct = sprintf("%.3f", tx / done) }
				else { cs = "-"; ct = "-" }
			}
			busy = ""; if ($13 > 0.10) { busy = " *"; nbusy++ }
			printf "%-8s %-8s %8.1f %10.1f %7.2f %7.2f %7.2f %10s %16s %13s  %.2f/%.2f/%.2f/%.2f%s\n", sc, b, sales, cmds, p50, p95, p99, e, cs, ct, $10, $11, $12, $13, busy
			rate[sc, b] = sales; p99s[sc, b] = p99; order[++n] = sc
			errors += err + werr
			if (has) { stocks[sc] = stock; txs[sc] = tx; dones[sc] = done }
		}
		END {
			printf "\n"
			missed = 0
			for (i = 1; i <= n; i++) {
				sc = order[i]
				if (seen[sc]++) continue
				if (!((sc, "base") in rate) || !((sc, "current") in rate)) continue
				r = (rate[sc, "base"] > 0) ? rate[sc, "current"] / rate[sc, "base"] : 0
				target = "(context)"
				if (sc == "hot") {
					ok = (r >= 0.70)
					target = "target >= 0.70 " (ok ? "PASS" : "FAIL")
					if (!ok) missed++
				}
				printf "%-8s current/base sales/s %.1f/%.1f = %.2f  %s; p99 %.2f ms (base %.2f ms)", sc,
					rate[sc, "current"], rate[sc, "base"], r, target, p99s[sc, "current"], p99s[sc, "base"]
				if (sc in dones) printf "; conflicts %d stock + %d transaction over %d completed sales (warm-up included)", stocks[sc], txs[sc], dones[sc]
				printf "\n"
			}
			printf "errors in all runs, warm-up included: %d\n", errors
			if (nbusy > 0) printf "* other processes took over 0.10 cores meanwhile: that row says more about them than about pos; run again on a quiet machine\n"
			print missed > "/dev/stderr"
		}' "$OUT/rows.txt" 2>"$OUT/missed.txt"
	printf 'status codes (measured window):\n'
	sed 's/^/  /' "$OUT/status.txt"
	printf 'server logs: %s ERROR lines\n' "$(awk '{ s += $NF } END { print s + 0 }' "$OUT/rows.txt")"
	printf 'targets missed: %s; took %ds; raw output in %s/\n' "$(cat "$OUT/missed.txt")" "$(($(date +%s) - start))" "$OUT"
} | tee "$OUT/summary.txt"
