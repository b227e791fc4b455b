#!/usr/bin/env bash
# wait-redis.sh USER COMMAND...: run COMMAND with REDIS_URL set to USER's (from the file
# scripts/redis_acl.py wrote) once Redis answers to that user (the Procfile starts everything at once).
dir=${OBSWEB_REDIS_DIR:-.local/redis}
user=$1
shift
if [ ! -f "$dir/$user.url" ]; then
    echo "no $dir/$user.url: run \`make run\` (or scripts/redis_acl.py $dir) first" >&2
    exit 1
fi
REDIS_URL=$(cat "$dir/$user.url")
export REDIS_URL
# redis://user:password@host:port/db; the password goes to redis-cli by environment, not argv.
rest=${REDIS_URL#redis://}
userinfo=${rest%%@*}
hostport=${rest#*@}
hostport=${hostport%%/*}
port=${hostport##*:}
for _ in $(seq 1 100); do
    if REDISCLI_AUTH=${userinfo#*:} redis-cli --no-auth-warning --user "${userinfo%%:*}" -p "$port" ping \
        2>/dev/null | grep -q PONG; then
        exec "$@"
    fi
    sleep 0.1
done
echo "Redis did not answer to $user on 127.0.0.1:$port within 10 s" >&2
exit 1
