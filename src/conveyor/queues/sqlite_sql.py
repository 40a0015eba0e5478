"""The SQLite queue's schema and statements.

Every column a statement reads is read so that no stored value can fail to convert: bodies,
ids and reasons as bytes (decoded by :func:`conveyor.queues.base.message_text`), times as
REAL. A hand-edited or damaged row can then never block a receive or a listing.
"""

from __future__ import annotations

#: The schema this code writes; 1 had no ``reconciled`` mark and reused dead-letter ids.
SCHEMA_VERSION = 2

MESSAGES = """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    lease TEXT
)"""
# Receive takes the head of this index: O(log n) however long the backlog.
MESSAGES_INDEX = "CREATE INDEX IF NOT EXISTS messages_by_visible_at ON messages (visible_at)"
# AUTOINCREMENT: ids only ever grow, so they order dead letters by age and are cursors
# that never come back after a purge.
DEAD_LETTERS = """CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    receive_count INTEGER NOT NULL,
    reason TEXT,
    dead_at REAL NOT NULL,
    reconciled INTEGER NOT NULL DEFAULT 0
)"""
DEAD_LETTER_INDEXES = (
    # Reconciliation reads only the letters not reconciled yet: this index holds only those.
    "CREATE INDEX IF NOT EXISTS dead_letters_unreconciled ON dead_letters (id)"
    " WHERE reconciled = 0",
    # Retention deletes by age.
    "CREATE INDEX IF NOT EXISTS dead_letters_by_dead_at ON dead_letters (dead_at)",
)
# Schema 1 had no `reconciled` column and reused the ids of deleted dead letters.
UPGRADE_FROM_1 = (
    "ALTER TABLE dead_letters RENAME TO dead_letters_v1",
    DEAD_LETTERS,
    "INSERT INTO dead_letters (id, message_id, body, sent_at, receive_count, reason, dead_at)"
    " SELECT id, message_id, body, sent_at, receive_count, reason, dead_at"
    " FROM dead_letters_v1 ORDER BY id",
    "DROP TABLE dead_letters_v1",
    *DEAD_LETTER_INDEXES,
)

# One statement leases up to N visible messages: a fresh random token per message. Every
# column is read so that no stored value can fail to convert (see _received_row).
CLAIM = """
    UPDATE messages
    SET visible_at = ?, receive_count = receive_count + 1, lease = lower(hex(randomblob(16)))
    WHERE id IN (SELECT id FROM messages WHERE visible_at <= ? ORDER BY visible_at LIMIT ?)
    RETURNING id, CAST(message_id AS BLOB), CAST(body AS BLOB), lease, receive_count,
        CAST(sent_at AS REAL)
"""

# Messages received more than max_receive_count times go to the dead-letter table. The
# body moves inside the database, byte for byte, whatever it holds.
BURY = """
    INSERT INTO dead_letters (message_id, body, sent_at, receive_count, reason, dead_at)
    SELECT message_id, body, sent_at, receive_count - 1, ?, ? FROM messages WHERE id IN ({ids})
"""
DELETE = "DELETE FROM messages WHERE id IN ({ids})"

#: The statements of the batch calls: each yields the ``(id, lease)`` rows it acted on.
ACK = "DELETE FROM messages WHERE id IN ({ids}) AND lease IN ({tokens}) RETURNING id, lease"
EXTEND = (
    "UPDATE messages SET visible_at = ? WHERE id IN ({ids}) AND lease IN ({tokens})"
    " RETURNING id, lease"
)
HELD = "SELECT id, lease FROM messages WHERE id IN ({ids}) AND lease IN ({tokens})"
RELEASE = "UPDATE messages SET visible_at = ?, lease = NULL WHERE id IN ({ids})"
#: Dead-lettering one held message: copy it to the dead letters, then delete it.
BURY_HELD = (
    "INSERT INTO dead_letters (message_id, body, sent_at, receive_count, reason,"
    " dead_at) SELECT message_id, body, sent_at, receive_count, ?, ?"
    " FROM messages WHERE id = ? AND lease = ?"
)
DELETE_HELD = "DELETE FROM messages WHERE id = ? AND lease = ?"

# Dead letters as listed: bodies cut at MAX_LISTED_BODY_BYTES, every column convertible.
LETTERS = """
    SELECT id, CAST(message_id AS BLOB), substr(CAST(body AS BLOB), 1, ?), receive_count,
        CAST(reason AS BLOB), CAST(dead_at AS REAL)
    FROM dead_letters {where} ORDER BY id {order} LIMIT ?
"""
LETTERS_NEWEST = LETTERS.format(where="", order="DESC")
LETTERS_BEFORE = LETTERS.format(where="WHERE id < ?", order="DESC")
# The partial index holds only unreconciled letters: the cost follows what is new.
LETTERS_UNRECONCILED = LETTERS.format(
    where="INDEXED BY dead_letters_unreconciled WHERE reconciled = 0", order=""
)
MARK_RECONCILED = "UPDATE dead_letters SET reconciled = 1 WHERE id IN ({ids}) AND reconciled = 0"
# Redrive: back to the queue in their order, byte for byte; optionally with body heads.
MOVE_BACK = """
    INSERT INTO messages (message_id, body, sent_at, visible_at)
    SELECT message_id, body, sent_at, ? FROM dead_letters WHERE id IN ({ids}) ORDER BY id
"""
MOVE_BACK_RETURNING = MOVE_BACK + " RETURNING substr(CAST(body AS BLOB), 1, ?)"
DELETE_LETTERS = "DELETE FROM dead_letters WHERE id IN ({ids})"
EXPIRE = """
    DELETE FROM dead_letters
    WHERE id IN (SELECT id FROM dead_letters WHERE dead_at < ? LIMIT ?)
"""
PURGE_LETTERS = "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters LIMIT ?)"

# Numbers sort before text and blobs: this index range holds exactly the visibility times
# that are not numbers (only a hand-written row has one).
UNREADABLE_VISIBILITY = "SELECT 1 FROM messages WHERE visible_at >= '' LIMIT 1"
REPAIR_VISIBILITY = "UPDATE messages SET visible_at = 0 WHERE visible_at >= ''"
