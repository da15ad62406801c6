# `helm test`: GET /api/v1/health from the gateway Service until it answers 200 (database
# reachable, at least one healthy inference worker), at most $ATTEMPTS times 2 s apart.
# Plain bash (/dev/tcp), so any image with bash runs it: no curl needed.
set -u
host=${GATEWAY_HOST:?} port=${GATEWAY_PORT:?} attempts=${ATTEMPTS:-30}
status="" body=""
for ((i = 1; i <= attempts; i++)); do
  if exec 3<>"/dev/tcp/$host/$port"; then
    printf 'GET /api/v1/health HTTP/1.0\r\nHost: %s\r\nUser-Agent: purrify-helm-test\r\n\r\n' "$host" >&3
    status="" body=""
    IFS=' ' read -r -t 10 _ status _ <&3
    # Headers end at the first empty line; the rest is the body.
    while IFS= read -r -t 10 line <&3 && [ "${line%$'\r'}" != "" ]; do :; done
    while IFS= read -r -t 10 line <&3 || [ -n "$line" ]; do body+="$line"; done
    exec 3<&-
    if [ "$status" = 200 ]; then
      echo "purrify gateway at $host:$port is healthy: $body"
      exit 0
    fi
    echo "attempt $i/$attempts: HTTP ${status:-no answer} $body"
  fi
  sleep 2
done
echo "purrify gateway at $host:$port is not healthy after $attempts attempts" >&2
exit 1
