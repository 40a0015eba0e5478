"""The fault suite's results as the README's table: ``python -m tests.faults.report``.

Reads ``test-artifacts/fault-summaries.jsonl`` (written by the suite, one summary per
scenario) and prints Markdown; the suite also writes ``test-artifacts/fault-report.md``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SUMMARIES = ARTIFACTS / "fault-summaries.jsonl"
REPORT = ARTIFACTS / "fault-report.md"

_HEADER = (
    "| scenario | queue | jobs | lost | published once | published more than once "
    "| failed as expected | other problems | outcome |\n"
    "|---|---|---:|---:|---:|---:|---:|---|---|\n"
)


def _problems(summary: Mapping[str, Any]) -> str:
    names = ["partial", "mismatched", "unexpected", "stuck", "regressions", "temp_files"]
    found = [f"{name} {len(summary[name])}" for name in names if summary.get(name)]
    if not summary.get("duplicates_identical", True):
        found.append("duplicates differ")
    return ", ".join(found) or "none"


def _outcome(summary: Mapping[str, Any]) -> str:
    if not summary.get("ok"):
        return "**FAILED**"
    parts = []
    if summary["published_more"]:
        parts.append("duplicates identical")
    parts.append("nothing lost")
    return ", ".join(parts)


def _notes(summary: Mapping[str, Any]) -> str:
    notes = [f"{summary[k]} {k}" for k in ("kills", "seconds") if summary.get(k)]
    if summary.get("crashed_attempts"):
        notes.append(f"{summary['crashed_attempts']} attempt(s) died mid-job")
    for key, label in (
        ("still_queued", "still queued at the end"),
        ("dead_lettered", "in the DLQ"),
        ("rejected_on_send", "refused by the queue"),
        ("dead_lettered_without_id", "dead-lettered without a job id"),
    ):
        if summary.get(key):
            notes.append(f"{summary[key]} {label}")
    return ", ".join(notes)


def render(summaries: Iterable[Mapping[str, Any]]) -> str:
    """A Markdown table: one row per scenario and queue backend."""
    rows = []
    for s in sorted(summaries, key=lambda s: (str(s["scenario"]), str(s.get("backend")))):
        notes = _notes(s)
        scenario = f"{s['scenario']} ({notes})" if notes else str(s["scenario"])
        rows.append(
            f"| {scenario} | {s.get('backend') or '-'} | {s['jobs']} | {len(s['lost'])} "
            f"| {s['published_once']} | {s['published_more']} | {s['failed_as_expected']} "
            f"| {_problems(s)} | {_outcome(s)} |\n"
        )
    return _HEADER + "".join(rows)


def load(path: Path = SUMMARIES) -> list[dict[str, Any]]:
    """The summaries written by the last run of the suite (the last one per scenario)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            summary = json.loads(line)
            latest[(summary["scenario"], summary.get("backend", ""))] = summary
    return list(latest.values())


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else SUMMARIES
    if not path.exists():
        print(f"no summaries at {path}: run the fault suite (pytest tests/faults)", file=sys.stderr)
        return 1
    sys.stdout.write(render(load(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
