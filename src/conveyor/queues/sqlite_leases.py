"""Acting on what the SQLite queue's leases hold: a lease is ``"<row id>.<token>"``, and a
batch call touches a message only while its exact pair is current."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from conveyor.queues.messages import BatchResult
from conveyor.queues.sqlite_db import CHUNK, QueueDatabase
from conveyor.queues.sqlite_sql import BURY_HELD, DELETE_HELD, HELD, RELEASE


def split_lease(lease: str) -> tuple[int, str] | None:
    """``"<row id>.<token>"`` into its parts, or None if it is not one of ours."""
    row_text, _, token = lease.partition(".")
    try:
        row_id = int(row_text)
    except ValueError:
        return None
    return (row_id, token) if token and str(row_id) == row_text else None  # one spelling


def by_lease(
    db: QueueDatabase,
    kind: str,
    leases: Sequence[str],
    statement: str,
    params: Sequence[object],
    *,
    then: str | None = None,
    then_params: Sequence[object] = (),
) -> BatchResult:
    """Act on the messages these leases hold, in one transaction for the whole batch.

    ``statement`` (``... WHERE id IN ({ids}) AND lease IN ({tokens})``) yields the
    ``(id, lease)`` rows it acted on (or, with ``then``, the rows ``then`` acts on by
    id). A lease is ok only when its exact (id, token) pair came back, so a stale lease
    never touches a message that someone else received since.
    """
    result = BatchResult()
    ids: list[int] = []
    tokens: list[str] = []
    for lease in leases:
        pair = split_lease(lease)
        if pair is None:
            result.failed[lease] = "not a lease of this queue"
        else:
            ids.append(pair[0])
            tokens.append(pair[1])

    def run(conn: sqlite3.Connection) -> set[str]:
        done: set[str] = set()
        for start in range(0, len(ids), CHUNK):  # SQLite caps a statement's parameters
            chunk_ids, chunk_tokens = ids[start : start + CHUNK], tokens[start : start + CHUNK]
            marks = ",".join("?" * len(chunk_ids))
            sql = statement.format(ids=marks, tokens=marks)
            rows = conn.execute(sql, (*params, *chunk_ids, *chunk_tokens)).fetchall()
            if then is not None and rows:
                held = [row_id for row_id, _ in rows]
                conn.execute(then.format(ids=",".join("?" * len(held))), (*then_params, *held))
                db.local_writes += 1
            done.update(f"{row_id}.{token}" for row_id, token in rows)
        return done

    done = db.write(run, kind, len(leases))
    for lease in leases:
        if lease in done:
            result.ok.append(lease)
        elif lease not in result.failed:
            result.failed[lease] = "stale lease: the message was received again or deleted"
    return result


def release(db: QueueDatabase, leases: Sequence[str], delay_s: int) -> BatchResult:
    """Give messages back: a released message has no holder, so its lease dies, and until
    the delay ends it counts as delayed, not in flight. RETURNING would give the new (NULL)
    lease, so the held leases are read first, in the same transaction."""
    return by_lease(
        db,
        "release",
        leases,
        HELD,
        (),
        then=RELEASE,
        then_params=(time.time() + delay_s,),
    )


def bury(db: QueueDatabase, lease: str, reason: str) -> bool:
    """Move the message ``lease`` holds to the dead letters; False if the lease is stale."""
    pair = split_lease(lease)

    def move(conn: sqlite3.Connection) -> bool:
        if pair is None:
            return False
        moved = conn.execute(BURY_HELD, (reason, time.time(), *pair)).rowcount
        conn.execute(DELETE_HELD, pair)
        return moved == 1

    return db.write(move, "dead_letter")
