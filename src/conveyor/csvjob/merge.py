"""Merging a split CSV: the shards' part files concatenated by the kernel into one output,
published atomically, then removed; safe to run again."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from conveyor.atomic import atomic_output
from conveyor.errors import StorageError
from conveyor.statefiles import storage_error
from conveyor.tempfiles import clean_stale_temps

#: Parts copied at once by a merge.
MERGE_THREADS = 2
#: After copying this much, the merge asks the kernel to start writing it to disk.
_FLUSH_BYTES = 32 << 20


@dataclass(frozen=True)
class MergeStats:
    """What a merge did: parts concatenated, bytes written (0 when it had already run)."""

    parts: int
    output_bytes: int
    already_merged: bool


def merge_csv_parts(
    parts: Sequence[Path],
    output: Path,
    *,
    before_publish: Callable[[], None] | None = None,
    threads: int = MERGE_THREADS,
) -> MergeStats:
    """Concatenate ``parts`` in order into ``output``, published atomically; then remove them.

    The first shard's part carries the header (:func:`run_shard`), so this is a plain byte
    copy, done by the kernel (``copy_file_range``) on ``threads`` threads, each part to its
    own offset, while the written pages are already being flushed to disk, so the final
    fsync is short. Safe to run again, as a retried or duplicated completion does: with every
    part present it merges again (the same bytes); when parts are missing but ``output``
    exists and is newer than every part left, the merge had been published, so only the
    rest of the parts is removed.

    Args:
        before_publish: called just before the rename (a worker checks its lease there).
        threads: parts copied at once (the copy is the kernel's; threads only issue it).

    Raises:
        StorageError: a part is missing and no merged output was published, or a file could
            not be read or written (StorageFull when the disk is full).
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    opened: list[int] = []
    try:
        for part in parts:
            opened.append(os.open(part, os.O_RDONLY | os.O_CLOEXEC))
    except FileNotFoundError as exc:
        _close_all(opened)
        if not _already_merged(parts, output):
            raise StorageError(
                f"cannot merge into {output}: part {exc.filename} is missing and no merged "
                "output was published"
            ) from exc
        _remove(parts)
        return MergeStats(len(parts), 0, already_merged=True)
    except OSError as exc:
        _close_all(opened)
        raise storage_error(exc, f"cannot read {exc.filename}") from exc
    try:
        with atomic_output(output, before_publish) as temp:
            written = _concatenate(opened, temp, threads)
    finally:
        _close_all(opened)
    _remove(parts)
    return MergeStats(len(parts), written, already_merged=False)


def _concatenate(sources: Sequence[int], target: Path, threads: int) -> int:
    """Copy every source file to its place in ``target``; return the bytes written."""
    sizes = [os.fstat(fd).st_size for fd in sources]
    starts = list(itertools.accumulate(sizes, initial=0))
    out = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="conveyor-merge") as pool:
            copies = [
                pool.submit(_copy, fd, out, size, start)
                for fd, size, start in zip(sources, sizes, starts[:-1], strict=True)
            ]
            for copy in copies:
                copy.result()
        return starts[-1]
    finally:
        os.close(out)


def _copy(source: int, target: int, size: int, at: int) -> None:
    """Copy ``size`` bytes of ``source`` to offset ``at`` of ``target``, in the kernel if it can."""
    done = 0
    while done < size:
        count = min(size - done, _FLUSH_BYTES)
        try:
            copied = os.copy_file_range(source, target, count, done, at + done)
        except OSError as exc:
            if exc.errno not in _NO_COPY_RANGE:
                raise
            copied = os.pwrite(target, os.pread(source, min(count, 1 << 20), done), at + done)
        if copied == 0:
            raise OSError(errno.EIO, f"a part shrank while it was copied ({done} of {size} bytes)")
        _start_writeback(target, at + done, copied)
        done += copied


#: copy_file_range's errors meaning "not between these two files" (read and write instead).
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of ``fd`` to disk now, without waiting (Linux: fadvise starts
    writeback of dirty pages before dropping clean ones), so the publisher's fsync is short."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _already_merged(parts: Sequence[Path], output: Path) -> bool:
    """Whether ``output`` was published from these parts: it exists and no part left is newer."""
    try:
        merged_ns = os.stat(output).st_mtime_ns
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(exc, f"cannot read {output}") from exc
    for part in parts:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(part).st_mtime_ns > merged_ns:
                return False
    return True


def _remove(parts: Sequence[Path]) -> None:
    for part in parts:
        try:
            os.unlink(part)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error(exc, f"cannot remove {part}") from exc


def remove_parts_dir(directory: Path) -> None:
    """Remove a merged group's part directory: the stale temporary files of killed shard
    attempts first (their writers are dead), then the directory if that left it empty.
    A directory still in use (a live writer's temporary file) stays."""
    clean_stale_temps(directory, min_age_s=0)
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(directory)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)
