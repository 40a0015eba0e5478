"""The storage root: safe paths, atomic publication of outputs, stale temporary files,
and conveyor's own state files (owner-only)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from conveyor.errors import BadInput, StorageError, StorageFull, UnsafePath
from conveyor.settings import STATE_DIR

#: Prefix of temporary files; readers and listings skip names starting with it.
TEMP_PREFIX = ".conveyor-tmp-"
#: Random bytes in a temporary file's name (as hex, before the final name).
_TEMP_TOKEN_BYTES = 6
#: A temporary file is only judged stale once it is this old (by mtime): it covers the
#: instant between a writer creating its file and locking it.
STALE_TEMP_AGE_S = 2.0
#: Temporary files named the old way (no host, pid or lock) are judged by age alone.
LEGACY_TEMP_AGE_S = 3600.0
#: Where :meth:`Storage.ingest` writes its copies before publishing them into
#: ``inputs/<job_id>/`` (the same file system, so the rename is atomic).
STAGING_DIR = "inputs/.conveyor-staging"
#: A directory is swept for stale temporary files at most this often per process, so
#: writing many files into one directory (claims) does not list it each time.
SWEEP_EVERY_S = 60.0
#: Room a temporary name takes beyond the final name: prefix, host (up to 32), pid,
#: token and dashes. A final name longer than NAME_MAX less this is hashed in the name.
_TEMP_OVERHEAD_BYTES = len(TEMP_PREFIX) + 32 + 1 + 10 + 1 + 2 * _TEMP_TOKEN_BYTES + 1
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.]")
_TOKEN = re.compile(rf"[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}")


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


# --- conveyor's own state files ----------------------------------------------------------


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
        _tighten(path, mode.directory)
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
            _tighten_fd(fd, mode.file)
        finally:
            os.close(fd)
    except OSError as exc:
        raise storage_error(exc, f"cannot create {path}") from exc
    return path


def _tighten(path: Path, wanted: int) -> None:
    """Give a directory of ours exactly ``wanted`` (mkdir's mode went through the umask)."""
    info = path.stat()
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != wanted:
        path.chmod(wanted)


def _tighten_fd(fd: int, wanted: int) -> None:
    """Give a file of ours exactly ``wanted``."""
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != wanted:
        os.fchmod(fd, wanted)


# --- temporary files: atomic publication, and the stale ones of dead writers ----------------


def _host_label() -> str:
    """This host's name as it goes in temporary names: no dashes, at most 32 characters."""
    return _HOST_UNSAFE.sub("_", socket.gethostname())[:32] or "host"


def _temp_tail(final_name: str) -> str:
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
    return f"{TEMP_PREFIX}{_host_label()}-{os.getpid()}-{token}-{_temp_tail(final_name)}"


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


def _lock_temp(fd: int) -> bool:
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
    try:
        _lock_temp(lock_fd)
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
            _tighten(path, state.directory)
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
    tail = _temp_tail(final.name)
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


# --- safe paths under the storage root ------------------------------------------------------

#: POSIX limits: NAME_MAX for one path component, PATH_MAX for a whole path, in bytes.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096

_DRIVE_FORM = re.compile(r"[A-Za-z]:")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_JOB_ID = re.compile(r"[0-9A-Za-z_-]{1,64}\Z")


def _unsafe(rel: object, reason: str) -> UnsafePath:
    shown = repr(rel)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return UnsafePath(f"unsafe path {shown}: {reason}")


def check_relative_path(rel: object) -> str:
    """Check a message path's syntax and return it normalised (``a//./b`` -> ``a/b``).

    This is the part of the check that needs no file system, so a submitter and a message
    decoder can reject bad paths early; :meth:`Storage.resolve` adds the symlink checks.

    Raises:
        UnsafePath: not a string; empty; absolute; a ``..`` component; a NUL or other
            control character; a backslash or Windows drive form; over ``MAX_NAME_BYTES``
            per component or ``MAX_PATH_BYTES`` in all; inside ``_conveyor/``; or a name
            reserved for conveyor's temporary files.
    """
    if not isinstance(rel, str):
        raise _unsafe(rel, f"must be a string, not {type(rel).__name__}")
    reason = _text_problem(rel)
    if reason is None:
        parts = [part for part in rel.split("/") if part not in ("", ".")]
        reason = _parts_problem(parts)
    if reason is not None:
        raise _unsafe(rel, reason)
    return "/".join(parts)


#: Whole-path checks, in order: (test, reason).
_TEXT_CHECKS: tuple[tuple[Callable[[str], object], str], ...] = (
    (lambda rel: not rel, "empty path"),
    (lambda rel: "\0" in rel, "contains a NUL byte"),
    (_CONTROL_CHARS.search, "contains a control character"),
    (lambda rel: "\\" in rel, "contains a backslash (paths use '/')"),
    (_DRIVE_FORM.match, "a Windows drive path; give a path relative to the storage root"),
    (lambda rel: rel.startswith("/"), "absolute path; give a path relative to the storage root"),
)


def _text_problem(rel: str) -> str | None:
    """What is wrong with the path as a whole, or None."""
    for test, reason in _TEXT_CHECKS:
        if test(rel):
            return reason
    try:
        size = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    return f"longer than {MAX_PATH_BYTES} bytes" if size > MAX_PATH_BYTES else None


def _parts_problem(parts: list[str]) -> str | None:
    """What is wrong with one of the path's components, or None."""
    if not parts:
        return "names the storage root itself, not a file"
    for part in parts:
        if part == "..":
            return "'..' is not allowed"
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            return f"a component is longer than {MAX_NAME_BYTES} bytes"
        if part.startswith(TEMP_PREFIX):
            return f"names starting with {TEMP_PREFIX!r} are reserved"
    # casefold: on a case-insensitive file system `_CONVEYOR` is the same directory.
    if parts[0].casefold() == STATE_DIR.casefold():
        return f"inside conveyor's own state directory {STATE_DIR}/"
    return None


def check_job_id(job_id: object) -> str:
    """Return ``job_id`` if it is a valid job id (``[0-9A-Za-z_-]{1,64}``).

    Raises:
        BadInput: it is not; job ids become directory names, so this is a safety check.
    """
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        shown = repr(job_id)[:80]
        raise BadInput(f"bad job id {shown}: use 1 to 64 of [0-9A-Za-z_-]")
    return job_id


class Storage:
    """The storage root (a local directory, or EFS mounted at ``/efs``) and safe paths in it.

    Every path in a message is relative to the root. :meth:`resolve` follows symlinks the
    way the kernel will (``realpath``) and checks that the result is still inside the root,
    comparing path components (so ``/data/input-evil`` is not inside ``/data/in``).

    The check happens at resolve time: someone who can write to the storage could still swap
    a directory for a symlink between the check and the use. The storage is shared by
    trusted workers; the check keeps out bad *messages*, not hostile file-system users.
    """

    def __init__(self, root: Path | str) -> None:
        #: The root with symlinks resolved (``/efs`` may itself be a symlink).
        self.root = Path(os.path.realpath(root))

    def __repr__(self) -> str:
        return f"Storage({str(self.root)!r})"

    @property
    def state_dir(self) -> Path:
        """``<root>/_conveyor``: the ledger, claim checks and the default SQLite queue."""
        return self.root / STATE_DIR

    def make_state_dir(self, *parts: str, mode: StateMode = OWNER_ONLY) -> Path:
        """Create ``_conveyor/<parts...>`` (``_conveyor`` itself with no parts) with
        ``mode``, the root with the umask's; return it. Use it for anything conveyor keeps
        for itself: claims, the SQLite queue and ledger (then :func:`create_state_file`).

        Raises:
            StorageError: it cannot be created.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, f"cannot create {self.root}") from exc
        path = make_state_dir(self.state_dir, mode)
        for part in parts:
            path = make_state_dir(path / part, mode)
        return path

    def resolve(self, rel: str) -> Path:
        """Resolve a message path under the root, following symlinks; it need not exist.

        Raises:
            UnsafePath: the path is malformed (see :func:`check_relative_path`) or, once
                symlinks are followed, leaves the root or lands in ``_conveyor/``.
        """
        clean = check_relative_path(rel)
        # Non-strict realpath resolves the part that exists; the rest was checked to hold
        # no `..`, so it cannot climb back out.
        resolved = Path(os.path.realpath(self.root / clean))
        self._check_contained(rel, resolved)
        return resolved

    def resolve_input(self, rel: str) -> Path:
        """Resolve an input path: it must exist and be a regular file (after symlinks).

        Raises:
            UnsafePath: see :meth:`resolve`.
            BadInput: the file does not exist or is not a regular file.
        """
        path = self.resolve(rel)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise BadInput(f"input not found: {rel!r} (under {self.root})") from None
        except OSError as exc:
            raise BadInput(f"cannot read input {rel!r}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(mode):
            raise BadInput(f"input {rel!r} is not a regular file")
        return path

    def resolve_output(self, rel: str) -> Path:
        """Resolve an output path; the file and its directories may not exist yet.

        If the output is an existing symlink, its target is returned (and checked), so the
        atomic rename replaces the file the link points to, which is inside the root.

        Raises:
            UnsafePath: see :meth:`resolve`.
            BadInput: the output exists and is a directory.
        """
        path = self.resolve(rel)
        if path.is_dir():
            raise BadInput(f"output {rel!r} is a directory")
        return path

    def default_output(self, job_id: str, input_name: str | None) -> str:
        """The default output of a job: ``outputs/<job_id>/<input's file name>``.

        Deterministic per job, so a retried or duplicated job publishes to the same place.
        A job without input gets ``outputs/<job_id>/output``.
        """
        name = PurePosixPath(input_name).name if input_name else "output"
        return check_relative_path(f"outputs/{check_job_id(job_id)}/{name or 'output'}")

    def ingest(self, local_file: Path | str, job_id: str) -> str:
        """Copy a local file into ``inputs/<job_id>/<name>`` atomically; return that path.

        The copy is published with :func:`atomic_output`, so a worker never reads a partial
        input, and copying the same file again for the same job is harmless. It is written
        in ``inputs/.conveyor-staging/``, which every ingest sweeps, so the copy a killed
        submitter left behind goes with the next submit (each job's own directory is
        written once and never visited again).

        Raises:
            BadInput: ``local_file`` does not exist or is not a regular file.
            UnsafePath: its name cannot be stored (over-long, reserved).
            StorageError: the copy failed (StorageFull when the disk is full).
        """
        source = Path(local_file)
        if not source.is_file():
            raise BadInput(f"input file not found or not a regular file: {source}")
        rel = check_relative_path(f"inputs/{check_job_id(job_id)}/{source.name}")
        final = self.resolve_output(rel)
        with atomic_output(final, temp_dir=self.root / STAGING_DIR) as temp:
            try:
                shutil.copyfile(source, temp)
            except OSError as exc:
                raise storage_error(exc, f"cannot copy {source} to {final}") from exc
        return rel

    def relative(self, path: Path | str) -> str | None:
        """The message path of a file already under the root, or None if it is elsewhere."""
        resolved = Path(os.path.realpath(path))
        try:
            rel = resolved.relative_to(self.root)
        except ValueError:
            return None
        return rel.as_posix() if rel.parts else None

    def _check_contained(self, rel: str, resolved: Path) -> None:
        # Path.relative_to compares whole components, never string prefixes.
        try:
            inside = resolved.relative_to(self.root)
        except ValueError:
            raise _unsafe(rel, "leaves the storage root (through a symlink)") from None
        if not inside.parts:
            raise _unsafe(rel, "resolves to the storage root itself")
        if inside.parts[0].casefold() == STATE_DIR.casefold():
            raise _unsafe(rel, f"resolves into conveyor's own state directory {STATE_DIR}/")
