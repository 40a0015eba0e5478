"""The ledger's tables, statements and row decoding, shared by the SQLite and PostgreSQL
backends: the forward-only rule lives here once, as the upsert both databases run.

Statements use ``?`` placeholders; the PostgreSQL backend turns them into ``%s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.errors import ConfigError
from conveyor.jobs import TERMINAL, JobState
from conveyor.ledger import group_sql
from conveyor.ledger.base import SCHEMA_VERSION, EventRow, SchemaMismatch

_TERMINAL = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL))
#: States whose event's error the job keeps (a reason to show); others clear it.
_ERROR_STATES = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.RETRYING})

#: Counter rows per (task, state) on PostgreSQL: concurrent writers bump different rows.
COUNT_SHARDS = 16

# --- the tables, per backend, as a list of migration steps (step i makes version i+1) -----

_SQLITE_V1 = [
    "CREATE TABLE conveyor_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE conveyor_jobs (
        job_id TEXT PRIMARY KEY NOT NULL,
        state TEXT NOT NULL,
        rank INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        task TEXT, input TEXT, output TEXT, seed INTEGER, worker TEXT, source TEXT,
        submitted_at REAL, started_at REAL, finished_at REAL,
        updated_at REAL NOT NULL,
        error TEXT, result TEXT,
        redrives INTEGER NOT NULL DEFAULT 0,
        group_id TEXT, completes INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE conveyor_transitions (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL,
        at REAL NOT NULL, worker TEXT, error TEXT)""",
    """CREATE TABLE conveyor_counts (
        task TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (task, state)) WITHOUT ROWID""",
    """CREATE TABLE conveyor_worker_stats (
        writer TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (writer, kind)) WITHOUT ROWID""",
    "CREATE INDEX conveyor_jobs_upper_id ON conveyor_jobs (upper(job_id))",
    *group_sql.SQLITE_TABLES,
    # Insert and update triggers would triple the cost of an event's upsert on SQLite (they
    # turn off its fast path): the backend writes counts and history itself, in the same
    # transaction. Deletes (prune) are rare, so a trigger does that part.
    """CREATE TRIGGER conveyor_jobs_deleted AFTER DELETE ON conveyor_jobs BEGIN
        UPDATE conveyor_counts SET n = n - 1
            WHERE task = coalesce(old.task, '') AND state = old.state;
        DELETE FROM conveyor_transitions WHERE job_id = old.job_id;
    END""",
    group_sql.SQLITE_UNCOUNT_TRIGGER,
]

# A group's counts move from one state (p_minus, or none) to another (p_plus, or none).
_PG_GROUP_ADD = group_sql.bump(
    [
        "p_group",
        f"pg_backend_pid() % {group_sql.GROUP_SHARDS}",
        *(
            f"coalesce(p_plus = '{state.value}', false)::int "
            f"- coalesce(p_minus = '{state.value}', false)::int"
            for state in group_sql.STATES
        ),
        "p_started",
        "p_finished",
    ]
)

# A job's move, as a trigger appends it to the history.
_PG_NOTE_MOVE = """INSERT INTO conveyor_transitions (job_id, state, attempt, at, worker, error)
            VALUES (new.job_id, new.state, new.attempts, new.updated_at, new.worker, new.error);"""

