# shellcheck shell=bash
# What the benchmark scripts share to run `pos serve` in the background
# (sourced by load.sh, readbench.sh and stockbench.sh): a free loopback
# port, waiting for /readyz, stopping the server, and minting one token per
# merchant. The caller starts the server itself (each sets its own
# environment) and records its pid in server_pid.

server_pid=""

# pick_port NAME: sets port and base to a free loopback port, starting from
# a random one; NAME prefixes the error.
pick_port() {
	port=""
	for _ in $(seq 1 200); do
		local p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			port=$p
			break
		fi
	done
	if [ -z "$port" ]; then
		echo "$1: no free port found" >&2
		exit 1
	fi
	base="http://127.0.0.1:$port"
}

# wait_ready NAME LOG: waits (up to 30 s) for the server at $base to answer
# /readyz; exits with its LOG when it stops or never becomes ready.
wait_ready() {
	for _ in $(seq 1 120); do
		if curl -fsS -m 2 "$base/readyz" >/dev/null 2>&1; then return 0; fi
		if ! kill -0 "$server_pid" 2>/dev/null; then
			cat "$2" >&2
			echo "$1: the server exited" >&2
			exit 1
		fi
		sleep 0.25
	done
	cat "$2" >&2
	echo "$1: the server did not become ready" >&2
	exit 1
}

# stop_server: stops the server started last, if it still runs.
stop_server() {
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	server_pid=""
}

# mint_tokens BINARY FILE COUNT [FIRST]: one CASHIER token per merchant
# (merchant ids FIRST+1 … FIRST+COUNT, FIRST default 0) into FILE, minted by
# BINARY token with the secret the server uses (the development one unless
# POS_JWT_SECRET is set).
mint_tokens() {
	local bin=$1 file=$2 count=$3 first=${4:-0}
	: >"$file"
	for i in $(seq 1 "$count"); do
		env -u POS_JWKS_URL "$bin" token -merchant "$(printf '01900000-0000-7000-8000-%012x' $((first + i)))" \
			-role CASHIER -sub "cashier-$i" >>"$file"
	done
}
