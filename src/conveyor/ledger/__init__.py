"""The job ledger: every job's state in a database, SQLite embedded or PostgreSQL.

``open_ledger(url)`` picks the backend by the URL's scheme and imports it lazily.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from conveyor.errors import ConfigError
from conveyor.ledger.base import DEFAULT_RETENTION_S, Ledger
from conveyor.ledger.checks import (
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    check_writer_id,
    new_writer_id,
)
from conveyor.ledger.errors import (
    AmbiguousJobId,
    JobFinished,
    JobNotFound,
    LedgerNotFound,
    SchemaMismatch,
)
from conveyor.ledger.groups import (
    Completion,
    GroupConflict,
    GroupRecord,
    GroupState,
)
from conveyor.ledger.records import (
    Failure,
    JobRecord,
    LedgerEvent,
    LedgerSummary,
    Transition,
    state_rank,
)
from conveyor.ledger.schema import SCHEMA_VERSION
from conveyor.ledger.urls import LEDGER_FILE, default_ledger_url, redact_url


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