# job_id compares byte-wise ("C"), so prefix ranges and paging order do not depend on the
# server's locale.
_POSTGRES_V1 = [
    "CREATE TABLE conveyor_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE conveyor_jobs (
        job_id text COLLATE "C" PRIMARY KEY,
        state text NOT NULL,
        rank bigint NOT NULL,
        attempts integer NOT NULL,
        task text, input text, output text, seed bigint, worker text, source text,
        submitted_at double precision, started_at double precision,
        finished_at double precision,
        updated_at double precision NOT NULL,
        error text, result text,
        redrives integer NOT NULL DEFAULT 0,
        group_id text COLLATE "C", completes integer NOT NULL DEFAULT 0)""",
    """CREATE TABLE conveyor_transitions (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id text COLLATE "C" NOT NULL, state text NOT NULL, attempt integer NOT NULL,
        at double precision NOT NULL, worker text, error text)""",
    """CREATE TABLE conveyor_counts (
        task text NOT NULL, state text NOT NULL, shard smallint NOT NULL, n bigint NOT NULL,
        PRIMARY KEY (task, state, shard))""",
    """CREATE TABLE conveyor_worker_stats (
        writer text NOT NULL, kind text NOT NULL, n bigint NOT NULL,
        updated_at double precision NOT NULL, PRIMARY KEY (writer, kind))""",
    "CREATE INDEX conveyor_jobs_upper_id ON conveyor_jobs (upper(job_id))",
    *group_sql.POSTGRES_TABLES,
    # Writers bump the shard of their own backend, so that concurrent transactions rarely
    # wait on (or deadlock over) the same counter row; readers sum the shards.
    f"""CREATE FUNCTION conveyor_bump(p_task text, p_state text, p_delta bigint)
    RETURNS void LANGUAGE sql AS $$
        INSERT INTO conveyor_counts (task, state, shard, n)
        VALUES (coalesce(p_task, ''), p_state, pg_backend_pid() % {COUNT_SHARDS}, p_delta)
        ON CONFLICT (task, state, shard) DO UPDATE SET n = conveyor_counts.n + excluded.n
    $$""",
    # A group's counts, sharded by backend like the task counts (see group_sql). Jobs
    # without a group never call it.
    f"""CREATE FUNCTION conveyor_group_add(p_group text, p_minus text, p_plus text,
        p_started double precision, p_finished double precision)
    RETURNS void LANGUAGE sql AS $$
        {_PG_GROUP_ADD}
    $$""",
    f"""CREATE FUNCTION conveyor_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM conveyor_bump(new.task, new.state, 1);
        {_PG_NOTE_MOVE}
        IF new.group_id IS NOT NULL AND new.completes = 0 THEN
            PERFORM conveyor_group_add(new.group_id, NULL, new.state, new.started_at,
                new.finished_at);
        END IF;
        RETURN NULL;
    END $$""",
    # A job's group never changes once set, but a job may join one late (its queued event
    # arrives after its worker's), or become a group's completion (which is not counted).
    """CREATE FUNCTION conveyor_jobs_recounted() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        was_in text := CASE WHEN old.completes = 0 THEN old.group_id END;
        is_in text := CASE WHEN new.completes = 0 THEN new.group_id END;
    BEGIN
        IF old.state IS DISTINCT FROM new.state OR old.task IS DISTINCT FROM new.task THEN
            PERFORM conveyor_bump(old.task, old.state, -1);
            PERFORM conveyor_bump(new.task, new.state, 1);
        END IF;
        IF was_in IS NOT DISTINCT FROM is_in THEN
            IF was_in IS NOT NULL AND old.state <> new.state THEN
                PERFORM conveyor_group_add(was_in, old.state, new.state, new.started_at,
                    new.finished_at);
            END IF;
        ELSE
            IF was_in IS NOT NULL THEN
                PERFORM conveyor_group_add(was_in, old.state, NULL, NULL, NULL);
            END IF;
            IF is_in IS NOT NULL THEN
                PERFORM conveyor_group_add(is_in, NULL, new.state, new.started_at,
                    new.finished_at);
            END IF;
        END IF;
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION conveyor_jobs_moved() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_PG_NOTE_MOVE}
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION conveyor_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM conveyor_bump(old.task, old.state, -1);
        DELETE FROM conveyor_transitions WHERE job_id = old.job_id;
        IF old.group_id IS NOT NULL AND old.completes = 0 THEN
            PERFORM conveyor_group_add(old.group_id, old.state, NULL, NULL, NULL);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER conveyor_jobs_inserted AFTER INSERT ON conveyor_jobs
    FOR EACH ROW EXECUTE FUNCTION conveyor_jobs_inserted()""",
    """CREATE TRIGGER conveyor_jobs_recounted
    AFTER UPDATE OF state, task, group_id, completes ON conveyor_jobs
    FOR EACH ROW WHEN (old.state IS DISTINCT FROM new.state OR old.task IS DISTINCT FROM new.task
        OR old.group_id IS DISTINCT FROM new.group_id OR old.completes <> new.completes)
    EXECUTE FUNCTION conveyor_jobs_recounted()""",
    """CREATE TRIGGER conveyor_jobs_moved AFTER UPDATE OF rank ON conveyor_jobs
    FOR EACH ROW WHEN (old.rank <> new.rank) EXECUTE FUNCTION conveyor_jobs_moved()""",
    """CREATE TRIGGER conveyor_jobs_deleted AFTER DELETE ON conveyor_jobs
    FOR EACH ROW EXECUTE FUNCTION conveyor_jobs_deleted()""",
]

# Every reader is an index walk (see the Ledger docstring); the same on both databases.
# Few indexes, because each one a worker's event moves costs a page write per transaction:
# a terminal job's finish time is its update time, so (state, updated_at) also finds what
# finished in a window, the last finish and what to prune; unfiltered and task-only
# listings merge one walk per state (see jobs_query); the first submit is the oldest
# history row.
_INDEXES_V1 = [
    "CREATE INDEX conveyor_jobs_state ON conveyor_jobs (state, updated_at, job_id)",
    "CREATE INDEX conveyor_jobs_task_state ON conveyor_jobs (task, state, updated_at, job_id)",
    "CREATE INDEX conveyor_transitions_job ON conveyor_transitions (job_id, id)",
    "CREATE INDEX conveyor_transitions_at ON conveyor_transitions (at, id)",
]

#: Migration steps: ``STEPS[i]`` turns a version-``i`` database into version ``i + 1``.
SQLITE_STEPS: list[list[str]] = [_SQLITE_V1 + _INDEXES_V1 + group_sql.INDEXES]
POSTGRES_STEPS: list[list[str]] = [_POSTGRES_V1 + _INDEXES_V1 + group_sql.INDEXES]
assert len(SQLITE_STEPS) == len(POSTGRES_STEPS) == SCHEMA_VERSION

READ_VERSION = "SELECT value FROM conveyor_meta WHERE key = 'schema_version'"
WRITE_VERSION = (
    "INSERT INTO conveyor_meta (key, value) VALUES ('schema_version', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def check_version(version: int, where: str, *, upgrading: bool = False) -> None:
    """Refuse a schema this code cannot use: newer always, older unless ``upgrading``.

    Raises:
        SchemaMismatch: with one line saying what to do.
    """
    if version > SCHEMA_VERSION:
        raise SchemaMismatch(
            f"the ledger at {where} has schema v{version}, newer than this conveyor's "
            f"v{SCHEMA_VERSION}: upgrade conveyor"
        )
    if 0 < version < SCHEMA_VERSION and not upgrading:
        raise SchemaMismatch(
            f"the ledger at {where} has schema v{version}, older than this conveyor's "
            f"v{SCHEMA_VERSION}: run `conveyor ledger migrate`"
        )


def not_found(url: str) -> ConfigError:
    """The error for a ledger that does not exist yet (``create=False``)."""
    from conveyor.ledger import LedgerNotFound

    return LedgerNotFound(
        f"no ledger at {url}: nothing was submitted there yet "
        "(or point --ledger / CONVEYOR_LEDGER_URL at the right one)"
    )


# --- writing ----------------------------------------------------------------------------

# One event, applied by the rank rule in the database. The VALUES row is the job as if this
# were its first event; on conflict it merges: the larger rank wins the state and what goes
# with it, fields the job lacks are filled from any event, the earliest queued time is the
# submit time, and the start is the winning run's.
_WIN = "excluded.rank > j.rank"


def _fill(column: str) -> str:
    """The winner's value if it carries one; else the job's; else this event's."""
    return (
        f"{column} = CASE WHEN {_WIN} THEN coalesce(excluded.{column}, j.{column}) "
        f"ELSE coalesce(j.{column}, excluded.{column}) END"
    )


