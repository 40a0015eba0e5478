"""One frozen Settings, built once at start-up (flag > CONVEYOR_* env > default), passed down.

``OPTIONS`` is the one table of every setting's flag, environment variables, bounds and
help: the command line builds its options from it, and :func:`settings_from_env` (what
``conveyor.connect()`` uses) reads the same variables the same way, so a script and a
``conveyor worker`` started in one shell are configured alike.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from conveyor.errors import ConfigError

#: Where conveyor keeps its own state inside the storage root (ledger, claim checks,
#: the default SQLite queue). Job paths may not point inside it.
STATE_DIR = "_conveyor"

DEFAULT_STORAGE = Path("conveyor-data")

# Process exit codes, documented in the README and used by Kubernetes podFailurePolicy.
EXIT_OK = 0  #: finished: drained (--until-empty), --max-jobs or --max-idle-s reached
EXIT_FAILED = 1  #: an unexpected error
EXIT_USAGE = 2  #: bad command-line usage (click's own code)
EXIT_BAD_INPUT = 65  #: EX_DATAERR: the input of `conveyor run` is malformed
EXIT_INTERRUPTED = 75  #: EX_TEMPFAIL: stopped by SIGTERM/SIGINT before the queue drained
EXIT_CONFIG = 78  #: EX_CONFIG: broken configuration (bad URL, missing queue, no permission)
EXIT_TIMEOUT = 124  #: `conveyor wait --timeout-s`: jobs still open (timeout(1)'s code)

#: The embedded queue's long-poll wait when none is configured. SQS bills per request, so
#: 20 s waits pay off there; a local SQLite poll costs nothing, and a short wait keeps
#: ``--until-empty`` and Ctrl-C snappy at a terminal.
SQLITE_WAIT_S = 2.0
SQS_WAIT_S = 20.0
# SQS's ceilings, as conveyor.queues.base has them (importing it here would be circular).
MAX_WAIT_S = 20
MAX_BATCH = 10
MAX_VISIBILITY_TIMEOUT_S = 43_200


def default_queue_url(storage: Path) -> str:
    """The embedded queue's URL for a storage root: a SQLite file in its state directory."""
    return f"sqlite:///{(storage / STATE_DIR / 'queue.db').resolve()}"


def default_wait_s(queue_url: str | None) -> float:
    """The long-poll wait for a queue when none is configured (see ``SQLITE_WAIT_S``)."""
    return SQLITE_WAIT_S if urlsplit(queue_url or "sqlite:").scheme == "sqlite" else SQS_WAIT_S


@dataclass(frozen=True)
class Settings:
    """Everything a conveyor process is configured with. Seconds carry ``_s`` in the name."""

    storage: Path = DEFAULT_STORAGE
    queue_url: str | None = None
    ledger_url: str | None = None  # default: the embedded SQLite ledger in the storage root
    endpoint_url: str | None = None
    region: str | None = None

    # Worker
    visibility_timeout_s: int = 60
    heartbeat_every_s: float | None = None  # default: a third of the visibility timeout
    max_receive_count: int = 5
    wait_s: float = 20.0
    batch_size: int = 10
    grace_s: float = 25.0
    processes: int = 1
    until_empty: bool = False
    empty_polls: int = 3
    max_jobs: int | None = None
    max_idle_s: float | None = None
    retry_base_s: float = 5.0
    retry_max_s: float = 900.0
    imports: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int | None = None  # Prometheus /metrics; None: off
    metrics_host: str = "127.0.0.1"  # Kubernetes manifests set 0.0.0.0 for the scraper
    health_file: Path | None = None  # touched every round and heartbeat (liveness probe)

    # Output
    debug: bool = False
    log_format: str = "auto"  # auto | json | text
    log_level: str = "INFO"

    @property
    def resolved_queue_url(self) -> str:
        """The queue URL, falling back to the embedded SQLite queue in the storage root."""
        return self.queue_url or default_queue_url(self.storage)

    @property
    def resolved_ledger_url(self) -> str:
        """The ledger URL, falling back to the embedded SQLite ledger in the storage root."""
        from conveyor.ledger import default_ledger_url

        return self.ledger_url or default_ledger_url(self.storage)

    @property
    def heartbeat_s(self) -> float:
        """Seconds between lease extensions: well before the visibility timeout expires
        (never more than half of it, whatever was asked for)."""
        every_s = self.heartbeat_every_s
        if every_s is None:
            every_s = max(1.0, self.visibility_timeout_s / 3)
        return min(every_s, self.visibility_timeout_s / 2)

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


# --- the table of options ------------------------------------------------------------------

Kind = Literal["path", "str", "int", "float", "bool", "choice", "list"]


