"""The SQLite queue beyond the contract: WAL, real processes, crashes, network filesystems."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from conveyor.errors import ConfigError, QueueError, TransientQueueError
from conveyor.queues import Outgoing, Queue, Received, open_queue
from conveyor.queues.sqlite import SQLiteQueue
from conveyor.queues.sqlite_path import (
    check_local_filesystem,
    filesystem_type,
    is_network_filesystem,
)
from conveyor.queues.sqlite_sql import CLAIM, LETTERS_UNRECONCILED, UNREADABLE_VISIBILITY
from conveyor.settings import Settings

MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 27 0:45 / /efs rw,relatime shared:12 - nfs4 127.0.0.1:/ rw,vers=4.1,rsize=1048576
31 27 0:46 / /mnt/my\040share rw,relatime - cifs //fs/share rw,vers=3.0
32 27 0:47 / /data rw,relatime - xfs /dev/vdb rw
33 32 0:48 / /data/remote rw,relatime - fuse.sshfs me@host:/ rw
34 27 0:49 / /efs/scratch rw,relatime - tmpfs tmpfs rw
35 27 0:50 / /data rw,relatime - nfs host:/export rw
this line is not a mount
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue" / "queue.db"


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    """A real Python process running ``code`` with ``args``; line-buffered pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


# --- network filesystems -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/efs/queue.db", "nfs4"),
        ("/efs", "nfs4"),
        ("/efsx/queue.db", "ext4"),  # a sibling whose name only starts like the mount
        ("/efs/scratch/q.db", "tmpfs"),  # a local mount inside the NFS one
        ("/mnt/my share/q.db", "cifs"),  # \040 in mountinfo is a space
        ("/data/q.db", "nfs"),  # mounted over /data later: the last mount hides the first
        ("/data/remote/q.db", "fuse.sshfs"),
        ("/home/me/q.db", "ext4"),
    ],
)
def test_filesystem_type_takes_the_longest_latest_mount(path: str, fstype: str) -> None:
    assert filesystem_type(path, MOUNTINFO) == fstype


def test_network_filesystems_are_recognised() -> None:
    assert all(map(is_network_filesystem, ["nfs", "nfs4", "cifs", "smb3", "fuse.sshfs"]))
    assert not any(map(is_network_filesystem, ["ext4", "xfs", "tmpfs", "btrfs", "overlay", None]))


def test_a_path_on_nfs_is_refused_with_advice(tmp_path: Path) -> None:
    mountinfo = f"40 1 0:60 / {tmp_path} rw - nfs4 server:/ rw\n1 0 0:1 / / rw - ext4 /dev/a rw"

    with pytest.raises(ConfigError, match="SQS"):
        check_local_filesystem(tmp_path / "not" / "yet" / "queue.db", mountinfo)
    check_local_filesystem(Path("/elsewhere/queue.db"), mountinfo)  # no error


def test_opening_a_queue_on_nfs_fails_before_creating_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mountinfo = f"40 1 0:60 / {tmp_path} rw - nfs4 server:/ rw\n"
    monkeypatch.setattr("conveyor.queues.sqlite_path._read_mountinfo", lambda: mountinfo)

    with pytest.raises(ConfigError, match="network filesystem"):
        open_queue(f"sqlite:///{tmp_path}/state/queue.db", Settings())
    assert list(tmp_path.iterdir()) == []


def test_this_machines_temporary_directory_is_local(tmp_path: Path) -> None:
    check_local_filesystem(tmp_path / "queue.db")


# --- opening -------------------------------------------------------------------------------


def test_default_url_creates_the_database_in_the_state_directory(tmp_path: Path) -> None:
    settings = Settings(storage=tmp_path / "storage")

    with open_queue(settings.resolved_queue_url, settings) as queue:
        queue.send(Outgoing("x"))

    database = tmp_path / "storage" / "_conveyor" / "queue.db"
    assert database.is_file()
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1


def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_queue("sqlite://rel/q.db", Settings()) as queue:
        assert isinstance(queue, SQLiteQueue)
        assert queue.path == tmp_path / "rel" / "q.db"
    assert (tmp_path / "rel" / "q.db").is_file()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///"])
def test_url_without_a_path_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="sqlite:///"):
        open_queue(url, Settings())