def _winner(column: str) -> str:
    return f"{column} = CASE WHEN {_WIN} THEN excluded.{column} ELSE j.{column} END"


UPSERT = f"""
INSERT INTO conveyor_jobs AS j (job_id, state, rank, attempts, task, input, output, seed,
    worker, source, submitted_at, started_at, finished_at, updated_at, error, result,
    group_id, completes)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    {_winner("state")}, {_winner("rank")},
    attempts = CASE WHEN excluded.attempts > j.attempts THEN excluded.attempts
        ELSE j.attempts END,
    {_fill("task")}, {_fill("input")}, {_fill("output")}, {_fill("seed")},
    {_fill("worker")}, {_fill("source")},
    submitted_at = CASE WHEN j.submitted_at IS NULL OR excluded.submitted_at < j.submitted_at
        THEN excluded.submitted_at ELSE j.submitted_at END,
    started_at = CASE WHEN excluded.started_at IS NOT NULL AND ({_WIN}
            OR (j.started_at IS NULL AND excluded.attempts >= j.attempts))
        THEN excluded.started_at ELSE j.started_at END,
    {_winner("finished_at")}, {_winner("updated_at")}, {_winner("error")}, {_winner("result")},
    group_id = coalesce(j.group_id, excluded.group_id),
    completes = CASE WHEN excluded.completes > j.completes THEN excluded.completes
        ELSE j.completes END
"""

