#!/usr/bin/env bash
# The main flow on the embedded default (filled in as the flow grows).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/conveyor --help