@dataclass(frozen=True)
class Option:
    """One setting as the command line and the environment give it.

    Attributes:
        field: the :class:`Settings` field it sets.
        flag: the command-line flag without its dashes (``visibility-timeout-s``); as a
            keyword of ``conveyor.connect()`` it is spelt with underscores (:attr:`keyword`).
        env: its environment variables, the first one set (and not empty) winning.
        kind: how its text is read: a path, a string, a number, a flag (``1``/``0``,
            ``true``/``false``...), one of ``choices``, or a space-separated list.
        help: the ``--help`` text.
        minimum, maximum: inclusive bounds of a number.
        choices: the allowed values of a choice.
        case_sensitive: whether a choice is matched case-sensitively (else upper-cased).
        default_text: what ``--help`` shows as the default when it is computed.
        dir_okay, file_okay: for a path, what it may name (for the command line's checks).
    """

    field: str
    flag: str
    env: tuple[str, ...]
    kind: Kind
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    case_sensitive: bool = True
    default_text: str | None = None
    dir_okay: bool = True
    file_okay: bool = True

    @property
    def keyword(self) -> str:
        """The keyword of ``conveyor.connect()``: the flag with ``_`` for ``-``
        (``import``, a Python keyword, is ``imports``)."""
        return "imports" if self.flag == "import" else self.flag.replace("-", "_")

    @property
    def default(self) -> Any:
        """The :class:`Settings` field's default."""
        spec = _FIELDS[self.field]
        if spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        return spec.default

    def parse(self, text: str, origin: str) -> Any:
        """The value of this option given as text (an environment variable's).

        Raises:
            ConfigError: the text is not a valid value; the message names ``origin``.
        """
        try:
            return self.check(_parse_text(self, text), origin)
        except ValueError:
            raise ConfigError(f"bad value {text!r} for {origin}: {self.expected}") from None

    def check(self, value: Any, origin: str) -> Any:
        """``value`` converted to the field's type, if it is one this option allows.

        Raises:
            ConfigError: it is not; the message names ``origin``.
        """
        if value is None:
            return None
        try:
            return _convert(self, value)
        except (TypeError, ValueError):
            raise ConfigError(f"bad value {value!r} for {origin}: {self.expected}") from None

    @property
    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind not in ("int", "float"):
            if self.kind == "choice":
                return f"one of {', '.join(self.choices)}"
            return _EXPECTED[self.kind]
        what = "an integer" if self.kind == "int" else "a number"
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"{what} >= {self.minimum:g}"
        return what


_EXPECTED = {
    "bool": "a boolean (1/0, true/false, yes/no, on/off)",
    "list": "a list of strings",
    "path": "a path",
    "str": "a string",
}
_FIELDS = {spec.name: spec for spec in dataclasses.fields(Settings)}
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", ""})


def _parse_text(option: Option, text: str) -> Any:
    """Text to a value of the option's kind, as the command line reads it.

    Raises:
        ValueError: it is not one.
    """
    if option.kind == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(text)
    if option.kind == "list":
        return tuple(text.split())
    if option.kind == "int":
        return int(text.strip())
    if option.kind == "float":
        return float(text.strip())
    return text


def _convert(option: Option, value: Any) -> Any:
    """A typed value checked against the option's kind and bounds.

    Raises:
        TypeError, ValueError: it does not fit.
    """
    kind = option.kind
    if kind == "path":
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise TypeError(value)
        return Path(value)
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if kind == "list":
        items = (value,) if isinstance(value, str | os.PathLike) else tuple(value)
        if not all(isinstance(item, str | os.PathLike) for item in items):
            raise TypeError(value)
        return tuple(os.fspath(item) for item in items)
    if kind == "choice":
        if not isinstance(value, str):
            raise TypeError(value)
        chosen = value if option.case_sensitive else value.upper()
        if chosen not in option.choices:
            raise ValueError(value)
        return chosen
    return _number(option, value)


