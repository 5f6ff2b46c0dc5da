# shellcheck shell=bash
# The pgbench floor shared by scripts/bench.sh, scripts/load.sh and
# scripts/readbench.sh (sourced, not run): a table with the events table's
# row shape and indexes, and the pgbench scripts that insert into it.
#
#   1row:  one single-row INSERT per transaction (autocommit);
#   10row: one 10-row INSERT ... SELECT ... FROM (VALUES ...) of one stream
#          per transaction (autocommit).
#
# and the sales load scenario's own transactions, done by PostgreSQL alone
# (no server, no HTTP, no Go): a ceiling for load.sh and readbench.sh, not a
# floor.
#
#   sale-writes: one sale as the fewest transactions its commands need:
#          7 keyed commands (each BEGIN, its events, its idempotency key,
#          COMMIT, in one pipeline; checkout adds 3 ledger reservations on
#          streams of their own, the cash payment its TransactionPaid) and
#          the stock process manager's 3 ledger commits in one transaction:
#          8 transactions, 14 events, as a real sale appends;
#   sale:  the same, then the whole sale's read side in one transaction of
#          two statements (the applied version of its 4 streams and 4
#          read-model rows, upserted in one pipeline).
#
# Both are generous to the server: no reads at all (no head, no ledger, no
# replayed key), no contention on shared ledger streams, no relay, no
# process-manager bookkeeping, one read-side transaction a sale (the live
# runners take one per one or two events), and every transaction one round
# trip. Event ids are random (gen_random_uuid), as the keys are; the
# store's are UUIDv7s, which a run's small indexes take no slower (two
# same-hour pairs, see the README's "Sales load").
#
# The same row as the store writes: ~200-byte JSON data and ~330-byte jsonb
# metadata sent as bind parameters (pgbench -D, -M prepared, one per row, so
# the server parses every row's json and jsonb as it does for the store),
# 32-byte hashes, each client one merchant, streams named like the store's.
#
# Needs PGHOST_ADDR. Functions: floor_psql, floor_create DB,
# floor_write_scripts DIR, floor_pgbench DB SCRIPT_FILE CLIENTS SECONDS LOG.
# pgbench's pipelines need PostgreSQL 14 or later.

floor_psql() {
	PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST_ADDR" -U postgres "$@"
}

