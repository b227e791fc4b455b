#!/usr/bin/env bash
# Redis for `make run`, with the users scripts/redis_acl.py wrote (the Makefile runs it first):
# `default` is off, the web app, ingester and Celery log in as obsweb, the probe worker as
# obsweb-probes (SECURITY.md: Redis). Reuse obsweb's own Redis if one still answers on the port.
set -u
dir=$(realpath "${OBSWEB_REDIS_DIR:-.local/redis}")
if [ ! -f "$dir/users.acl" ] || [ ! -f "$dir/port" ]; then
    echo "no Redis users in $dir: run \`make run\` (or scripts/redis_acl.py $dir) first" >&2
    exit 1
fi
port=$(cat "$dir/port")
if redis-cli -p "$port" ping >/dev/null 2>&1; then
    echo "using obsweb's Redis already listening on 127.0.0.1:$port"
    exec sleep infinity
fi
exec redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --aclfile "$dir/users.acl" \
    --save 60 1000 --appendonly no
