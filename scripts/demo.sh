#!/usr/bin/env bash
# The main flow on the embedded default (SQLite queue, local storage), in ./demo/:
# generate 5 CSVs, submit them, drain the queue with two worker processes, show the result,
# then print the next commands to try.
# Idempotent: every run starts from an empty ./demo/ (DEMO_DIR to put it elsewhere).
#
#   bash scripts/demo.sh                 # the embedded SQLite queue
#   bash scripts/demo.sh --queue URL     # another queue (scripts/demo_sqs.sh passes SQS's)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CONVEYOR="$VENV/bin/conveyor"
PYTHON="$VENV/bin/python"
DEMO=${DEMO_DIR:-demo}

queue=""
while [ $# -gt 0 ]; do
    case "$1" in
        --queue) queue=${2:?--queue needs a URL}; shift 2 ;;
        *) echo "usage: $0 [--queue URL]" >&2; exit 2 ;;
    esac
done

rm -rf "$DEMO"
mkdir -p "$DEMO/inputs"
# Only the demo's own settings: nothing from the caller's environment leaks in. A queue is
# passed as an argument, never inherited, so a stray SQS_QUEUE_URL cannot hijack the demo.
for name in $(env | grep -oE '^(CONVEYOR_[A-Z_]+|SQS_QUEUE_URL)' || true); do unset "$name"; done
export CONVEYOR_STORAGE="$DEMO/storage"
export CONVEYOR_LOG_FORMAT=text
if [ -n "$queue" ]; then
    export CONVEYOR_QUEUE_URL="$queue"
fi

echo "== 1. five input files of 1,000 rows (ID,Value), the tutorial's input.csv format"
"$PYTHON" - "$DEMO/inputs" <<'PY'
import random
import sys
from pathlib import Path

rng = random.Random(2023)
for part in range(1, 6):
    rows = (f"{part * 1000 + i},{rng.uniform(0, 1000):.3f}" for i in range(1000))
    Path(sys.argv[1], f"part-{part}.csv").write_text("ID,Value\n" + "\n".join(rows) + "\n")
PY
ls -l "$DEMO/inputs"

echo
echo "== 2. submit: copy them into the storage, one job each (job ids below)"
"$CONVEYOR" submit "$DEMO"/inputs/*.csv

echo
echo "== 3. two worker processes until the queue is empty (queue: ${queue:-SQLite in $CONVEYOR_STORAGE})"
"$CONVEYOR" worker --processes 2 --until-empty --batch-size 1 --wait-s 0.5 --empty-polls 2

echo
echo "== 4. status"
"$CONVEYOR" status

echo
echo "== 5. outputs (ID,Value,ProcessedValue), published atomically under $CONVEYOR_STORAGE/outputs"
find "$CONVEYOR_STORAGE/outputs" -type f -name '*.csv' | sort
first=$(find "$CONVEYOR_STORAGE/outputs" -type f -name '*.csv' | sort | head -1)
echo "-- head -5 $first"
head -5 "$first"

if [ -n "$queue" ]; then
    exit 0  # that queue is the caller's: it prints its own next steps
fi

# Every line below that starts with two spaces is a command, runnable as printed from here
# (tests/e2e/test_demo.py runs each one).
storage=$(printf '%q' "$CONVEYOR_STORAGE")
demo=$(printf '%q' "$DEMO")
cli=$(printf '%q' "$CONVEYOR")
cat <<NEXT

== next: try these from $(pwd)
   (or run \`source $VENV/bin/activate\` once, then type \`conveyor\` instead of $cli)
  $cli status --storage $storage
  $cli status --storage $storage --state succeeded --limit 5
  $cli submit --storage $storage $demo/inputs/part-1.csv
  $cli worker --storage $storage --until-empty --wait-s 0.5 --empty-polls 2
  $cli dlq list --storage $storage
  $cli run --sample --seed 7 --output $demo/sample-output.csv
  $cli --help
   and \`$cli dashboard --storage $storage\` serves a live page (it prints its URL; Ctrl-C stops it)
NEXT
