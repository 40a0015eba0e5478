"""atomic_output(): a file is written to a locked temporary file beside its final name,
fsync'ed, checked and renamed, so no reader ever sees a partial file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from conveyor.errors import StorageError
from conveyor.statefiles import StateMode, fsync_dir, storage_error, tighten
from conveyor.tempfiles import lock_temp, sweep_stale_temps, temp_name


@contextlib.contextmanager
def atomic_output(
    final: Path,
    before_publish: Callable[[], None] | None = None,
    fault: Callable[[str, Path], None] | None = None,
    *,
    temp_dir: Path | None = None,
    state: StateMode | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; publish it there atomically on success.

    The caller writes the temporary file and closes it. On a normal exit the file is
    fsync'ed, ``before_publish`` is called (a worker checks it still holds its lease there;
    raising aborts), the file is renamed over ``final`` and the directory fsync'ed. On any
    exception the temporary file is removed and ``final`` is untouched, so no reader ever
    sees a partial output.

    The temporary file is named after its writer (:func:`temp_name`) and locked while it
    exists; before creating it, the directory is swept of the temporary files of dead
    writers (:func:`clean_stale_temps`), so a ``kill -9`` leaves nothing behind for good.

    ``fault`` is the fault suite's crash hook (:mod:`conveyor.faults`, tests only): it is
    called with ``"mid_write"``, ``"after_fsync"`` and ``"after_rename"`` and the temporary
    path at those steps.

    Args:
        temp_dir: where to make the temporary file instead of beside ``final`` (same file
            system): a directory every writer of this kind sweeps, such as the staging
            directory of inputs, whose final directories are each written once.
        state: for conveyor's own state files (claims): the file gets ``state.file``
            and missing directories ``state.directory``, whatever the umask. Default: the
            umask's, as for any output.

    Raises:
        StorageFull: the disk filled up.
        StorageError: the output could not be written.
    """
    directory = final.parent
    staging = directory if temp_dir is None else temp_dir
    for needed in dict.fromkeys((directory, staging)):
        _make_dirs(needed, state)
    sweep_stale_temps(staging)
    temp = staging / temp_name(final.name)
    try:
        # Created before the task runs (a task that writes nothing publishes it empty), so
        # a temporary file that vanishes before the rename, removed by the cleanup after a
        # crash (remove_temps), fails this publication instead of publishing nothing.
        lock_fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise storage_error(exc, f"cannot write {final}") from exc
    except BaseException:
        # A signal handler's exception (conveyor run's SIGTERM) raised as os.open returns,
        # the file made but its descriptor not yet ours: the name is ours alone, remove it.
        _unlink_quietly(temp)
        raise
    try:
        lock_temp(lock_fd)
        if state is not None:
            os.fchmod(lock_fd, state.file)
        yield temp
        if fault is not None:
            fault("mid_write", temp)
        _publish(temp, final, before_publish, fault)
    except OSError as exc:
        _unlink_quietly(temp)
        raise storage_error(exc, f"cannot write {final}") from exc
    except BaseException:
        _unlink_quietly(temp)
        raise
    finally:
        os.close(lock_fd)  # after the rename or the unlink: the lock covers the file's life


def _make_dirs(directory: Path, state: StateMode | None) -> None:
    """Create ``directory`` and its missing parents (with ``state``'s mode if given)."""
    try:
        if state is None:
            directory.mkdir(parents=True, exist_ok=True)
            return
        missing = []
        for path in (directory, *directory.parents):
            if path.is_dir():
                break
            missing.append(path)
        for path in reversed(missing):
            path.mkdir(mode=state.directory, exist_ok=True)
            tighten(path, state.directory)
    except OSError as exc:
        raise storage_error(exc, f"cannot create {directory}") from exc


def _publish(
    temp: Path,
    final: Path,
    before_publish: Callable[[], None] | None,
    fault: Callable[[str, Path], None] | None,
) -> None:
    """fsync ``temp``, check, rename it over ``final``, fsync the directories."""
    try:
        fd = os.open(temp, os.O_RDONLY)
    except FileNotFoundError:
        raise StorageError(
            f"cannot publish {final}: its temporary file was removed (a cleanup after a "
            "crash); the job is retried"
        ) from None
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if fault is not None:
        fault("after_fsync", temp)
    if before_publish is not None:
        before_publish()
    os.replace(temp, final)
    fsync_dir(final.parent)
    if temp.parent != final.parent:
        fsync_dir(temp.parent)
    if fault is not None:
        fault("after_rename", temp)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
