"""The ledger on PostgreSQL (13 or later; Amazon RDS or Aurora in a cluster), through
psycopg 3 and a small connection pool per process.

The forward-only rule is the shared upsert; triggers keep the counters (sharded per
backend, so concurrent writers do not queue on one row) and the history in the same
transaction. The password never leaves this module: errors and ``url`` show it as ``***``.
"""

from __future__ import annotations

import functools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from conveyor.errors import ConfigError, StorageError, StorageFull
from conveyor.jobs import TERMINAL
from conveyor.ledger import job_sql, schema
from conveyor.ledger.checks import EventRow, check_writer_id, new_writer_id
from conveyor.ledger.decode import decode_record
from conveyor.ledger.group_sql import Touch, Tx
from conveyor.ledger.records import JobRecord
from conveyor.ledger.schema import SCHEMA_VERSION
from conveyor.ledger.sql import SQLLedger
from conveyor.ledger.urls import redact_url

T = TypeVar("T")

#: Seconds to wait for a connection (to open one, or for a free one in the pool).
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: Tries of a transaction that deadlocked, failed to serialize, or lost its connection.
_ATTEMPTS = 5
#: Serialises schema creation and upgrades between processes (any fixed number).
_MIGRATE_LOCK = 7_301_967_133_101
#: What libpq says of a URL it cannot use (a configuration error, not an outage).
_BAD_URL = re.compile(r"invalid [\w -]*(value|option)|missing \"=\"|invalid (URI|percent-enc)")
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

# Pools a forked child inherited: their sockets belong to the parent, so the child must
# neither use nor close them; they are only kept from the garbage collector.
_ABANDONED: list[ConnectionPool[Any]] = []


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """A shared statement with psycopg's placeholders."""
    return sql.replace("?", "%s")


# Each event returns its job's group (NULL for most), state and role: a batch settles the
# groups it touched, and a batch of jobs without a group pays for nothing more.
_TOUCHED = " RETURNING group_id, state, completes"
_UPSERT = _pg(job_sql.UPSERT) + _TOUCHED
_REDRIVE = _pg(job_sql.REDRIVE) + _TOUCHED
#: The first key of the groups' advisory locks (the second is the group id's hash).
_GROUP_LOCK = 7_301_967
_TERMINAL = frozenset(state.value for state in TERMINAL)
_SELECT_JOBS = job_sql.SELECT_JOBS + "= ANY(%s)"


