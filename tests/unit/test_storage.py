"""Safe paths under the storage root, ingest, and atomic publication."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import tempfiles
from conveyor.atomic import atomic_output
from conveyor.errors import BadInput, StorageError, UnsafePath
from conveyor.statefiles import OWNER_ONLY, StateMode, create_state_file, state_mode
from conveyor.storage import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    STAGING_DIR,
    Storage,
    check_job_id,
    check_relative_path,
)
from conveyor.tempfiles import LEGACY_TEMP_AGE_S, TEMP_PREFIX, clean_stale_temps, temp_name


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    root = tmp_path / "root"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs" / "a.csv").write_text("ID,Value\n1,2\n")
    (root / "_conveyor").mkdir()
    (root / "_conveyor" / "queue.db").write_text("state")
    return Storage(root)


# --- syntax -----------------------------------------------------------------------------------

UNSAFE = [
    pytest.param("../x", "'..'", id="parent"),
    pytest.param("/etc/passwd", "absolute", id="absolute"),
    pytest.param("a/../../b", "'..'", id="climb-out"),
    pytest.param("a/../b", "'..'", id="dotdot-inside"),
    pytest.param("a\0b", "NUL", id="nul"),
    pytest.param("a\nb", "control character", id="newline"),
    pytest.param("a\\b", "backslash", id="backslash"),
    pytest.param("..\\..\\windows", "backslash", id="windows-parent"),
    pytest.param("C:/x", "drive", id="drive"),
    pytest.param("c:x", "drive", id="drive-relative"),
    pytest.param("", "empty", id="empty"),
    pytest.param(".", "storage root itself", id="dot"),
    pytest.param("./", "storage root itself", id="dot-slash"),
    pytest.param("_conveyor/queue.db", "state directory", id="state-dir"),
    pytest.param("./_conveyor/ledger/x", "state directory", id="state-dir-dot"),
    pytest.param("_CONVEYOR/queue.db", "state directory", id="state-dir-case"),
    pytest.param("_conveyor", "state directory", id="state-dir-itself"),
    pytest.param(f"out/{TEMP_PREFIX}abc", "reserved", id="temp-name"),
    pytest.param("a/" + "x" * (MAX_NAME_BYTES + 1), "255 bytes", id="long-name"),
    pytest.param("a/" + "é" * 128, "255 bytes", id="long-name-multibyte"),
    pytest.param("ab/" * (MAX_PATH_BYTES // 3 + 1), "4096 bytes", id="long-path"),
    pytest.param("a\udc80b", "UTF-8", id="lone-surrogate"),
]


@pytest.mark.parametrize(("rel", "reason"), UNSAFE)
def test_check_relative_path_rejects(rel: str, reason: str) -> None:
    with pytest.raises(UnsafePath, match=reason) as info:
        check_relative_path(rel)
    assert info.value.permanent
    assert isinstance(info.value, BadInput)


@pytest.mark.parametrize(("rel", "reason"), UNSAFE)
def test_resolve_rejects_the_same(storage: Storage, rel: str, reason: str) -> None:
    with pytest.raises(UnsafePath, match=reason):
        storage.resolve(rel)


@pytest.mark.parametrize("value", [None, 5, b"inputs/a.csv", ["inputs/a.csv"]])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(UnsafePath, match="must be a string"):
        check_relative_path(value)


@pytest.mark.parametrize(
    ("rel", "normal"),
    [
        ("inputs/a.csv", "inputs/a.csv"),
        ("inputs//a.csv", "inputs/a.csv"),
        ("./inputs/./a.csv", "inputs/a.csv"),
        ("outputs/x/", "outputs/x"),
        ("a..b/c..", "a..b/c.."),
        ("my_conveyor/x", "my_conveyor/x"),
        ("x/_conveyor/y", "x/_conveyor/y"),
        ("données/ünïcode.csv", "données/ünïcode.csv"),
        ("a/" + "x" * MAX_NAME_BYTES, "a/" + "x" * MAX_NAME_BYTES),
    ],
)
def test_check_relative_path_accepts_and_normalises(rel: str, normal: str) -> None:
    assert check_relative_path(rel) == normal


def test_unsafe_path_message_is_short_for_huge_input() -> None:
    with pytest.raises(UnsafePath) as info:
        check_relative_path("/" + "x" * 100_000)
    assert len(info.value.message) < 200


@pytest.mark.parametrize("job_id", ["", "a/b", "a.b", "../x", "x" * 65, "a b", None, 7])
def test_check_job_id_rejects(job_id: object) -> None:
    with pytest.raises(BadInput, match="bad job id"):
        check_job_id(job_id)


# --- symlinks and containment -----------------------------------------------------------------


def test_symlink_out_of_root_is_rejected(storage: Storage, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (storage.root / "inputs" / "link.csv").symlink_to(outside)
    with pytest.raises(UnsafePath, match="leaves the storage root"):
        storage.resolve_input("inputs/link.csv")


def test_symlinked_directory_out_of_root_is_rejected(storage: Storage, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (storage.root / "outlink").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePath, match="leaves the storage root"):
        storage.resolve_output("outlink/new/file.csv")


def test_dangling_symlink_out_of_root_is_rejected_as_output(
    storage: Storage, tmp_path: Path
) -> None:
    (storage.root / "inputs" / "dangling").symlink_to(tmp_path / "not-yet" / "x")
    with pytest.raises(UnsafePath, match="leaves the storage root"):
        storage.resolve_output("inputs/dangling")


def test_symlink_inside_root_is_followed(storage: Storage) -> None:
    (storage.root / "inputs" / "alias.csv").symlink_to(storage.root / "inputs" / "a.csv")
    resolved = storage.resolve_input("inputs/alias.csv")
    assert resolved == storage.root / "inputs" / "a.csv"


def test_relative_symlink_inside_root_is_followed(storage: Storage) -> None:
    (storage.root / "latest").symlink_to("inputs", target_is_directory=True)
    assert storage.resolve_input("latest/a.csv") == storage.root / "inputs" / "a.csv"


def test_symlink_into_state_dir_is_rejected(storage: Storage) -> None:
    (storage.root / "inputs" / "db").symlink_to(storage.root / "_conveyor" / "queue.db")
    with pytest.raises(UnsafePath, match="state directory"):
        storage.resolve_input("inputs/db")


def test_symlink_to_root_itself_is_rejected(storage: Storage) -> None:
    (storage.root / "here").symlink_to(storage.root, target_is_directory=True)
    with pytest.raises(UnsafePath, match="root itself"):
        storage.resolve("here")


def test_sibling_prefix_is_not_inside(tmp_path: Path) -> None:
    # Given a root /x/in and a sibling /x/input-evil that shares its string prefix
    root = tmp_path / "in"
    root.mkdir()
    evil = tmp_path / "input-evil"
    evil.mkdir()
    (evil / "f.csv").write_text("evil")
    (root / "link").symlink_to(evil, target_is_directory=True)
    storage = Storage(root)
    # Then a path through a symlink into the sibling is rejected
    with pytest.raises(UnsafePath, match="leaves the storage root"):
        storage.resolve_input("link/f.csv")
    # And so is a root-relative name that only a string-prefix test would accept
    assert str(evil / "f.csv").startswith(str(root))
    assert storage.relative(evil / "f.csv") is None


def test_root_reached_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "inputs").mkdir(parents=True)
    (real / "inputs" / "a.csv").write_text("x")
    (tmp_path / "efs").symlink_to(real, target_is_directory=True)
    storage = Storage(tmp_path / "efs")
    assert storage.root == real
    assert storage.resolve_input("inputs/a.csv") == real / "inputs" / "a.csv"


# --- inputs and outputs -----------------------------------------------------------------------


def test_missing_input_is_bad_input_not_unsafe(storage: Storage) -> None:
    with pytest.raises(BadInput, match="input not found") as info:
        storage.resolve_input("inputs/missing.csv")
    assert not isinstance(info.value, UnsafePath)


def test_directory_as_input_is_bad_input(storage: Storage) -> None:
    with pytest.raises(BadInput, match="not a regular file"):
        storage.resolve_input("inputs")


def test_output_may_not_exist_yet(storage: Storage) -> None:
    path = storage.resolve_output("outputs/j1/deep/er/out.csv")
    assert path == storage.root / "outputs" / "j1" / "deep" / "er" / "out.csv"
    assert not path.parent.exists()


def test_directory_as_output_is_bad_input(storage: Storage) -> None:
    with pytest.raises(BadInput, match="is a directory"):
        storage.resolve_output("inputs")


def test_existing_symlink_output_resolves_to_its_target(storage: Storage) -> None:
    (storage.root / "outputs").mkdir()
    (storage.root / "outputs" / "link.csv").symlink_to(storage.root / "outputs" / "real.csv")
    assert storage.resolve_output("outputs/link.csv") == storage.root / "outputs" / "real.csv"


def test_state_dir(storage: Storage) -> None:
    assert storage.state_dir == storage.root / "_conveyor"


def test_default_output_is_deterministic(storage: Storage) -> None:
    assert storage.default_output("J1", "inputs/J1/data.csv") == "outputs/J1/data.csv"
    assert storage.default_output("J1", "data.csv") == "outputs/J1/data.csv"
    assert storage.default_output("J1", None) == "outputs/J1/output"
    with pytest.raises(BadInput):
        storage.default_output("../J1", "data.csv")


def test_ingest_copies_atomically(storage: Storage, tmp_path: Path) -> None:
    local = tmp_path / "upload.csv"
    local.write_bytes(b"ID,Value\n1,2.5\n")
    rel = storage.ingest(local, "J42")
    assert rel == "inputs/J42/upload.csv"
    assert storage.resolve_input(rel).read_bytes() == local.read_bytes()
    assert [p.name for p in (storage.root / "inputs" / "J42").iterdir()] == ["upload.csv"]
    # Again: harmless, same content
    assert storage.ingest(local, "J42") == rel
    assert storage.resolve_input(rel).read_bytes() == local.read_bytes()


def test_ingest_rejects_missing_file_and_bad_job_id(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        storage.ingest(tmp_path / "nope.csv", "J1")
    local = tmp_path / "a.csv"
    local.write_text("x")
    with pytest.raises(BadInput, match="bad job id"):
        storage.ingest(local, "../J1")


def test_relative(storage: Storage, tmp_path: Path) -> None:
    assert storage.relative(storage.root / "inputs" / "a.csv") == "inputs/a.csv"
    assert storage.relative(tmp_path) is None
    assert storage.relative(storage.root) is None


# --- atomic publication -----------------------------------------------------------------------


def test_atomic_output_publishes_whole_file(tmp_path: Path) -> None:
    final = tmp_path / "out" / "result.csv"
    with atomic_output(final) as temp:
        assert temp.parent == final.parent
        assert temp.name.startswith(TEMP_PREFIX)
        temp.write_text("complete")
        assert not final.exists()
    assert final.read_text() == "complete"
    assert os.listdir(final.parent) == ["result.csv"]


def test_atomic_output_leaves_final_untouched_on_error(tmp_path: Path) -> None:
    final = tmp_path / "result.csv"
    final.write_text("old")

    def lease_lost() -> None:
        raise StorageError("lease lost")

    with pytest.raises(StorageError, match="lease lost"), atomic_output(final, lease_lost) as temp:
        temp.write_text("new")
    assert final.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.csv"]


def test_atomic_output_publishes_empty_file_when_task_wrote_nothing(tmp_path: Path) -> None:
    final = tmp_path / "empty.csv"
    with atomic_output(final):
        pass
    assert final.read_bytes() == b""


# --- temporary files of dead writers ------------------------------------------------------

LIVE_WRITER = """
import sys, time
from pathlib import Path
from conveyor.atomic import atomic_output
with atomic_output(Path(sys.argv[1])) as temp:
    temp.write_text("half")
    print(temp, flush=True)
    time.sleep(60)