REDRIVE = """
UPDATE conveyor_jobs SET state = 'queued', rank = 0, attempts = 0, redrives = redrives + 1,
    error = NULL, result = NULL, started_at = NULL, finished_at = NULL, updated_at = ?,
    worker = ?
WHERE job_id = ? AND state = 'failed'
"""


def event_params(row: EventRow) -> tuple[Any, ...]:
    """The :data:`UPSERT` parameters of one event: the job as if it were its first."""
    state, at = row.state, row.at
    return (
        row.job_id,
        state.value,
        row.rank,
        row.attempt,
        row.task,
        row.input,
        row.output,
        row.seed,
        row.worker,
        row.source,
        at if state is JobState.QUEUED else None,
        at if state is JobState.RUNNING else None,
        at if state in TERMINAL else None,
        at,
        row.error if state in _ERROR_STATES else None,
        row.result_json if state is JobState.SUCCEEDED else None,
        row.group,
        1 if row.completes else 0,
    )


def redrive_params(job_id: str, at: float, worker: str | None = None) -> tuple[Any, ...]:
    """The :data:`REDRIVE` parameters."""
    return (at, worker, job_id)


def runs(rows: Sequence[EventRow]) -> list[tuple[bool, list[EventRow]]]:
    """Split a batch into runs of ordinary events and of redrives, keeping its order
    (ordinary ones go to the database in one ``executemany`` per run)."""
    out: list[tuple[bool, list[EventRow]]] = []
    for row in rows:
        if out and out[-1][0] == row.redrive:
            out[-1][1].append(row)
        else:
            out.append((row.redrive, [row]))
    return out


