"""Safe paths under the storage root, and ingest (storage.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import BadInput, UnsafePath
from conveyor.storage import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    Storage,
    check_job_id,
    check_relative_path,
)
from conveyor.tempfiles import TEMP_PREFIX


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
