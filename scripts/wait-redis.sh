#!/usr/bin/env bash
# Start the given command once Redis answers (the Procfile starts everything at once).
port=${OBSWEB_REDIS_PORT:-6379}
for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && exec "$@"
    sleep 0.1
done
echo "Redis did not answer on 127.0.0.1:$port within 10 s" >&2
exit 1
