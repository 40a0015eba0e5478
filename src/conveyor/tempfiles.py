"""Temporary files: names that say who writes them, the writer's lock, and the cleaners
that remove what dead writers left (sweep_stale_temps, clean_stale_temps, remove_temps)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

#: Prefix of temporary files; readers and listings skip names starting with it.
TEMP_PREFIX = ".conveyor-tmp-"
#: Random bytes in a temporary file's name (as hex, before the final name).
_TEMP_TOKEN_BYTES = 6
#: A temporary file is only judged stale once it is this old (by mtime): it covers the
#: instant between a writer creating its file and locking it.
STALE_TEMP_AGE_S = 2.0
#: Temporary files named the old way (no host, pid or lock) are judged by age alone.
LEGACY_TEMP_AGE_S = 3600.0
#: A directory is swept for stale temporary files at most this often per process, so
#: writing many files into one directory (claims) does not list it each time.
SWEEP_EVERY_S = 60.0
#: Room a temporary name takes beyond the final name: prefix, host (up to 32), pid,
#: token and dashes. A final name longer than NAME_MAX less this is hashed in the name.
_TEMP_OVERHEAD_BYTES = len(TEMP_PREFIX) + 32 + 1 + 10 + 1 + 2 * _TEMP_TOKEN_BYTES + 1
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.]")
_TOKEN = re.compile(rf"[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}")


def _host_label() -> str:
    """This host's name as it goes in temporary names: no dashes, at most 32 characters."""
    return _HOST_UNSAFE.sub("_", socket.gethostname())[:32] or "host"


def temp_tail(final_name: str) -> str:
    """The final name as it ends a temporary name: itself, or a hash when it is so long
    that the temporary name would pass NAME_MAX (255 bytes)."""
    if len(final_name.encode()) + _TEMP_OVERHEAD_BYTES <= 255:
        return final_name
    return "~" + hashlib.sha256(final_name.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def temp_name(final_name: str) -> str:
    """A fresh temporary name for ``final_name``:
    ``.conveyor-tmp-<host>-<pid>-<random>-<name>``. Host and pid say who wrote it (for
    people, and for the cleaner where the file system has no locks)."""
    token = secrets.token_hex(_TEMP_TOKEN_BYTES)
    return f"{TEMP_PREFIX}{_host_label()}-{os.getpid()}-{token}-{temp_tail(final_name)}"


@dataclass(frozen=True)
class _TempName:
    host: str | None  # None: a legacy name, ``.conveyor-tmp-<token>-<name>``
    pid: int | None
    tail: str


def _parse_temp_name(name: str) -> _TempName | None:
    """The parts of a temporary file's name, or None if it is not one of ours."""
    if not name.startswith(TEMP_PREFIX):
        return None
    rest = name[len(TEMP_PREFIX) :]
    parts = rest.split("-", 3)
    if len(parts) == 4 and parts[1].isdigit() and _TOKEN.fullmatch(parts[2]) and parts[0]:
        return _TempName(parts[0], int(parts[1]), parts[3])
    legacy = rest.split("-", 1)
    if len(legacy) == 2 and _TOKEN.fullmatch(legacy[0]):
        return _TempName(None, None, legacy[1])
    return None


def lock_temp(fd: int) -> bool:
    """Take the writer's lock on its temporary file; False where the file system has none.

    flock, not fcntl/lockf: a POSIX lock belongs to the process and is dropped when the
    process closes *any* descriptor of the file, which the task itself does when it
    finishes writing the temporary path; a flock lock belongs to this open file and lives
    until it is closed. On Linux's NFS client (EFS is NFSv4.1) flock is carried to the
    server as a whole-file byte-range lock, which EFS honours across hosts; it is released
    when the writer dies (at once) or its host dies (when the NFS lease expires). A mount
    with ``local_lock=flock`` keeps it local: then only this host sees it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


#: When each directory was last swept by this process (bounded; a cache, not state).
_last_sweep: dict[str, float] = {}
_MAX_SWEEPS_REMEMBERED = 4096


def sweep_stale_temps(directory: Path) -> list[Path]:
    """:func:`clean_stale_temps` on ``directory``, at most once per ``SWEEP_EVERY_S`` per
    process. Never raises: a failed sweep only leaves files for the next one."""
    key = str(directory)
    now = time.monotonic()
    last = _last_sweep.get(key)
    if last is not None and now - last < SWEEP_EVERY_S:
        return []
    if len(_last_sweep) >= _MAX_SWEEPS_REMEMBERED:
        _last_sweep.clear()
    _last_sweep[key] = now
    try:
        return clean_stale_temps(directory)
    except OSError:
        return []


def clean_stale_temps(directory: Path, min_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove the temporary files in ``directory`` whose writers are dead, and only those.

    A writer holds a lock on its temporary file for as long as the file exists (see
    :func:`atomic_output`), and a lock dies with its process: so a file older than
    ``min_age_s`` whose lock can be taken has no writer left. It is removed while the lock
    is held. Where the file system has no locks, a file is removed only if its name says
    it was written on this host by a process that no longer exists. Legacy names (no
    writer in them) are removed once older than ``LEGACY_TEMP_AGE_S``.

    Returns:
        The files removed.

    Raises:
        OSError: the directory cannot be listed (other than not existing).
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    now = time.time()
    for entry in entries:
        parsed = _parse_temp_name(entry.name)
        if parsed is None:
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if _remove_if_stale(path, parsed, now, min_age_s):
                removed.append(path)
    return removed


def _remove_if_stale(path: Path, parsed: _TempName, now: float, min_age_s: float) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        age_s = now - info.st_mtime
        if not stat.S_ISREG(info.st_mode) or age_s < min_age_s:
            return False
        if parsed.host is None:
            stale = age_s >= LEGACY_TEMP_AGE_S
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stale = True
            except BlockingIOError:
                stale = False  # its writer is alive
            except OSError:  # no locks on this file system
                stale = parsed.host == _host_label() and not _alive(parsed.pid)
        if not stale or os.stat(path, follow_symlinks=False).st_ino != info.st_ino:
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def _alive(pid: int | None) -> bool:
    """Whether a process ``pid`` exists on this host (one we may not signal counts)."""
    if pid is None or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temps(final: Path) -> list[Path]:
    """Remove the temporary files that writers of ``final`` left beside it, locked or not.

    Call it only while holding the job's lease after the previous holder's expired: a
    writer still alive then cannot publish anyway, and :func:`atomic_output` makes a
    removed temporary file fail its publication rather than publish a partial file.
    (:func:`clean_stale_temps` is the cleaner that needs no lease: it spares live writers.)

    Returns:
        The files removed.
    """
    tail = temp_tail(final.name)
    removed: list[Path] = []
    try:
        names = os.listdir(final.parent)
    except OSError:
        return removed
    for name in names:
        parsed = _parse_temp_name(name)
        if parsed is not None and parsed.tail in (tail, final.name):
            path = final.parent / name
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
