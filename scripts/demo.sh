#!/usr/bin/env bash
# The main flow on the embedded default (SQLite queue, local storage), in ./demo/:
# generate 5 CSVs, submit them, drain the queue with two worker processes, show the result.
# Idempotent: every run starts from an empty ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

CONVEYOR=.venv/bin/conveyor
PYTHON=.venv/bin/python
DEMO=demo

rm -rf "$DEMO"
mkdir -p "$DEMO/inputs"
# Only the demo's own settings: nothing from the caller's environment leaks in.
for name in $(env | grep -oE '^(CONVEYOR_[A-Z_]+|SQS_QUEUE_URL)' || true); do unset "$name"; done
export CONVEYOR_STORAGE="$DEMO/storage"
export CONVEYOR_LOG_FORMAT=text

echo "== 1. five input files of 1,000 rows (ID,Value), the tutorial's input.csv format"
"$PYTHON" - "$DEMO/inputs" <<'EOF'
import random
import sys
from pathlib import Path

rng = random.Random(2023)
for part in range(1, 6):
    rows = (f"{part * 1000 + i},{rng.uniform(0, 1000):.3f}" for i in range(1000))
    Path(sys.argv[1], f"part-{part}.csv").write_text("ID,Value\n" + "\n".join(rows) + "\n")
EOF
ls -l "$DEMO/inputs"

echo
echo "== 2. submit: copy them into the storage, one job each (job ids below)"
"$CONVEYOR" submit "$DEMO"/inputs/*.csv

echo
echo "== 3. two worker processes until the queue is empty"
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
