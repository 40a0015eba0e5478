"""``OPTIONS``: the one table of every setting: its flag, environment variables, default,
bounds and help. The command line builds its options from it, ``Settings`` its defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.option import Kind, Option

DEFAULT_STORAGE = Path("conveyor-data")

#: The embedded queue's long-poll wait when none is configured. SQS bills per request, so
#: 20 s waits pay off there; a local SQLite poll costs nothing, and a short wait keeps
#: ``--until-empty`` and Ctrl-C snappy at a terminal.
SQLITE_WAIT_S = 2.0
SQS_WAIT_S = 20.0
# SQS's ceilings, as conveyor.queues.base has them (importing it here would be circular).
MAX_WAIT_S = 20
MAX_BATCH = 10
MAX_VISIBILITY_TIMEOUT_S = 43_200


def _option(
    field: str, flag: str, env: str | tuple[str, ...], kind: Kind, help: str, **extra: Any
) -> Option:
    names = (env,) if isinstance(env, str) else env
    return Option(field, flag, names, kind, help, **extra)


#: Every setting of the command line and of ``conveyor.connect()``, by field name.
OPTIONS: dict[str, Option] = {
    option.field: option
    for option in (
        _option(
            "storage",
            "storage",
            "CONVEYOR_STORAGE",
            "path",
            "Storage root holding inputs, outputs and the job ledger (/efs on Kubernetes).",
            file_okay=False,
            default=DEFAULT_STORAGE,
        ),
        _option(
            "queue_url",
            "queue",
            ("CONVEYOR_QUEUE_URL", "SQS_QUEUE_URL"),
            "str",
            "Queue URL: sqlite:///path/queue.db or an SQS URL "
            "[default: SQLite in the storage root].",
        ),
        _option(
            "endpoint_url",
            "endpoint-url",
            ("CONVEYOR_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"),
            "str",
            "SQS-compatible endpoint (e.g. a local test server).",
        ),
        _option(
            "ledger_url",
            "ledger",
            "CONVEYOR_LEDGER_URL",
            "str",
            "Job ledger URL: sqlite:///path/ledger.db or postgresql://user@host/db "
            "(keep the password in the env var) [default: the SQLite file in the storage's "
            "_conveyor/].",
        ),
        _option(
            "visibility_timeout_s",
            "visibility-timeout-s",
            "CONVEYOR_VISIBILITY_TIMEOUT_S",
            "int",
            "Seconds a received job stays invisible to others; the heartbeat renews it.",
            minimum=1,
            maximum=MAX_VISIBILITY_TIMEOUT_S,
            default=60,
        ),
        _option(
            "heartbeat_every_s",
            "heartbeat-s",
            "CONVEYOR_HEARTBEAT_S",
            "float",
            "Seconds between lease renewals [default: a third of the visibility timeout].",
            minimum=0.05,
        ),
        _option(
            "wait_s",
            "wait-s",
            "CONVEYOR_WAIT_S",
            "float",
            f"Long-poll wait per receive [default: {SQLITE_WAIT_S:g} s for SQLite, "
            f"{SQS_WAIT_S:g} s for SQS].",
            minimum=0,
            maximum=MAX_WAIT_S,
            default_text="by queue",
            default=SQS_WAIT_S,
        ),
        _option(
            "batch_size",
            "batch-size",
            "CONVEYOR_BATCH_SIZE",
            "int",
            "Messages per receive (use 1 for long jobs, so others are not held back).",
            minimum=1,
            maximum=MAX_BATCH,
            default=10,
        ),
        _option(
            "grace_s",
            "grace-s",
            "CONVEYOR_GRACE_S",
            "float",
            "On SIGTERM/SIGINT, seconds the running job gets to finish before its message is "
            "released (keep below the pod's terminationGracePeriodSeconds).",
            minimum=0,
            default=25.0,
        ),
        _option(
            "processes",
            "processes",
            "CONVEYOR_PROCESSES",
            "int",
            "Worker processes to run (each takes one job at a time).",
            minimum=1,
            maximum=256,
            default=1,
        ),
        _option(
            "until_empty",
            "until-empty",
            "CONVEYOR_UNTIL_EMPTY",
            "bool",
            "Exit 0 once the queue has nothing visible, delayed or in flight.",
            default=False,
        ),
        _option(
            "empty_polls",
            "empty-polls",
            "CONVEYOR_EMPTY_POLLS",
            "int",
            "Empty receives in a row before --until-empty exits on SQS when the ledger still "
            "has open jobs (otherwise one empty receive suffices).",
            minimum=1,
            default=3,
        ),
        _option(
            "max_jobs",
            "max-jobs",
            "CONVEYOR_MAX_JOBS",
            "int",
            "Exit 0 after this many jobs.",
            minimum=1,
        ),
        _option(
            "max_idle_s",
            "max-idle-s",
            "CONVEYOR_MAX_IDLE_S",
            "float",
            "Exit 0 after this many seconds without a job.",
            minimum=0,
        ),
        _option(
            "max_receive_count",
            "max-receive-count",
            "CONVEYOR_MAX_RECEIVE_COUNT",
            "int",
            "Attempts before a job is dead-lettered (SQS: the queue's redrive policy decides).",
            minimum=1,
            default=5,
        ),
        _option(
            "retry_base_s",
            "retry-base-s",
            "CONVEYOR_RETRY_BASE_S",
            "float",
            "First retry delay after a transient failure; doubles per attempt, with jitter.",
            minimum=0,
            default=5.0,
        ),
        _option(
            "retry_max_s",
            "retry-max-s",
            "CONVEYOR_RETRY_MAX_S",
            "float",
            "Longest retry delay (SQS caps delays at 900 s).",
            minimum=0,
            maximum=900,
            default=900.0,
        ),
        _option(
            "imports",
            "import",
            "CONVEYOR_IMPORT",
            "list",
            "Import a module (or .py file) that registers tasks; repeatable "
            "(the env var takes a space-separated list: give a path with spaces by --import).",
            default=(),
        ),
        _option(
            "health_file",
            "health-file",
            "CONVEYOR_HEALTH_FILE",
            "path",
            "Touch this file every round and heartbeat (see `conveyor health`).",
            dir_okay=False,
        ),
        _option(
            "metrics_port",
            "metrics-port",
            "CONVEYOR_METRICS_PORT",
            "int",
            "Serve Prometheus metrics on this port at /metrics [default: off]. With "
            "--processes N, worker i uses PORT+i.",
            minimum=0,
            maximum=65535,
        ),
        _option(
            "metrics_host",
            "metrics-host",
            "CONVEYOR_METRICS_HOST",
            "str",
            "Address the metrics endpoint listens on (0.0.0.0 in a pod, for the scraper).",
            default="127.0.0.1",
        ),
        _option(
            "log_format",
            "log-format",
            "CONVEYOR_LOG_FORMAT",
            "choice",
            "Log lines as JSON, as text, or auto (text on a terminal, JSON otherwise).",
            choices=("auto", "json", "text"),
            default="auto",
        ),
        _option(
            "log_level",
            "log-level",
            "CONVEYOR_LOG_LEVEL",
            "choice",
            "Lowest level of the log lines shown.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR"),
            case_sensitive=False,
            default="INFO",
        ),
        _option(
            "debug",
            "debug",
            "CONVEYOR_DEBUG",
            "bool",
            "Show tracebacks and debug logs.",
            default=False,
        ),
    )
}