def _number(option: Option, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    if option.kind == "int":
        if not isinstance(value, int):
            raise TypeError(value)
        number: int | float = value
    else:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
    if option.minimum is not None and number < option.minimum:
        raise ValueError(value)
    if option.maximum is not None and number > option.maximum:
        raise ValueError(value)
    return number


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
        ),
        _option(
            "batch_size",
            "batch-size",
            "CONVEYOR_BATCH_SIZE",
            "int",
            "Messages per receive (use 1 for long jobs, so others are not held back).",
            minimum=1,
            maximum=MAX_BATCH,
        ),
        _option(
            "grace_s",
            "grace-s",
            "CONVEYOR_GRACE_S",
            "float",
            "On SIGTERM/SIGINT, seconds the running job gets to finish before its message is "
            "released (keep below the pod's terminationGracePeriodSeconds).",
            minimum=0,
        ),
        _option(
            "processes",
            "processes",
            "CONVEYOR_PROCESSES",
            "int",
            "Worker processes to run (each takes one job at a time).",
            minimum=1,
            maximum=256,
        ),
        _option(
            "until_empty",
            "until-empty",
            "CONVEYOR_UNTIL_EMPTY",
            "bool",
            "Exit 0 once the queue has nothing visible, delayed or in flight.",
        ),
        _option(
            "empty_polls",
            "empty-polls",
            "CONVEYOR_EMPTY_POLLS",
            "int",
            "Empty receives in a row before --until-empty exits on SQS when the ledger still "
            "has open jobs (otherwise one empty receive suffices).",
            minimum=1,
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
        ),
        _option(
            "retry_base_s",
            "retry-base-s",
            "CONVEYOR_RETRY_BASE_S",
            "float",
            "First retry delay after a transient failure; doubles per attempt, with jitter.",
            minimum=0,
        ),
        _option(
            "retry_max_s",
            "retry-max-s",
            "CONVEYOR_RETRY_MAX_S",
            "float",
            "Longest retry delay (SQS caps delays at 900 s).",
            minimum=0,
            maximum=900,
        ),
        _option(
            "imports",
            "import",
            "CONVEYOR_IMPORT",
            "list",
            "Import a module (or .py file) that registers tasks; repeatable "
            "(the env var takes a space-separated list: give a path with spaces by --import).",
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
        ),
        _option(
            "log_format",
            "log-format",
            "CONVEYOR_LOG_FORMAT",
            "choice",
            "Log lines as JSON, as text, or auto (text on a terminal, JSON otherwise).",
            choices=("auto", "json", "text"),
        ),
        _option(
            "log_level",
            "log-level",
            "CONVEYOR_LOG_LEVEL",
            "choice",
            "Lowest level of the log lines shown.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR"),
            case_sensitive=False,
        ),
        _option("debug", "debug", "CONVEYOR_DEBUG", "bool", "Show tracebacks and debug logs."),
    )
}

#: ``conveyor.connect()`` keywords (flag spellings and field names) to fields.
_KEYWORDS: dict[str, str] = {
    **{name: name for name in _FIELDS},
    **{option.keyword: option.field for option in OPTIONS.values()},
}


def env_value(option: Option, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The option's text in the environment and the variable it came from, or None.

    The first of its variables that is set and not empty wins (as on the command line).
    """
    for name in option.env:
        text = environ.get(name)
        if text:
            return name, text
    return None


def settings_from_env(environ: Mapping[str, str] | None = None, /, **values: Any) -> Settings:
    """Settings as the command line builds them: each keyword given (not None) wins over
    its environment variables, which win over the default.

    Keywords are the flags spelt with underscores (``queue``, ``visibility_timeout_s``,
    ``imports``) or the :class:`Settings` field names (``queue_url``). Values may be typed
    (``30``, ``Path(...)``, ``True``), or text for numbers and flags (``"30"``); a list
    (``imports``) is a sequence, or one string taken whole. ``wait_s`` defaults by queue
    (``SQLITE_WAIT_S`` or ``SQS_WAIT_S``).

    Args:
        environ: the environment (default: ``os.environ``).

    Raises:
        ConfigError: an unknown keyword, a value that is not valid (naming where it came
            from), or a heartbeat not shorter than the visibility timeout.
    """
    environ = os.environ if environ is None else environ
    fields: dict[str, Any] = {}
    for keyword, value in values.items():
        name = _KEYWORDS.get(keyword)
        if name is None:
            known = ", ".join(sorted(option.keyword for option in OPTIONS.values()))
            raise ConfigError(f"unknown setting {keyword!r}: use one of {known}")
        if value is None:
            continue
        if name in fields:
            raise ConfigError(f"setting {keyword!r} given twice (as a flag name and a field)")
        option = OPTIONS.get(name)
        if option is None:
            fields[name] = value  # a field with no flag (region): taken as given
        elif isinstance(value, str) and option.kind in ("int", "float", "bool"):
            fields[name] = option.parse(value, f"{keyword}=")  # "30", "true": as in env
        else:
            fields[name] = option.check(value, f"{keyword}=")
    for option in OPTIONS.values():
        if option.field in fields:
            continue
        found = env_value(option, environ)
        if found is not None:
            variable, text = found
            fields[option.field] = option.parse(text, f"{variable} (--{option.flag})")
    if "wait_s" not in fields:
        fields["wait_s"] = default_wait_s(fields.get("queue_url"))
    settings = Settings(**fields)
    check_heartbeat(settings)
    return settings


def check_heartbeat(settings: Settings) -> None:
    """Refuse a heartbeat that is not shorter than the visibility timeout.

    Raises:
        ConfigError: it is not.
    """
    every_s = settings.heartbeat_every_s
    if every_s is not None and every_s >= settings.visibility_timeout_s:
        raise ConfigError("--heartbeat-s must be shorter than --visibility-timeout-s")


def env_for(settings: Settings, *, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """The ``CONVEYOR_*`` variables that configure another conveyor process as ``settings``
    (each option's first variable; options that are None, and those in ``skip``, left out).
    """
    env: dict[str, str] = {}
    for option in OPTIONS.values():
        value = getattr(settings, option.field)
        if option.field in skip or value is None:
            continue
        if option.kind == "bool":
            text = "1" if value else "0"
        elif option.kind == "list":
            text = " ".join(value)
        else:
            text = str(value)
        env[option.env[0]] = text
    return env
