#!/usr/bin/env bash
# The `make demo` flow on an SQS queue: a local SQS-compatible server (moto) on loopback,
# a queue and its dead-letter queue made by `conveyor queue create`, then scripts/demo.sh
# on that queue (`--queue URL`). Fake credentials only; nothing reaches AWS.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
CONVEYOR="$VENV/bin/conveyor"

port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"
log=$(mktemp -t conveyor-moto.XXXXXX.log)

"$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
cleanup() {
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT INT TERM

for _ in $(seq 100); do  # up in well under a second; give it 10 s at most
    if "$PY" -c "import socket, sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$moto_pid" 2>/dev/null; then
        echo "demo-sqs: the SQS test server did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done

export AWS_ENDPOINT_URL_SQS="$endpoint"
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN CONVEYOR_QUEUE_URL SQS_QUEUE_URL

echo "== SQS test server at $endpoint"
queue_url=$("$CONVEYOR" queue create demo-jobs | tail -n 1)
case "$queue_url" in
    http://*|https://*) ;;
    *) echo "demo-sqs: \`conveyor queue create\` printed no queue URL: $queue_url" >&2; exit 1 ;;
esac
echo "== queue: $queue_url (and its dead-letter queue demo-jobs-dlq)"

# The queue goes as an argument: demo.sh drops inherited CONVEYOR_*/SQS_QUEUE_URL settings.
bash scripts/demo.sh --queue "$queue_url"

echo
echo "== clean-up, as the tutorial's last step"
"$CONVEYOR" queue delete --yes --queue "$queue_url"
echo
echo "The SQS test server is gone with the queue; \`make demo\` leaves a local setup to explore."