"""


def age(path: Path, seconds: float) -> Path:
    """Make ``path`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


@pytest.fixture
def fresh_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every atomic_output sweeps its directory, however recently it was swept."""
    monkeypatch.setattr(tempfiles, "_last_sweep", {})
    monkeypatch.setattr(tempfiles, "SWEEP_EVERY_S", 0.0)


def test_temporary_names_say_who_writes_and_fit_name_max(tmp_path: Path) -> None:
    name = temp_name("out.csv")
    long_name = "x" * MAX_NAME_BYTES

    host, pid, token, tail = name.removeprefix(TEMP_PREFIX).split("-", 3)
    assert (pid, tail) == (str(os.getpid()), "out.csv")
    assert "-" not in host and len(token) == 12
    assert name != temp_name("out.csv")
    assert len(temp_name(long_name).encode()) <= MAX_NAME_BYTES
    with atomic_output(tmp_path / long_name) as temp:
        temp.write_text("ok")
    assert (tmp_path / long_name).read_text() == "ok"


def test_the_cleaner_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    def file(name: str, seconds_ago: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"partial")
        return age(path, seconds_ago)

    dead = file(temp_name("a.csv"), 10)  # nobody holds its lock
    young = file(temp_name("b.csv"), 0)  # its writer may be about to lock it
    legacy_old = file(f"{TEMP_PREFIX}0123456789ab-c.csv", 2 * LEGACY_TEMP_AGE_S)
    legacy_recent = file(f"{TEMP_PREFIX}0123456789ab-d.csv", 60)
    others = [file(name, 10) for name in ("out.csv", f"{TEMP_PREFIX}not-ours", ".hidden")]

    removed = clean_stale_temps(tmp_path)

    assert sorted(removed) == sorted([dead, legacy_old])
    assert sorted(tmp_path.iterdir()) == sorted([young, legacy_recent, *others])
    assert clean_stale_temps(tmp_path / "missing") == []


def test_a_live_writers_temporary_file_is_never_removed(tmp_path: Path) -> None:
    # Given another process writing an output, holding its temporary file's lock
    final = tmp_path / "out.csv"
    writer = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(final)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        temp = Path(writer.stdout.readline().strip())
        age(temp, 3600)  # however old it looks
        # When this process cleans the directory and writes its own output there
        removed = clean_stale_temps(tmp_path, min_age_s=0)
        with atomic_output(tmp_path / "mine.csv") as mine:
            mine.write_text("mine")
        # Then the live writer's file is still there, untouched
        assert removed == []
        assert temp.read_text() == "half"
    finally:
        writer.kill()
        writer.communicate()
    # And once it is dead, the next cleaner removes it
    assert clean_stale_temps(tmp_path, min_age_s=0) == [temp]
    assert not final.exists()


def test_a_temporary_file_held_in_this_process_is_spared_too(tmp_path: Path) -> None:
    # flock locks belong to the open file: a cleaner in the writer's own process (a worker
    # whose task thread is writing) sees the lock as held.
    with atomic_output(tmp_path / "out.csv") as temp:
        temp.write_text("writing")  # the task opens and closes the path itself
        age(temp, 3600)
        assert clean_stale_temps(tmp_path, min_age_s=0) == []
    assert (tmp_path / "out.csv").read_text() == "writing"


def test_the_next_output_in_a_directory_sweeps_dead_writers_files(
    tmp_path: Path, fresh_sweeps: None
) -> None:
    dead = tmp_path / temp_name("out.csv")
    dead.write_bytes(b"partial of a kill -9")
    age(dead, 10)

    with atomic_output(tmp_path / "out.csv") as temp:
        temp.write_text("whole")

    assert os.listdir(tmp_path) == ["out.csv"]


def test_ingest_stages_its_copy_where_the_next_ingest_sweeps(
    storage: Storage, tmp_path: Path, fresh_sweeps: None
) -> None:
    # Given the copy a submitter killed mid-ingest left (its job directory is never revisited)
    staging = storage.root / STAGING_DIR
    staging.mkdir(parents=True)
    dead = staging / temp_name("big.csv")
    dead.write_bytes(b"half a copy")
    age(dead, 10)
    source = tmp_path / "next.csv"
    source.write_text("ID,Value\n1,2\n")

    rel = storage.ingest(source, "job2")

    assert (storage.root / rel).read_text() == "ID,Value\n1,2\n"
    assert os.listdir(staging) == []
    assert os.listdir(storage.root / "inputs" / "job2") == ["next.csv"]


# --- conveyor's own state files ------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_owner_only_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    storage = Storage(tmp_path / "root")

    claims = storage.make_state_dir("claims")
    database = create_state_file(storage.state_dir / "queue.db")
    with atomic_output(claims / "abc.json", state=OWNER_ONLY) as temp:
        temp.write_text("{}")

    assert mode(storage.state_dir) == mode(claims) == 0o700
    assert mode(database) == mode(claims / "abc.json") == 0o600
    assert mode(storage.root) == 0o755  # the root is the user's, as are outputs


def test_state_mode_may_admit_the_group(tmp_path: Path, open_umask: None) -> None:
    group = state_mode(group=True)
    storage = Storage(tmp_path / "root")

    ledger = storage.make_state_dir("ledger", mode=group)
    with atomic_output(ledger / "sub" / "x.json", state=group) as temp:
        temp.write_text("{}")

    assert (mode(ledger), mode(ledger / "sub"), mode(ledger / "sub" / "x.json")) == (
        0o770,
        0o770,
        0o660,
    )
    assert state_mode() == OWNER_ONLY == StateMode(0o600, 0o700)


def test_state_made_open_by_an_older_version_is_tightened(tmp_path: Path, open_umask: None) -> None:
    storage = Storage(tmp_path / "root")
    storage.state_dir.mkdir(parents=True)
    (storage.state_dir / "queue.db").write_text("")
    assert mode(storage.state_dir) == 0o755

    storage.make_state_dir()
    create_state_file(storage.state_dir / "queue.db")

    assert mode(storage.state_dir) == 0o700
    assert mode(storage.state_dir / "queue.db") == 0o600
    assert (storage.state_dir / "queue.db").read_text() == ""  # never truncated


def test_outputs_and_inputs_keep_the_users_umask(
    storage: Storage, tmp_path: Path, open_umask: None
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("ID,Value\n")
    rel = storage.ingest(source, "job1")
    with atomic_output(storage.root / "outputs" / "job1" / "out.csv") as temp:
        temp.write_text("x")

    assert mode(storage.root / rel) == 0o644
    assert mode(storage.root / "outputs" / "job1" / "out.csv") == 0o644
    assert mode(storage.root / "outputs") == 0o755
