"""The SQLite queue's dead letters: newest-first pages, the reconciled mark, redrive back
to the queue, purges and retention, each in as few transactions as it takes."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from conveyor.errors import BadInput
from conveyor.queues.messages import (
    MAX_LISTED_BODY_BYTES,
    DeadLetter,
    Removed,
    display_text,
    message_text,
)
from conveyor.queues.sqlite_db import CHUNK, DELETE_BATCH, QueueDatabase, as_float, as_int, job_ids
from conveyor.queues.sqlite_sql import (
    DELETE_LETTERS,
    EXPIRE,
    LETTERS_BEFORE,
    LETTERS_NEWEST,
    LETTERS_UNRECONCILED,
    MARK_RECONCILED,
    MOVE_BACK,
    MOVE_BACK_RETURNING,
    PURGE_LETTERS,
)

#: SQS keeps dead letters 14 days at most; so does the SQLite queue, by default.
DEFAULT_DEAD_LETTER_RETENTION_S = 14 * 86400.0


def _letter(row: Sequence[object]) -> DeadLetter:
    """A dead letter from a row read with ``sqlite_sql.LETTERS``."""
    row_id, message_id, body, count, reason, dead_at = row
    return DeadLetter(
        message_id=display_text(message_id),
        body=message_text(body),
        receive_count=as_int(count),
        reason=None if reason is None else display_text(reason),
        dead_at=as_float(dead_at),
        cursor=str(row_id),
    )


def _row_id(cursor: str | None) -> int | None:
    """The dead-letter row id in a cursor of this queue (None for a letter without one).

    Raises:
        BadInput: not a cursor of this queue.
    """
    if cursor is None:
        return None
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise BadInput(f"bad dead-letter cursor {cursor[:40]!r}: use a listed letter's cursor")
    return int(cursor)


class DeadLetterTable:
    """The ``dead_letters`` table of one queue database (a letter's cursor is its row id,
    which only grows)."""

    def __init__(self, db: QueueDatabase) -> None:
        self._db = db

    def page(self, limit: int, before: str | None) -> list[DeadLetter]:
        """Up to ``limit`` letters older than cursor ``before``: a walk down the primary
        key, newest first.

        Raises:
            BadInput: ``before`` is not a cursor of this queue.
        """
        if limit <= 0:
            return []
        below = _row_id(before)
        sql: str = LETTERS_NEWEST
        params: tuple[int, ...] = (MAX_LISTED_BODY_BYTES, limit)
        if below is not None:
            sql, params = LETTERS_BEFORE, (MAX_LISTED_BODY_BYTES, below, limit)
        rows = self._db.read(lambda conn: conn.execute(sql, params).fetchall())
        return [_letter(row) for row in rows]

    def unreconciled(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` letters not marked reconciled, oldest first, read through an
        index that holds only those: the cost follows what is new, not the table's size."""
        if limit <= 0:
            return []
        rows = self._db.read(
            lambda conn: conn.execute(
                LETTERS_UNRECONCILED, (MAX_LISTED_BODY_BYTES, limit)
            ).fetchall()
        )
        return [_letter(row) for row in rows]

    def mark_reconciled(self, letters: Sequence[DeadLetter]) -> None:
        """Mark these letters reconciled (those gone since are ignored)."""
        ids = [row_id for letter in letters if (row_id := _row_id(letter.cursor)) is not None]
        if not ids:
            return

        def mark(conn: sqlite3.Connection) -> None:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                conn.execute(MARK_RECONCILED.format(ids=",".join("?" * len(chunk))), chunk)

        self._db.write(mark)

    def move_back(self, limit: int | None, *, want_ids: bool) -> Removed:
        """Redrive up to ``limit`` letters (all if None), oldest first, in one transaction;
        bodies move inside the database, byte for byte. With ``want_ids``, also read the
        job ids of the bodies moved."""
        count = -1 if limit is None else limit  # LIMIT -1: no limit
        template = MOVE_BACK_RETURNING if want_ids else MOVE_BACK

        def move(conn: sqlite3.Connection) -> Removed:
            ids = [
                row_id
                for (row_id,) in conn.execute(
                    "SELECT id FROM dead_letters ORDER BY id LIMIT ?", (count,)
                )
            ]
            moved, found = 0, []
            now = time.time()
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                params: tuple[object, ...] = (now, *chunk)
                if want_ids:
                    params += (MAX_LISTED_BODY_BYTES,)
                cursor = conn.execute(template.format(ids=marks), params)
                if want_ids:
                    heads = cursor.fetchall()
                    moved += len(heads)
                    found += job_ids([head for (head,) in heads])
                else:
                    moved += cursor.rowcount
                conn.execute(DELETE_LETTERS.format(ids=marks), chunk)
            self._db.local_writes += 1
            return Removed(moved, found if want_ids else None)

        return self._db.write(move)

    def delete(self, cutoff: float | None) -> int:
        """Delete the letters that died before ``cutoff`` (all if None), a thousand per
        transaction; returns how many."""
        sql, params = (PURGE_LETTERS, ()) if cutoff is None else (EXPIRE, (cutoff,))
        deleted = 0
        while True:
            n = self._db.write(lambda conn: conn.execute(sql, (*params, DELETE_BATCH)).rowcount)
            deleted += n
            if n < DELETE_BATCH:
                return deleted

    @staticmethod
    def any_expired(conn: sqlite3.Connection, cutoff: float) -> bool:
        """Whether any letter died before ``cutoff`` (one index probe)."""
        found = conn.execute(
            "SELECT 1 FROM dead_letters WHERE dead_at < ? LIMIT 1", (cutoff,)
        ).fetchone()
        return found is not None