class PostgresLedger(SQLLedger):
    """The ledger in a PostgreSQL database, shared by every worker of a cluster.

    Each public write is one transaction, retried a few times on a deadlock, a
    serialization failure or a dropped connection (every write is idempotent). Reads are
    single statements. Thread-safe (the pool hands each thread its own connection); a
    forked child opens its own pool.
    """

    _PRUNE_LOCK = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        writer: str | None = None,
        pool_size: int = 2,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        check_schema: bool = True,
    ) -> None:
        """Connect to ``postgresql://user:password@host:port/database``.

        The database must exist; its schema is created on first use when ``create``.
        ``check_schema=False`` opens an older schema too (for ``conveyor ledger migrate``).

        Raises:
            ConfigError: the URL is malformed, or the server refuses the credentials.
            LedgerNotFound: ``create`` is False and there is no ledger there.
            SchemaMismatch: the schema is newer than this code's, or needs a migrate.
            StorageError: the server cannot be reached.
        """
        self.url = redact_url(url)
        self.writer = new_writer_id() if writer is None else check_writer_id(writer)
        if pool_size < 1:
            raise ConfigError(f"bad ledger pool size {pool_size}: at least 1")
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            raise ConfigError(f"bad ledger URL {self.url}: use postgresql://...") from None
        query_secrets = [
            value
            for key, values in parse_qs(parts.query).items()
            if key.lower() in ("password", "passwd")
            for value in values
        ]
        self._secrets = [s for s in {password, unquote(password or ""), *query_secrets} if s]
        self._database = unquote(parts.path.lstrip("/"))
        self._conninfo = url
        self._pool_size = pool_size
        self._timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._pool: ConnectionPool[Any] | None = None
        self._check(create=create, check=check_schema)

    # --- connections and transactions -------------------------------------------------------

    def _kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,  # reads are single statements; writes open a transaction
            "connect_timeout": max(1, round(self._timeout_s)),
            "application_name": "conveyor",
        }

    def _check(self, *, create: bool, check: bool) -> None:
        """Check (and on first use create) the schema, on a connection of its own so that
        a refusal says why (a pool only reports that it timed out)."""
        try:
            conn = psycopg.connect(self._conninfo, **self._kwargs())
        except psycopg.Error as exc:
            raise self._connect_error(exc, create=create) from None
        try:
            with conn:
                version = _version(conn)
                if version == 0 and not create:
                    raise schema.not_found(self.url)
                schema.check_version(version, self.url, upgrading=not check)
                if version == 0:
                    _upgrade(conn, self.url)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _connect_error(self, exc: psycopg.Error, *, create: bool) -> Exception:
        text = self._scrub(exc)
        if isinstance(exc, psycopg.ProgrammingError) or _BAD_URL.search(text):
            return ConfigError(f"bad ledger URL {self.url}: {text}")
        if f'database "{self._database}" does not exist' in text:
            if not create:
                return schema.not_found(self.url)
            return ConfigError(
                f"the ledger database {self._database!r} does not exist at {self.url}: "
                "create it (CREATE DATABASE) or fix the URL"
            )
        if "authentication failed" in text or ("role " in text and "does not exist" in text):
            return ConfigError(f"the ledger at {self.url} refused the login: {text}")
        return StorageError(f"cannot reach the ledger at {self.url}: {text}")

    def _scrub(self, exc: BaseException) -> str:
        """The error's text on one line, with the password (should it appear) masked."""
        text = " ".join(str(exc).split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, exc: psycopg.Error) -> StorageError:
        if isinstance(exc, pg_errors.DiskFull):
            return StorageFull(f"the ledger database at {self.url} is full: {self._scrub(exc)}")
        return StorageError(f"the ledger at {self.url} failed: {self._scrub(exc)}")

    def _connections(self) -> ConnectionPool[Any]:
        """This process's pool (opened on first use; a forked child opens its own)."""
        with self._lock:
            if self._closed:
                raise StorageError(f"the ledger {self.url} is closed")
            if self._pid != os.getpid():
                if self._pool is not None:
                    _ABANDONED.append(self._pool)
                self._pool, self._pid = None, os.getpid()
            if self._pool is None:
                pool: ConnectionPool[Any] = ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self._pool_size,
                    kwargs=self._kwargs(),
                    timeout=self._timeout_s,
                    name="conveyor-ledger",
                    open=False,
                )
                pool.open()
                self._pool = pool
            return self._pool

    def _run(self, work: Callable[[psycopg.Cursor[Any]], T], *, write: bool) -> T:
        """Run ``work`` on a pooled connection, in one transaction if ``write``; retry a
        deadlock, a serialization failure or a lost connection a few times (every write is
        idempotent, so a transaction whose commit was lost may safely run again)."""
        pool = self._connections()
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0.005, 0.05) * 2**attempt)
            try:
                with pool.connection() as conn:
                    if not write:
                        with conn.cursor() as cur:
                            return work(cur)
                    with conn.transaction(), conn.cursor() as cur:
                        return work(cur)
            except _RETRYABLE:
                continue
            except PoolTimeout:
                raise StorageError(
                    f"cannot reach the ledger at {self.url}: no connection within "
                    f"{self._timeout_s:g} s"
                ) from None
            except psycopg.OperationalError as exc:
                if isinstance(exc, pg_errors.DiskFull) or attempt + 1 == _ATTEMPTS:
                    raise self._error(exc) from None
                pool.check()  # a lost connection: drop the idle ones lost with it
            except psycopg.Error as exc:
                raise self._error(exc) from None
        raise StorageError(f"the ledger at {self.url} stayed busy (deadlocks); retry")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        statement = _pg(sql)

        def fetch(cur: psycopg.Cursor[Any]) -> list[Any]:
            cur.execute(statement, params)
            return cur.fetchall()

        return self._run(fetch, write=False)

    # --- writing ------------------------------------------------------------------------------

    def _transaction(self, work: Callable[[Tx], T]) -> T:
        return self._run(lambda cur: work(_PostgresTx(cur)), write=True)

    # --- reading ------------------------------------------------------------------------------

    def _get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        rows = self._query(_SELECT_JOBS, (list(job_ids),))
        records = (decode_record(row) for row in rows)
        return {record.job_id: record for record in records}

    # --- schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        return self._run(lambda cur: _version(cur.connection), write=False)

    def migrate(self) -> tuple[int, int]:
        return self._run(lambda cur: _upgrade(cur.connection, self.url), write=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            if pool is not None:
                if self._pid == os.getpid():
                    pool.close()
                else:
                    _ABANDONED.append(pool)


class _PostgresTx:
    """A write transaction on a pooled connection; rows a decision depends on are locked
    with ``FOR UPDATE``."""

    lock = " FOR UPDATE"

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self._cur.execute(_pg(sql), params)
        return self._cur.fetchall() if self._cur.description else []

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(_pg(sql), params)

    def apply(self, rows: Sequence[EventRow]) -> dict[str, Touch]:
        # Jobs in id order (each job's events keep theirs): concurrent batches then lock
        # the rows they share in the same order, which avoids most deadlocks.
        cur = self._cur
        touched: dict[str, Touch] = {}
        for redrive, run in job_sql.runs(sorted(rows, key=lambda row: row.job_id)):
            if redrive:
                sql = _REDRIVE
                params = [job_sql.redrive_params(r.job_id, r.at, r.worker) for r in run]
            else:
                sql, params = _UPSERT, [job_sql.event_params(r) for r in run]
            cur.executemany(sql, params, returning=True)
            for row in run:
                for group, state, completes in cur.fetchall():
                    if group is not None:
                        touch = _touch(state, completes, joining=row.group is not None)
                        touched[group] = touched.get(group, Touch(0)) | touch
                if not cur.nextset():
                    break
        return touched

    def lock_group(self, group_id: str) -> None:
        self._cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_GROUP_LOCK, group_id))


def _touch(state: str, completes: int, *, joining: bool) -> Touch:
    """What an event did to its job's group: an end, or a job joining, may decide it."""
    if completes:
        return Touch.COMPLETION
    if joining or state in _TERMINAL:
        return Touch.COUNTED | Touch.DECISIVE
    return Touch.COUNTED


def _version(conn: psycopg.Connection[Any]) -> int:
    """The schema version in the database (0 if it has none)."""
    row = conn.execute("SELECT to_regclass('conveyor_meta') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute(schema.READ_VERSION).fetchone()
    return 0 if found is None else int(found[0])


def _upgrade(conn: psycopg.Connection[Any], url: str) -> tuple[int, int]:
    """Create or upgrade the schema in one transaction; (before, after).

    An advisory lock makes concurrent first users wait for one another; the version is
    read again under it.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        before = _version(conn)
        schema.check_version(before, url, upgrading=True)
        for step in schema.POSTGRES_STEPS[before:]:
            for statement in step:
                conn.execute(statement)
        if before != SCHEMA_VERSION:
            conn.execute(_pg(schema.WRITE_VERSION), (str(SCHEMA_VERSION),))
    return before, SCHEMA_VERSION
