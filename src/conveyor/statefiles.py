"""Conveyor's own state files and directories, owner-only whatever the umask, and the two
file-system calls every writer of storage shares: fsync_dir() and storage_error()."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import StorageError, StorageFull


def fsync_dir(directory: Path) -> None:
    """Make a rename or create in ``directory`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def storage_error(exc: OSError, what: str) -> StorageError:
    """Translate an OSError into conveyor's error tree, naming what was being done."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{what}: storage is full ({exc.strerror})")
    return StorageError(f"{what}: {exc.strerror or exc}")


@dataclass(frozen=True)
class StateMode:
    """Permissions of conveyor's own state (claims, queue and ledger databases, anything
    under ``_conveyor/``): a ``--param api_token=...`` lands there, so by default only the
    owner may read it. Outputs and inputs keep the user's umask instead."""

    file: int = 0o600
    directory: int = 0o700


#: The default: owner only.
OWNER_ONLY = StateMode()
#: Owner and group (workers running as different users of one group).
OWNER_AND_GROUP = StateMode(0o660, 0o770)


def state_mode(group: bool = False) -> StateMode:
    """The state permissions: owner only, or owner and group when ``group``."""
    return OWNER_AND_GROUP if group else OWNER_ONLY


def make_state_dir(path: Path, mode: StateMode = OWNER_ONLY) -> Path:
    """Create directory ``path`` with ``mode.directory`` exactly (whatever the umask);
    its parent must exist. An existing directory of ours gets that mode too (one made by
    an older version under the default umask is 0755).

    Raises:
        StorageError: it cannot be created.
    """
    try:
        path.mkdir(mode=mode.directory, exist_ok=True)
        tighten(path, mode.directory)
    except OSError as exc:
        raise storage_error(exc, f"cannot create {path}") from exc
    return path


def create_state_file(path: Path, mode: StateMode = OWNER_ONLY) -> Path:
    """Create the file ``path`` if missing, with ``mode.file`` exactly (an existing one
    of ours gets that mode; its content is kept). Call it before handing the path to
    SQLite: SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions.

    Raises:
        StorageError: it cannot be created.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, mode.file)
        try:
            tighten_fd(fd, mode.file)
        finally:
            os.close(fd)
    except OSError as exc:
        raise storage_error(exc, f"cannot create {path}") from exc
    return path


def tighten(path: Path, wanted: int) -> None:
    """Give a directory of ours exactly ``wanted`` (mkdir's mode went through the umask)."""
    info = path.stat()
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != wanted:
        path.chmod(wanted)


def tighten_fd(fd: int, wanted: int) -> None:
    """Give a file of ours exactly ``wanted``."""
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != wanted:
        os.fchmod(fd, wanted)
