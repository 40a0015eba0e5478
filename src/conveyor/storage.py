"""The storage root: safe paths, atomic publication of outputs."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from conveyor.errors import StorageError, StorageFull

#: Prefix of temporary files; readers and listings skip names starting with it.
TEMP_PREFIX = ".conveyor-tmp-"


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


@contextlib.contextmanager
def atomic_output(final: Path, before_publish: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; publish it there atomically on success.

    The caller writes the temporary file and closes it. On a normal exit the file is
    fsync'ed, ``before_publish`` is called (a worker checks it still holds its lease there;
    raising aborts), the file is renamed over ``final`` and the directory fsync'ed. On any
    exception the temporary file is removed and ``final`` is untouched, so no reader ever
    sees a partial output.

    Raises:
        StorageFull: the disk filled up.
        StorageError: the output could not be written.
    """
    directory = final.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, f"cannot create {directory}") from exc
    temp = directory / f"{TEMP_PREFIX}{secrets.token_hex(6)}-{final.name}"
    try:
        yield temp
        try:
            fd = os.open(temp, os.O_RDONLY)
        except FileNotFoundError:
            temp.touch()  # the task wrote nothing: publish an empty output
            fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_publish is not None:
            before_publish()
        os.replace(temp, final)
        fsync_dir(directory)
    except OSError as exc:
        _unlink_quietly(temp)
        raise storage_error(exc, f"cannot write {final}") from exc
    except BaseException:
        _unlink_quietly(temp)
        raise


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