def test_a_file_that_is_not_a_database_is_a_config_error(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_text("this is not sqlite " * 100)

    with pytest.raises(ConfigError, match="not a usable queue database"):
        SQLiteQueue(db)


def test_a_database_from_a_newer_conveyor_is_refused(db: Path) -> None:
    SQLiteQueue(db).close()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 99")

    with pytest.raises(ConfigError, match="upgrade conveyor"):
        SQLiteQueue(db)


def test_settings_configure_the_queue(db: Path) -> None:
    settings = Settings(visibility_timeout_s=7, max_receive_count=2)
    with open_queue(f"sqlite:///{db}", settings) as queue:
        assert (queue.visibility_timeout_s, queue.max_receive_count) == (7, 2)
        assert queue.url == f"sqlite:///{db}"


def test_a_closed_queue_says_so(db: Path) -> None:
    queue = SQLiteQueue(db)
    queue.close()
    queue.close()  # idempotent

    with pytest.raises(QueueError, match="closed"):
        queue.send(Outgoing("x"))


# --- behaviour specific to this backend ------------------------------------------------------


def test_receive_uses_the_visibility_index(db: Path) -> None:
    SQLiteQueue(db).close()
    with closing(sqlite3.connect(db)) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {CLAIM}", (1.0, 0.0, 10)).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "messages_by_visible_at" in details
    assert "TEMP B-TREE" not in details  # no sort of the whole backlog


def test_a_released_message_counts_as_delayed_not_in_flight(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        queue.send(Outgoing("x"))
        (held,) = queue.receive(1, wait_s=0)
        queue.release(held.lease, delay_s=60)

        stats = queue.stats()

    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 1)


def test_dead_letter_after_max_receives_records_why(db: Path) -> None:
    with SQLiteQueue(db, max_receive_count=1) as queue:
        queue.send(Outgoing("poison"))
        (held,) = queue.receive(1, wait_s=0)
        queue.release(held.lease)

        assert queue.receive(1, wait_s=0) == []
        (dead,) = queue.dead_letters()

    assert dead.receive_count == 1
    assert dead.reason is not None and "max_receive_count" in dead.reason


def test_receive_skips_dead_letters_and_still_fills_the_batch(db: Path) -> None:
    with SQLiteQueue(db, max_receive_count=1) as queue:
        queue.send_batch([Outgoing(f"poison-{i}") for i in range(3)])
        for held in queue.receive(3, wait_s=0):
            queue.release(held.lease)
        queue.send_batch([Outgoing("good-1"), Outgoing("good-2")])

        received = queue.receive(5, wait_s=0)

        assert sorted(r.body for r in received) == ["good-1", "good-2"]
        assert queue.stats().dead_lettered == 3


def test_malformed_leases_fail_without_touching_the_message(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        queue.send(Outgoing("x"))
        (held,) = queue.receive(1, wait_s=0)
        row, _, token = held.lease.partition(".")
        odd = [
            f"0{row}.{token}",
            f"+{row}.{token}",
            f" {row}.{token}",
            row,
            "",
            "x.y",
            "²." + token,
        ]

        result = queue.ack_batch(odd)

        assert result.ok == [] and set(result.failed) == set(odd)
        assert queue.ack(held.lease) is True


def test_batches_larger_than_one_statement_allows(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        queue.send_batch([Outgoing(str(i)) for i in range(1_200)])
        leases = [r.lease for _ in range(120) for r in queue.receive(10, wait_s=0)]

        released = queue.release_batch(leases[:600])
        acked = queue.ack_batch(leases)

        assert len(leases) == 1_200 and len(released.ok) == 600
        assert sorted(acked.ok) == sorted(leases[600:]) and len(acked.failed) == 600
        assert queue.stats().visible == 600


def test_request_counts_follow_sqs_billing(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        queue.send_batch([Outgoing(str(i)) for i in range(25)])  # 3 SQS batches
        received = queue.receive(10, wait_s=0)
        queue.ack_batch([r.lease for r in received])
        queue.extend_batch([], 30)  # nothing to do: no request
        queue.receive(1, wait_s=0)

        counts = queue.request_counts()

    assert counts == {"send": 3, "receive": 2, "ack": 1}


def test_long_poll_wakes_on_a_send_through_another_connection(db: Path) -> None:
    with SQLiteQueue(db) as receiver, SQLiteQueue(db) as sender:
        timer = threading.Timer(0.3, lambda: sender.send(Outgoing("from elsewhere")))
        start = time.monotonic()
        timer.start()
        received = receiver.receive(1, wait_s=5)
        timer.join()

    assert [r.body for r in received] == ["from elsewhere"]
    assert time.monotonic() - start < 2.0


def test_long_poll_wakes_when_a_lease_expires(db: Path) -> None:
    with SQLiteQueue(db, visibility_timeout_s=1) as queue:
        queue.send(Outgoing("x"))
        queue.receive(1, wait_s=0)
        start = time.monotonic()

        received = queue.receive(1, wait_s=5)

    assert [r.receive_count for r in received] == [2]
    assert time.monotonic() - start < 2.5


def test_a_locked_database_is_a_transient_error(db: Path) -> None:
    SQLiteQueue(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with SQLiteQueue(db, busy_timeout_s=0.05) as queue:
            with pytest.raises(TransientQueueError, match="locked"):
                queue.send(Outgoing("x"))
            holder.execute("COMMIT")
            queue.send(Outgoing("x"))  # works once the lock is gone
            assert queue.stats().visible == 1
    finally:
        holder.close()


# --- several processes ---------------------------------------------------------------------

CONSUMER = """
import json, sys, time
from conveyor.queues.sqlite import SQLiteQueue
queue = SQLiteQueue(sys.argv[1], visibility_timeout_s=120)
print("ready", flush=True)
start_at = float(sys.stdin.readline())
time.sleep(max(0.0, start_at - time.time()))  # all three start at one instant
received, acked, empty = [], [], 0
while empty < 3:
    batch = queue.receive(10, wait_s=0.2)
    empty = 0 if batch else empty + 1
    received += [(r.body, r.receive_count) for r in batch]
    for r in batch:  # one ack per message: more interleaving between processes
        if queue.ack(r.lease):
            acked.append(r.body)
    time.sleep(0.001)  # a worker's own work between rounds: the others get their turn
print(json.dumps({"received": received, "acked": acked}), flush=True)
"""


@pytest.mark.slow
def test_three_processes_ack_every_message_exactly_once(db: Path) -> None:
    bodies = [json.dumps({"job_id": f"j{i}"}) for i in range(2_000)]
    with SQLiteQueue(db) as queue:
        queue.send_batch([Outgoing(body) for body in bodies])
    children = [run_child(CONSUMER, str(db)) for _ in range(3)]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    start_at = time.time() + 0.5
    for child in children:  # start them together, however late each one is scheduled
        assert child.stdin is not None
        child.stdin.write(f"{start_at}\n")
        child.stdin.flush()

    results = []
    for child in children:
        out, _ = child.communicate(timeout=90)
        assert child.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))

    acked = Counter(body for result in results for body in result["acked"])
    received = [item for result in results for item in result["received"]]
    assert sorted(acked) == sorted(bodies) and set(acked.values()) == {1}
    assert len(received) == 2_000 and {count for _, count in received} == {1}
    assert sum(1 for result in results if result["acked"]) >= 2, "no real concurrency"
    with SQLiteQueue(db) as queue:
        assert queue.stats().pending == 0


PRODUCER = """
import sys
from conveyor.queues import Outgoing
from conveyor.queues.sqlite import SQLiteQueue
queue = SQLiteQueue(sys.argv[1])
sent = 0
pad = "x" * 500
while True:
    queue.send_batch([Outgoing('{"n": %d, "pad": "%s"}' % (sent + i, pad)) for i in range(50)])
    sent += 50
    print(sent, flush=True)
"""


@pytest.mark.slow
def test_kill_9_of_a_writer_leaves_a_sound_database(db: Path) -> None:
    SQLiteQueue(db).close()
    with run_child(PRODUCER, str(db)) as child:
        assert child.stdout is not None
        reported = 0
        while reported < 5_000:
            line = child.stdout.readline()
            assert line, "the producer died on its own"
            reported = int(line)
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read().split()
        child.wait(timeout=30)
    reported = int(rest[-1]) if rest else reported

    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        numbers = [json.loads(b)["n"] for (b,) in conn.execute("SELECT body FROM messages")]
    # Every reported batch is there, whole; at most the batch in flight when killed besides.
    assert reported <= len(numbers) <= reported + 50
    assert sorted(numbers) == list(range(len(numbers)))
    with SQLiteQueue(db) as queue:  # and the queue still works
        queue.send(Outgoing('{"n": -1}'))
        assert queue.stats().visible == len(numbers) + 1


HOLDER = """
import sys
from conveyor.queues.sqlite import SQLiteQueue
queue = SQLiteQueue(sys.argv[1], visibility_timeout_s=1)
held = queue.receive(10, wait_s=0)
print(len(held), flush=True)
sys.stdin.readline()
"""


@pytest.mark.slow
def test_messages_held_by_a_killed_worker_come_back(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        queue.send_batch([Outgoing(str(i)) for i in range(10)])
        with run_child(HOLDER, str(db)) as child:
            assert child.stdout is not None and child.stdout.readline().strip() == "10"
            os.kill(child.pid, signal.SIGKILL)
            child.communicate(timeout=30)

        received: list[Received] = []
        deadline = time.monotonic() + 10
        while len(received) < 10 and time.monotonic() < deadline:
            received += queue.receive(10, wait_s=2)

    assert sorted(r.body for r in received) == [str(i) for i in range(10)]
    assert {r.receive_count for r in received} == {2}


# --- hostile rows: whatever a row holds, reading it never fails --------------------------------

#: Bodies as SQL expressions: what a hand-edited or damaged database may hold.
HOSTILE_BODIES = {
    "text-not-utf8": "CAST(x'7b22ff' AS TEXT)",
    "blob": "x'7b2276223a317d'",
    "blob-not-utf8": "x'ff00fe'",
    "empty": "''",
    "nul-bytes": "CAST(x'7b00227600' AS TEXT)",
    "huge": "'{\"x\":\"' || hex(zeroblob(3000000)) || '\"}'",
    "integer": "12345",
    "real": "1.5",
}


def insert_raw(db: Path, body_sql: str, **columns: str) -> None:
    """Insert a row straight into the queue's table, as a damaged database may hold it."""
    values = {"message_id": "'raw'", "sent_at": "1.0", "visible_at": "0", **columns}
    names = ", ".join(["body", *values])
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(
            f"INSERT INTO messages ({names}) VALUES ({body_sql}, {', '.join(values.values())})"
        )
        conn.commit()


@pytest.mark.parametrize("kind", sorted(HOSTILE_BODIES))
def test_a_hostile_row_never_blocks_a_receive(db: Path, kind: str) -> None:
    # Given a good message, a hostile row, and another good message
    with SQLiteQueue(db) as queue:
        queue.send(Outgoing("good-1"))
        insert_raw(db, HOSTILE_BODIES[kind])
        queue.send(Outgoing("good-2"))

        # When a worker receives
        received = queue.receive(10, wait_s=0)

        # Then every message comes back, each body as text
        assert len(received) == 3
        assert all(isinstance(r.body, str) for r in received)
        assert {"good-1", "good-2"} <= {r.body for r in received}
        # And the hostile one can be dead-lettered, listed and redriven, byte for byte
        (bad,) = [r for r in received if r.body not in ("good-1", "good-2")]
        queue.dead_letter(bad.lease, f"hostile {kind}")
        (letter,) = queue.dead_letters()
        assert letter.reason == f"hostile {kind}"
        assert isinstance(letter.body, str)
        with closing(sqlite3.connect(db)) as conn:
            before = conn.execute(
                "SELECT typeof(body), CAST(body AS BLOB) FROM dead_letters"
            ).fetchone()
        assert queue.redrive() == 1
        with closing(sqlite3.connect(db)) as conn:
            after = conn.execute("SELECT typeof(body), CAST(body AS BLOB) FROM messages").fetchall()
        assert before in after


def test_text_that_is_not_utf8_reaches_the_reader_as_a_rejected_body(db: Path) -> None:
    from conveyor.errors import BadMessage
    from conveyor.jobs import Job

    with SQLiteQueue(db) as queue:
        insert_raw(db, "CAST(x'7b22ff' AS TEXT)")
        (received,) = queue.receive(1, wait_s=0)
    assert received.body.encode("utf-8", "surrogateescape") == b'{"\xff'
    with pytest.raises(BadMessage, match="not UTF-8"):
        Job.from_json(received.body)


def test_hostile_values_in_other_columns_are_read_safely(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        insert_raw(
            db,
            "'x'",
            message_id="CAST(x'ff' AS TEXT)",
            sent_at="'yesterday'",
            receive_count="'many'",
        )
        (received,) = queue.receive(1, wait_s=0)
        assert (received.body, received.receive_count, received.sent_at) == ("x", 1, 0.0)
        assert isinstance(received.message_id, str)
        queue.dead_letter(received.lease, "bad columns")
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("UPDATE dead_letters SET reason = CAST(x'ff1b5b33316d' AS TEXT)")
            conn.commit()
        (letter,) = queue.dead_letters()
    assert letter.reason is not None and "\ufffd" in letter.reason


def test_a_visibility_time_that_is_not_a_number_never_hides_a_row_for_good(db: Path) -> None:
    # Given a row whose visibility time is text (it sorts after every number: never due)
    SQLiteQueue(db).close()
    insert_raw(db, "'stuck'", visible_at="'soon'")
    insert_raw(db, "'blob'", visible_at="x'00'")
    # When a worker opens the queue
    with SQLiteQueue(db) as queue:
        # Then the rows are received like any other, and nothing stays pending
        assert sorted(r.body for r in queue.receive(10, wait_s=0)) == ["blob", "stuck"]
    with closing(sqlite3.connect(db)) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {UNREADABLE_VISIBILITY}").fetchall()
    assert "messages_by_visible_at" in " ".join(str(row[-1]) for row in plan)


def test_a_huge_body_is_cut_in_listings_only(db: Path) -> None:
    from conveyor.queues.messages import MAX_LISTED_BODY_BYTES

    with SQLiteQueue(db) as queue:
        insert_raw(db, HOSTILE_BODIES["huge"])
        (received,) = queue.receive(1, wait_s=0)
        assert len(received.body) == 6_000_008  # the receiver sees it whole
        queue.dead_letter(received.lease, "too big")
        (letter,) = queue.dead_letters()
    assert len(letter.body.encode("utf-8", "surrogateescape")) == MAX_LISTED_BODY_BYTES


# --- read-only opening and file modes -------------------------------------------------------


def test_opening_without_create_never_creates_anything(tmp_path: Path) -> None:
    from conveyor.errors import QueueNotFound

    db = tmp_path / "typo" / "queue.db"
    with pytest.raises(QueueNotFound, match=r"no queue at .*nothing submitted yet, or a mistyped"):
        open_queue(f"sqlite:///{db}", Settings(), create=False)
    assert not db.parent.exists()


def test_opening_without_create_uses_an_existing_queue(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        queue.send(Outgoing("x"))
    with open_queue(f"sqlite:///{db}", Settings(), create=False) as queue:
        assert queue.stats().visible == 1


def test_the_database_is_owner_only_and_its_new_directory_too(tmp_path: Path) -> None:
    db = tmp_path / "made" / "queue.db"
    old = os.umask(0o022)
    try:
        with SQLiteQueue(db) as queue:
            queue.send(Outgoing("x"))  # the WAL and shared-memory files now exist
            modes = {
                path.name: path.stat().st_mode & 0o777
                for path in db.parent.iterdir()
                if path.name.startswith("queue.db")
            }
    finally:
        os.umask(old)
    assert modes == {"queue.db": 0o600, "queue.db-wal": 0o600, "queue.db-shm": 0o600}
    assert db.parent.stat().st_mode & 0o777 == 0o700


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.joinpath("shared").mkdir(mode=0o755)
    os.chmod(tmp_path / "shared", 0o755)
    SQLiteQueue(tmp_path / "shared" / "queue.db").close()
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "shared" / "queue.db").stat().st_mode & 0o777 == 0o600


# --- dead letters: ids, reconciliation marks, retention ---------------------------------------


def dead_letter_n(queue: Queue, bodies: list[str]) -> None:
    queue.send_batch([Outgoing(body) for body in bodies])
    for received in queue.receive(10, wait_s=0):
        queue.dead_letter(received.lease, "test")


def test_dead_letter_ids_only_grow(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        dead_letter_n(queue, ["a", "b"])
        newest = queue.dead_letters()[0]
        assert newest.body == "b"
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (int(str(newest.cursor)),))
            conn.commit()
        dead_letter_n(queue, ["c"])
        assert int(str(queue.dead_letters()[0].cursor)) > int(str(newest.cursor))


def test_listing_pages_newest_first(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        for start in range(0, 25, 5):
            dead_letter_n(queue, [f"m{i:02}" for i in range(start, start + 5)])
        pages, before = [], None
        while page := queue.dead_letter_page(10, before):
            pages.append([letter.body for letter in page])
            before = page[-1].cursor
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [body for page in pages for body in page] == [f"m{i:02}" for i in reversed(range(25))]


def test_a_malformed_cursor_is_bad_input(db: Path) -> None:
    from conveyor.errors import BadInput

    with SQLiteQueue(db) as queue, pytest.raises(BadInput, match="cursor"):
        queue.dead_letter_page(10, "12; DROP TABLE")


def test_reconciliation_reads_only_unmarked_letters_through_their_index(db: Path) -> None:

    with SQLiteQueue(db) as queue:
        dead_letter_n(queue, ["a", "b", "c"])
        first = queue.unreconciled_dead_letters(2)
        assert [letter.body for letter in first] == ["a", "b"]  # oldest first
        queue.mark_reconciled(first)
        assert [letter.body for letter in queue.unreconciled_dead_letters(10)] == ["c"]
        queue.mark_reconciled(queue.unreconciled_dead_letters(10))
        assert queue.unreconciled_dead_letters(10) == []
        assert len(queue.dead_letters()) == 3  # marked, not removed
    with closing(sqlite3.connect(db)) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {LETTERS_UNRECONCILED}", (100, 10)).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "dead_letters_unreconciled" in details
    assert "TEMP B-TREE" not in details


def test_dead_letters_expire_after_the_retention_on_open(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        dead_letter_n(queue, ["old", "new"])
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "UPDATE dead_letters SET dead_at = ? WHERE body = 'old'", (time.time() - 15 * 86400,)
        )
        conn.commit()
    with SQLiteQueue(db) as queue:
        assert [letter.body for letter in queue.dead_letters()] == ["new"]


def test_purging_dead_letters_by_age_or_all(db: Path) -> None:
    with SQLiteQueue(db) as queue:
        dead_letter_n(queue, ["a", "b", "c"])
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("UPDATE dead_letters SET dead_at = dead_at - 7200 WHERE body != 'c'")
            conn.commit()
        assert queue.purge_dead_letters(3600) == 2
        assert [letter.body for letter in queue.dead_letters()] == ["c"]
        assert queue.purge_dead_letters() == 1
        assert queue.stats().dead_lettered == 0


def test_a_schema_1_database_is_upgraded_keeping_its_dead_letters(db: Path) -> None:
    # Given a queue database as conveyor wrote it before dead letters had a mark
    db.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db)) as conn:
        conn.executescript(
            """
            CREATE TABLE messages (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL,
                body TEXT NOT NULL, sent_at REAL NOT NULL, visible_at REAL NOT NULL,
                receive_count INTEGER NOT NULL DEFAULT 0, lease TEXT);
            CREATE INDEX messages_by_visible_at ON messages (visible_at);
            CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL,
                body TEXT NOT NULL, sent_at REAL NOT NULL, receive_count INTEGER NOT NULL,
                reason TEXT, dead_at REAL NOT NULL);
            PRAGMA user_version = 1;
            """
        )
        conn.execute(
            "INSERT INTO dead_letters VALUES (7, 'm', 'old', 1.0, 3, 'why', ?)", (time.time(),)
        )
        conn.execute("INSERT INTO messages VALUES (1, 'n', 'queued', 1.0, 0, 0, NULL)")
        conn.commit()
    # When this conveyor opens it
    with SQLiteQueue(db) as queue:
        # Then the dead letter is kept, unreconciled, and the message still delivered
        (letter,) = queue.unreconciled_dead_letters(10)
        assert (letter.body, letter.reason, letter.cursor) == ("old", "why", "7")
        assert [r.body for r in queue.receive(1, wait_s=0)] == ["queued"]
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_purge_and_redrive_say_which_jobs_moved(db: Path) -> None:
    from conveyor.jobs import Job

    jobs = [Job(task="t") for _ in range(3)]
    with SQLiteQueue(db) as queue:
        queue.send_batch([Outgoing(job.to_json()) for job in jobs[:2]] + [Outgoing("junk")])
        for received in queue.receive(10, wait_s=0):
            queue.dead_letter(received.lease, "test")
        moved = queue.redrive_jobs(limit=2)  # the oldest two
        assert (moved.count, moved.job_ids) == (2, [jobs[0].job_id, jobs[1].job_id])
        queue.send(Outgoing(jobs[2].to_json()))
        purged = queue.purge_jobs()
    assert purged.count == 3
    assert sorted(purged.job_ids or []) == sorted(job.job_id for job in jobs)