# floor_create DB: a fresh database DB holding the empty table t, and k, ps
# and rm for the sale scripts (idempotency_keys', projection_streams' and a
# read model's shapes).
floor_create() {
	floor_psql -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
	floor_psql -d "$1" <<'SQL'
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
CREATE TABLE k (
    merchant_id  uuid        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    status_code  integer     NOT NULL,
    headers      jsonb       NOT NULL,
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX k_created_idx ON k (created_at);
CREATE TABLE ps (
    projection  text   NOT NULL,
    stream_name text   NOT NULL,
    version     bigint NOT NULL,
    PRIMARY KEY (projection, stream_name)
);
CREATE TABLE rm (
    merchant_id uuid   NOT NULL,
    id          uuid   NOT NULL,
    status      text   NOT NULL,
    total       bigint NOT NULL,
    lines       jsonb  NOT NULL,
    version     bigint NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
SQL
}

floor_data='{"line_id":"0193a5c1-7a2b-7c3d-8e4f-5a6b7c8d9e0f","sku":"COF-FW-L","name":"Flat white, oat, large","qty":2,"unit_price":{"amount":"4.50","currency":"EUR"},"tax_code":"VAT-R","note":"extra hot, no lid"}'
floor_meta='{"merchant_id":"0193a5c0-0000-7000-8000-0000000000aa","actor":"0193a5c2-1111-7222-8333-444455556666","role":"CASHIER","correlation_id":"0193a5c3-2222-7333-8444-555566667777","causation_id":"0193a5c3-2222-7333-8444-555566667778","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"pos=terminal-07"}'

# floor_write_scripts DIR: DIR/1row.sql, DIR/10row.sql, DIR/sale-writes.sql
# and DIR/sale.sql.
floor_write_scripts() {
	local hash='\x9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
	local merchant="('0193a5c0-0000-7000-8000-' || lpad(to_hex(:client_id::int), 12, '0'))::uuid"
	local stream="'transaction-0193a5c0-0000-7000-8000-' || lpad(to_hex(:client_id::int), 12, '0') || '.' || gen_random_uuid()"
	local cols="event_id, stream_name, version, merchant_id, event_type, schema_version, data, metadata, hash, prev_hash"
	local v sep
	cat >"$1/1row.sql" <<SQL
INSERT INTO t ($cols)
VALUES (gen_random_uuid(), $stream, 1, $merchant, 'ItemAdded', 1, :data, :meta, '$hash', '$hash');
SQL
	{
		echo "WITH s AS (SELECT $stream AS name)"
		echo "INSERT INTO t ($cols)"
		echo "SELECT gen_random_uuid(), s.name, r.version, $merchant, 'ItemAdded', 1, r.data, r.meta, '$hash', '$hash'"
		echo "FROM s, (VALUES"
		for v in $(seq 1 10); do
			sep=,
			if [ "$v" = 10 ]; then sep=""; fi
			echo "    ($v, :data::json, :meta::jsonb)$sep"
		done
		echo ") AS r(version, data, meta);"
	} >"$1/10row.sql"
	floor_sale_script "$hash" "$merchant" "$cols" false >"$1/sale-writes.sql"
	floor_sale_script "$hash" "$merchant" "$cols" true >"$1/sale.sql"
}

# floor_sale_script HASH MERCHANT COLUMNS READS: one sale's transactions (see
# the top of this file), then its read-side transaction when READS is true,
# on stdout.
floor_sale_script() {
	local hash=$1 merchant=$2 cols=$3 reads=$4 v
	local prefix="'0193a5c0-0000-7000-8000-' || lpad(to_hex(:client_id::int), 12, '0')"
	local sale="'transaction-' || $prefix || '.0193a5c1-0000-7000-8000-' || lpad(to_hex(:sale::bigint), 12, '0')"
	local ledger="'stock_ledger-' || $prefix || '.' || gen_random_uuid()"
	# floor_event STREAM VERSION...: one append, a row per version.
	floor_event() {
		local stream=$1 rows="" v
		shift
		for v in "$@"; do
			rows="$rows${rows:+, }(gen_random_uuid(), $stream, $v, $merchant, 'ItemAdded', 1, :data::json, :meta::jsonb, '$hash', '$hash')"
		done
		echo "INSERT INTO t ($cols) VALUES $rows;"
	}
	echo '\set sale random(1, 1000000000000)'
	# open, 3 items, checkout (and its 3 reservations), cash (and paid), complete
	for v in 1 2 3 4 5 6 8; do
		echo '\startpipeline'
		echo "BEGIN;"
		case $v in
		5) floor_event "$sale" 5 && floor_event "$ledger" 1 && floor_event "$ledger" 1 && floor_event "$ledger" 1 ;;
		6) floor_event "$sale" 6 7 ;;
		*) floor_event "$sale" "$v" ;;
		esac
		echo "INSERT INTO k (merchant_id, key, request_hash, status_code, headers, body)"
		echo "VALUES ($merchant, gen_random_uuid()::text, '$hash', 201, '{\"Content-Type\": [\"application/json\"]}', convert_to(:data, 'UTF8'));"
		echo "COMMIT;"
		echo '\endpipeline'
	done
	# The stock process manager commits the 3 reservations.
	echo '\startpipeline'
	echo "BEGIN;"
	floor_event "$ledger" 2
	floor_event "$ledger" 2
	floor_event "$ledger" 2
	echo "COMMIT;"
	echo '\endpipeline'
	[ "$reads" = true ] || return 0
	# The sale's read side: its stream and 3 stock rows.
	local rows="($sale, 8, md5($sale)::uuid)" i
	for i in 1 2 3; do
		rows="$rows, ('stock-' || $prefix || '.' || :sale::bigint || '.$i', 2, md5($sale || '.$i')::uuid)"
	done
	echo '\startpipeline'
	echo "BEGIN;"
	echo "INSERT INTO ps (projection, stream_name, version) SELECT 'p', s, v FROM (VALUES $rows) AS r(s, v, id)"
	echo "    ON CONFLICT (projection, stream_name) DO UPDATE SET version = excluded.version;"
	echo "INSERT INTO rm (merchant_id, id, status, total, lines, version) SELECT $merchant, id, 'complete', 1000, :data::jsonb, v FROM (VALUES $rows) AS r(s, v, id)"
	echo "    ON CONFLICT (merchant_id, id) DO UPDATE SET total = rm.total + 1, lines = excluded.lines, version = excluded.version;"
	echo "COMMIT;"
	echo '\endpipeline'
}

# floor_pgbench DB SCRIPT_FILE CLIENTS SECONDS LOG: one pgbench run from an
# empty table and a fresh checkpoint; prints its TPS. Fails (printing the
# log) when pgbench reports no TPS or any failed transaction.
floor_pgbench() {
	local j=$(($3 < 2 ? $3 : 2)) tps
	floor_psql -d "$1" -c "TRUNCATE t, k, ps, rm" -c CHECKPOINT || return 1
	pgbench -h "$PGHOST_ADDR" -U postgres -n -M prepared -c "$3" -j "$j" -T "$4" \
		-D "data=$floor_data" -D "meta=$floor_meta" -f "$2" "$1" >"$5" 2>&1 || true
	tps=$(awk '/^tps = / { print $3; exit }' "$5")
	if [ -z "$tps" ] || grep -q 'number of failed transactions: [1-9]' "$5"; then
		cat "$5" >&2
		echo "pgbench $(basename "$2") -c $3 failed" >&2
		return 1
	fi
	echo "$tps"
}
