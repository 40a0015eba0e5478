"""One frozen Settings, built once at start-up (flag > CONVEYOR_* env > default), passed down.

:func:`settings_from_env` (what ``conveyor.connect()`` uses) reads the environment through the
table the command line's options come from (:mod:`conveyor.settings_table`), so a script and a
``conveyor worker`` started in one shell are configured alike. Also the process exit codes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conveyor.errors import ConfigError
from conveyor.option import env_value
from conveyor.settings_table import OPTIONS, SQLITE_WAIT_S, SQS_WAIT_S

#: Where conveyor keeps its own state inside the storage root (ledger, claim checks,
#: the default SQLite queue). Job paths may not point inside it.
STATE_DIR = "_conveyor"

# Process exit codes, documented in the README and used by Kubernetes podFailurePolicy.
EXIT_OK = 0  #: finished: drained (--until-empty), --max-jobs or --max-idle-s reached
EXIT_FAILED = 1  #: an unexpected error
EXIT_USAGE = 2  #: bad command-line usage (click's own code)
EXIT_BAD_INPUT = 65  #: EX_DATAERR: the input of `conveyor run` is malformed
EXIT_INTERRUPTED = 75  #: EX_TEMPFAIL: stopped by SIGTERM/SIGINT before the queue drained
EXIT_CONFIG = 78  #: EX_CONFIG: broken configuration (bad URL, missing queue, no permission)
EXIT_TIMEOUT = 124  #: `conveyor wait --timeout-s`: jobs still open (timeout(1)'s code)


def default_queue_url(storage: Path) -> str:
    """The embedded queue's URL for a storage root: a SQLite file in its state directory."""
    return f"sqlite:///{(storage / STATE_DIR / 'queue.db').resolve()}"


def default_wait_s(queue_url: str | None) -> float:
    """The long-poll wait for a queue when none is configured (see ``SQLITE_WAIT_S``)."""
    return SQLITE_WAIT_S if urlsplit(queue_url or "sqlite:").scheme == "sqlite" else SQS_WAIT_S


def _default(field: str) -> Any:
    """A :class:`Settings` field's default: its option's in the table."""
    return OPTIONS[field].default


@dataclass(frozen=True)
class Settings:
    """Everything a conveyor process is configured with. Seconds carry ``_s`` in the name.

    Each field's default is its option's in the table (:data:`OPTIONS`).
    """

    storage: Path = _default("storage")  # noqa: RUF009 (a Path is immutable)
    queue_url: str | None = _default("queue_url")
    # None: the embedded SQLite ledger in the storage root
    ledger_url: str | None = _default("ledger_url")
    endpoint_url: str | None = _default("endpoint_url")
    region: str | None = None

    # Worker
    visibility_timeout_s: int = _default("visibility_timeout_s")
    # None: a third of the visibility timeout
    heartbeat_every_s: float | None = _default("heartbeat_every_s")
    max_receive_count: int = _default("max_receive_count")
    wait_s: float = _default("wait_s")
    batch_size: int = _default("batch_size")
    grace_s: float = _default("grace_s")
    processes: int = _default("processes")
    until_empty: bool = _default("until_empty")
    empty_polls: int = _default("empty_polls")
    max_jobs: int | None = _default("max_jobs")
    max_idle_s: float | None = _default("max_idle_s")
    retry_base_s: float = _default("retry_base_s")
    retry_max_s: float = _default("retry_max_s")
    imports: tuple[str, ...] = _default("imports")
    metrics_port: int | None = _default("metrics_port")  # Prometheus /metrics; None: off
    metrics_host: str = _default("metrics_host")  # manifests set 0.0.0.0 for the scraper
    # touched every round and heartbeat (liveness probe)
    health_file: Path | None = _default("health_file")  # noqa: RUF009

    # Output
    debug: bool = _default("debug")
    log_format: str = _default("log_format")  # auto | json | text
    log_level: str = _default("log_level")

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


#: ``conveyor.connect()`` keywords (flag spellings and field names) to fields.
_KEYWORDS: dict[str, str] = {
    **{spec.name: spec.name for spec in dataclasses.fields(Settings)},
    **{option.keyword: option.field for option in OPTIONS.values()},
}


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
