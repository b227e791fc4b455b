#!/usr/bin/env bash
# Redis for `make run`: reuse one that already answers on the port, else start our own.
set -u
port=${OBSWEB_REDIS_PORT:-6379}
if redis-cli -p "$port" ping >/dev/null 2>&1; then
    echo "using the Redis already listening on 127.0.0.1:$port"
    exec sleep infinity
fi
mkdir -p .local/redis
exec redis-server --port "$port" --bind 127.0.0.1 --dir .local/redis --save 60 1000 --appendonly no
