"""Job events as log lines: the LogObserver (events.py) on JSON and text logs."""

from __future__ import annotations

import io
import json
import logging

from conveyor.events import Action, LogObserver, WorkerEvent
from conveyor.logs import configure_logging


def test_json_logs_carry_the_job_fields_and_text_logs_read_well() -> None:
    event = WorkerEvent(
        Action.RETRYING, "job-1", "csv-process", 2, "w1", duration_s=0.5, reason="busy", delay_s=9
    )
    logger = logging.getLogger("conveyor")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    lines = {}
    try:
        for fmt in ("json", "text"):
            stream = io.StringIO()
            configure_logging(fmt, "INFO", stream)
            LogObserver().worker_event(event)
            lines[fmt] = stream.getvalue().strip()
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved

    data = json.loads(lines["json"])
    assert data["level"] == "warning"
    assert (data["job_id"], data["action"], data["attempt"]) == ("job-1", "retrying", 2)
    assert data["duration_s"] == 0.5
    assert "job job-1 retrying: busy (again in 9 s)" in lines["text"]
    assert "attempt=2" in lines["text"]
    assert "job_id=job-1" in lines["text"]  # never dropped, even when in the message
