"""The job ledger: every job's state in a database, SQLite embedded or PostgreSQL.

``open_ledger(url)`` picks the backend by the URL's scheme and imports it lazily.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from conveyor.errors import ConfigError
from conveyor.ledger.base import (
    DEFAULT_RETENTION_S,
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    SCHEMA_VERSION,
    AmbiguousJobId,
    Failure,
    JobFinished,
    JobNotFound,
    JobRecord,
    Ledger,
    LedgerEvent,
    LedgerSummary,
    SchemaMismatch,
    Transition,
    check_writer_id,
    new_writer_id,
    state_rank,
)
from conveyor.ledger.groups import (
    Completion,
    GroupConflict,
    GroupRecord,
    GroupState,
)

#: The embedded ledger's file name, beside the SQLite queue in the storage's ``_conveyor/``.
LEDGER_FILE = "ledger.db"


def default_ledger_url(storage: Path) -> str:
    """The embedded ledger's URL for a storage root."""
    from conveyor.settings import STATE_DIR

    return f"sqlite://{(Path(storage) / STATE_DIR / LEDGER_FILE).resolve()}"  # sqlite:///abs


def redact_url(url: str) -> str:
    """The URL with its password (and any ``password=`` query value) replaced by ``***``:
    safe for logs, errors, ``--help`` and manifests."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if sep else f"{user}@{host}"
    query = "&".join(
        f"{key}=***" if key.lower() in ("password", "passwd") else item
        for item in parts.query.split("&")
        if item
        for key in [item.partition("=")[0]]
    )
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret (and urlunsplit would drop sqlite:/// slashes)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def open_ledger(
    url: str,
    *,
    create: bool = True,
    writer: str | None = None,
    check_schema: bool = True,
) -> Ledger:
    """Open the ledger at ``url``: ``sqlite:///path`` or ``postgresql://...``.

    Args:
        url: where the ledger is.
        create: create the database and its schema if missing; False for read-only
            commands, which then raise :class:`LedgerNotFound` instead.
        writer: this process's writer id (default: a new one).
        check_schema: refuse a schema older than this code's; False only to migrate it.

    Raises:
        ConfigError: the URL's scheme is unknown, or (SQLite) the path is on NFS/EFS.
        LedgerNotFound: ``create`` is False and there is no ledger there.
        SchemaMismatch: the schema is newer than this code's, or needs a migrate.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from conveyor.ledger.sqlite import SQLiteLedger

        return SQLiteLedger.from_url(url, create=create, writer=writer, check_schema=check_schema)
    if scheme in ("postgresql", "postgres"):
        from conveyor.ledger.postgres import PostgresLedger

        return PostgresLedger(url, create=create, writer=writer, check_schema=check_schema)
    raise ConfigError(
        f"unknown ledger URL {redact_url(url)!r}: use sqlite:///path or postgresql://..."
    )


class LedgerNotFound(ConfigError):
    """There is no ledger at that URL yet (nothing was submitted)."""


__all__ = [
    "DEFAULT_RETENTION_S",
    "LEDGER_FILE",
    "MAX_ERROR_CHARS",
    "MAX_RESULT_BYTES",
    "SCHEMA_VERSION",
    "AmbiguousJobId",
    "Completion",
    "Failure",
    "GroupConflict",
    "GroupRecord",
    "GroupState",
    "JobFinished",
    "JobNotFound",
    "JobRecord",
    "Ledger",
    "LedgerEvent",
    "LedgerNotFound",
    "LedgerSummary",
    "SchemaMismatch",
    "Transition",
    "check_writer_id",
    "default_ledger_url",
    "new_writer_id",
    "open_ledger",
    "redact_url",
    "state_rank",
]
