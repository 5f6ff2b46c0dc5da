#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and NATS (JetStream) answer on this machine,
# starting whichever does not, with the commands this kind of machine uses.
# Used by `make run`, `make test` and `make bench`. Idempotent.
set -euo pipefail

PGHOST_ADDR=${PGHOST_ADDR:-127.0.0.1}

wait_for() { # name, check command...
	local name=$1; shift
	for _ in $(seq 1 60); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.5
	done
	echo "services: $name did not come up" >&2
	return 1
}

pg_up() { pg_isready -q -h "$PGHOST_ADDR" -p 5432; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }

if ! pg_up; then
	echo "services: starting PostgreSQL"
	pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
	wait_for PostgreSQL pg_up
fi
if ! redis_up; then
	echo "services: starting Redis"
	mkdir -p /var/lib/redis /var/log/redis
	redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
		--dir /var/lib/redis --logfile /var/log/redis/ci.log
	wait_for Redis redis_up
fi
if ! nats_up; then
	echo "services: starting NATS with JetStream"
	mkdir -p /var/lib/nats-server
	start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
		-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
	wait_for NATS nats_up
fi

# The database itself (DATABASE_URL's, `pos` by default) is created by
# `pos migrate` and `pos serve` when it is missing.
