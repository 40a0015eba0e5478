"""The ledger's schema: the tables, triggers and indexes of both databases (jobs, their
history and counts, groups), as forward-only migration steps, and the version check.
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.jobs import JobState
from conveyor.ledger.errors import LedgerNotFound, SchemaMismatch

#: The schema version this code writes. A database with a newer one is refused; an older
#: one is upgraded by ``conveyor ledger migrate``.
SCHEMA_VERSION = 1

#: Counter rows per (task, state) on PostgreSQL: concurrent writers bump different rows.
COUNT_SHARDS = 16

#: The job states, in the order of the count columns.
STATES = tuple(JobState)
COUNT_COLUMNS = tuple(f"n_{state.value}" for state in STATES)
#: Counter rows per group on PostgreSQL (a writer bumps the row of its backend).
GROUP_SHARDS = 64

# --- the group tables (the jobs' tables are below) -------------------------------------------


def _tables(text: str, real: str, key: str, without_rowid: str) -> list[str]:
    counts = ",\n        ".join(f"{column} bigint NOT NULL DEFAULT 0" for column in COUNT_COLUMNS)
    return [
        f"""CREATE TABLE conveyor_groups (
        group_id {key} PRIMARY KEY NOT NULL,
        state {text} NOT NULL,
        total bigint NOT NULL,
        tolerate_failures bigint NOT NULL,
        completion_job_id {text},
        completion {text},
        source {text},
        created_at {real} NOT NULL,
        finished_at {real},
        reason {text},
        completion_due_at {real},
        completion_sent_at {real})""",
        # Rows appear with a group's first counted job, before or after create_group.
        f"""CREATE TABLE conveyor_group_counts (
        group_id {key} NOT NULL,
        shard smallint NOT NULL,
        {counts},
        first_started_at {real},
        last_finished_at {real},
        PRIMARY KEY (group_id, shard)){without_rowid}""",
    ]


SQLITE_TABLES = _tables("TEXT", "REAL", "TEXT", " WITHOUT ROWID")
POSTGRES_TABLES = _tables("text", "double precision", 'text COLLATE "C"', "")
GROUP_INDEXES = [
    "CREATE INDEX conveyor_groups_created ON conveyor_groups (created_at, group_id)",
    "CREATE INDEX conveyor_groups_upper_id ON conveyor_groups (upper(group_id))",
    """CREATE INDEX conveyor_groups_due ON conveyor_groups (completion_due_at, group_id)
        WHERE state = 'completing' AND completion_sent_at IS NULL""",
    """CREATE INDEX conveyor_groups_finished ON conveyor_groups (finished_at)
        WHERE finished_at IS NOT NULL""",
    # Jobs without a group are not in it: their writes never touch it.
    """CREATE INDEX conveyor_jobs_group ON conveyor_jobs (group_id, state, updated_at, job_id)
        WHERE group_id IS NOT NULL""",
]


def bump(values: Sequence[str]) -> str:
    """Add to a group's counter row: ``values`` are the group id, the shard, one delta per
    state (:data:`STATES`' order), a start time and a finish time (or NULL), as
    placeholders or expressions."""
    columns = ", ".join(COUNT_COLUMNS)
    sets = ", ".join(f"{column} = c.{column} + excluded.{column}" for column in COUNT_COLUMNS)
    return f"""INSERT INTO conveyor_group_counts AS c (group_id, shard, {columns},
        first_started_at, last_finished_at) VALUES ({", ".join(values)})
    ON CONFLICT (group_id, shard) DO UPDATE SET {sets},
        first_started_at = CASE WHEN c.first_started_at IS NULL
            OR excluded.first_started_at < c.first_started_at
            THEN excluded.first_started_at ELSE c.first_started_at END,
        last_finished_at = CASE WHEN c.last_finished_at IS NULL
            OR excluded.last_finished_at > c.last_finished_at
            THEN excluded.last_finished_at ELSE c.last_finished_at END"""


#: SQLite's bump (one counter row per group), with its values as parameters.
BUMP = bump(["?", "0", *["?"] * len(STATES), "?", "?"])

#: SQLite's delete trigger: a pruned job leaves its group's counts.
SQLITE_UNCOUNT_TRIGGER = f"""CREATE TRIGGER conveyor_jobs_group_deleted
    AFTER DELETE ON conveyor_jobs WHEN old.group_id IS NOT NULL AND old.completes = 0 BEGIN
        UPDATE conveyor_group_counts SET {
    ", ".join(
        f"{column} = {column} - (old.state = '{state.value}')"
        for column, state in zip(COUNT_COLUMNS, STATES, strict=True)
    )
} WHERE group_id = old.group_id AND shard = 0;
    END"""

#: The summed counter rows of a group: its counts, first start and last finish.
SUMS = (
    ", ".join(f"coalesce(sum({column}), 0)" for column in COUNT_COLUMNS)
    + ", min(first_started_at), max(last_finished_at)"
)

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
    *SQLITE_TABLES,
    # Insert and update triggers would triple the cost of an event's upsert on SQLite (they
    # turn off its fast path): the backend writes counts and history itself, in the same
    # transaction. Deletes (prune) are rare, so a trigger does that part.
    """CREATE TRIGGER conveyor_jobs_deleted AFTER DELETE ON conveyor_jobs BEGIN
        UPDATE conveyor_counts SET n = n - 1
            WHERE task = coalesce(old.task, '') AND state = old.state;
        DELETE FROM conveyor_transitions WHERE job_id = old.job_id;
    END""",
    SQLITE_UNCOUNT_TRIGGER,
]

# A group's counts move from one state (p_minus, or none) to another (p_plus, or none).
_PG_GROUP_ADD = bump(
    [
        "p_group",
        f"pg_backend_pid() % {GROUP_SHARDS}",
        *(
            f"coalesce(p_plus = '{state.value}', false)::int "
            f"- coalesce(p_minus = '{state.value}', false)::int"
            for state in STATES
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
    *POSTGRES_TABLES,
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
SQLITE_STEPS: list[list[str]] = [_SQLITE_V1 + _INDEXES_V1 + GROUP_INDEXES]
POSTGRES_STEPS: list[list[str]] = [_POSTGRES_V1 + _INDEXES_V1 + GROUP_INDEXES]
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


def not_found(url: str) -> LedgerNotFound:
    """The error for a ledger that does not exist yet (``create=False``)."""
    return LedgerNotFound(
        f"no ledger at {url}: nothing was submitted there yet "
        "(or point --ledger / CONVEYOR_LEDGER_URL at the right one)"
    )
