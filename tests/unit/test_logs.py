"""The log formatters: every field on every line, text or JSON."""

from __future__ import annotations

import io
import json
import logging
import re
import shlex

import pytest

from conveyor.events import Action, LogObserver, WorkerEvent
from conveyor.logs import FIELDS, JsonFormatter, TextFormatter, configure_logging


def record(message: str, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("conveyor.worker", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def text_fields(line: str, message: str) -> dict[str, str]:
    """The ``key=value`` fields after the message (and two spaces), unquoted as a shell
    would."""
    _, _, fields = line.partition(f" {message}  ")
    return dict(item.split("=", 1) for item in shlex.split(fields))


@pytest.mark.parametrize(
    ("job_id", "attempt"),
    [("job-1", 1), ("a1b", 1), ("0123", 2), ("x", 3)],
)
def test_no_field_is_dropped_because_the_message_contains_its_value(
    job_id: str, attempt: int
) -> None:
    line = TextFormatter().format(
        record(
            f"job {job_id} succeeded",
            job_id=job_id,
            task="csv-process",
            action="succeeded",
            attempt=attempt,
            duration_s=1,
            worker="w-1",
        )
    )

    assert text_fields(line, f"job {job_id} succeeded") == {
        "job_id": job_id,
        "task": "csv-process",
        "action": "succeeded",
        "attempt": str(attempt),
        "duration_s": "1",
        "worker": "w-1",
    }


def test_fields_come_in_a_fixed_order_then_other_extras_and_values_are_quoted() -> None:
    line = TextFormatter().format(
        record(
            "job j failed: bad row 3",
            reason='bad row 3: "x=1"',
            attempt=1,
            job_id="j",
            queue="https://sqs/1/q",
            count=0,
            task=None,
        )
    )

    fields = text_fields(line, "job j failed: bad row 3")
    assert list(fields) == ["job_id", "attempt", "reason", "count", "queue"]
    assert fields["reason"] == 'bad row 3: "x=1"'
    assert 'reason="bad row 3: \\"x=1\\""' in line
    assert re.match(r"\d\d:\d\d:\d\d info    job j failed: bad row 3  job_id=j ", line)


def test_a_job_event_logs_every_field_in_text_and_json() -> None:
    for log_format in ("text", "json"):
        stream = io.StringIO()
        configure_logging(log_format, "INFO", stream)
        try:
            LogObserver().worker_event(
                WorkerEvent(
                    Action.SUCCEEDED,
                    job_id="11",
                    task="t1",
                    attempt=1,
                    duration_s=1.0,
                    worker="w1",
                )
            )
        finally:
            configure_logging("json", "INFO", io.StringIO())
        line = stream.getvalue().strip()
        fields = json.loads(line) if log_format == "json" else text_fields(line, "job 11 succeeded")
        for key, value in {"job_id": "11", "task": "t1", "attempt": 1, "worker": "w1"}.items():
            assert str(fields[key]) == str(value), (log_format, line)
        assert set(fields) >= set(FIELDS) - {"reason"}


def test_json_keeps_every_extra_too() -> None:
    entry = json.loads(JsonFormatter().format(record("job 1 ok", job_id="1", attempt=1)))

    assert (entry["msg"], entry["job_id"], entry["attempt"]) == ("job 1 ok", "1", 1)