INSERT_TRANSITION = (
    "INSERT INTO conveyor_transitions (job_id, state, attempt, at, worker, error) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
DELETE_WORKER_STATS = "DELETE FROM conveyor_worker_stats WHERE writer = ?"
INSERT_WORKER_STAT = (
    "INSERT INTO conveyor_worker_stats (writer, kind, n, updated_at) VALUES (?, ?, ?, ?)"
)
PRUNE_WRITERS = "DELETE FROM conveyor_worker_stats WHERE updated_at < ?"
#: A terminal job's update time is its finish time; the delete trigger takes its history
#: and its share of the counts. A group's jobs go with their group (group_sql); those of a
#: group never created go as plain jobs.
PRUNE_JOBS = f"""
DELETE FROM conveyor_jobs WHERE job_id IN (
    SELECT job_id FROM conveyor_jobs WHERE state IN ({_TERMINAL}) AND updated_at < ?
        AND (group_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM conveyor_groups g WHERE g.group_id = conveyor_jobs.group_id))
    LIMIT ?{{lock}})
RETURNING group_id
"""

# --- reading ----------------------------------------------------------------------------

_RECORD_COLUMNS = (
    "job_id, state, attempts, updated_at, task, input, output, seed, worker, source, "
    "submitted_at, started_at, finished_at, error, result, redrives, group_id, completes"
)
_TRANSITION_COLUMNS = "job_id, state, attempt, at, worker, error"

#: Records by id: the backend appends ``IN (?, ...)`` or ``= ANY(%s)``.
SELECT_JOBS = f"SELECT {_RECORD_COLUMNS} FROM conveyor_jobs WHERE job_id "
FIND_PREFIX = """
SELECT job_id FROM conveyor_jobs WHERE upper(job_id) >= ? AND upper(job_id) < ?
ORDER BY upper(job_id) LIMIT ?
"""
COUNTS = "SELECT task, state, sum(n) FROM conveyor_counts GROUP BY task, state"
FINISHED_BETWEEN = (
    f"SELECT count(*) FROM conveyor_jobs WHERE state IN ({_TERMINAL}) "
    "AND updated_at >= ? AND updated_at <= ?"
)
# The first submit is the oldest history row (a job's first transition is its submit, but
# for a job whose worker wrote first); the last finish is the newest of three index ends.
SPAN = (
    "SELECT (SELECT min(at) FROM conveyor_transitions), (SELECT max(last) FROM ("
    + " UNION ALL ".join(
        f"SELECT (SELECT max(updated_at) FROM conveyor_jobs WHERE state = '{state.value}') AS last"
        for state in sorted(TERMINAL)
    )
    + ") AS ends)"
)
# A queued job's update time is when it was queued (submitted, or reopened by a redrive).
OLDEST_QUEUED = "SELECT min(updated_at) FROM conveyor_jobs WHERE state = 'queued'"
HISTORY = f"SELECT {_TRANSITION_COLUMNS} FROM conveyor_transitions WHERE job_id = ? ORDER BY id"
QUEUE_REQUESTS = "SELECT kind, sum(n) FROM conveyor_worker_stats GROUP BY kind"


def transitions_query(until: float | None) -> str:
    """State changes in a time window, oldest first (an index range on ``at``)."""
    upper = "" if until is None else " AND at < ?"
    return (
        f"SELECT {_TRANSITION_COLUMNS} FROM conveyor_transitions "
        f"WHERE at >= ?{upper} ORDER BY at, id LIMIT ?"
    )


def jobs_query(
    state: JobState | None,
    task: str | None,
    limit: int,
    before: tuple[float, str] | None,
    group: str | None = None,
) -> tuple[str, list[Any]]:
    """A page of jobs, newest update first: a walk of the (task,|group,) state index, or
    without a state, a merge of one such walk per state (each at most ``limit`` rows)."""
    if state is not None:
        return _state_page(state, task, limit, before, group)
    parts: list[str] = []
    params: list[Any] = []
    for each in JobState:
        sql, args = _state_page(each, task, limit, before, group)
        parts.append(f"SELECT * FROM ({sql}) AS {each.value}")
        params.extend(args)
    params.append(limit)
    return " UNION ALL ".join(parts) + f" {_NEWEST_FIRST} LIMIT ?", params


_NEWEST_FIRST = "ORDER BY updated_at DESC, job_id DESC"


def _state_page(
    state: JobState,
    task: str | None,
    limit: int,
    before: tuple[float, str] | None,
    group: str | None,
) -> tuple[str, list[Any]]:
    where = ["state = ?"]
    params: list[Any] = [state.value]
    if group is not None:
        where.append("group_id = ?")
        params.append(group)
    if task is not None:
        where.append("task = ?")
        params.append(task)
    if before is not None:
        where.append("(updated_at, job_id) < (?, ?)")
        params.extend(before)
    params.append(limit)
    sql = (
        f"SELECT {_RECORD_COLUMNS} FROM conveyor_jobs WHERE {' AND '.join(where)} "
        f"{_NEWEST_FIRST} LIMIT ?"
    )
    return sql, params


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """``[prefix, next)``: the range of upper-cased ids that start with ``prefix``."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)
