"""The storage root and safe paths in it (Storage, check_relative_path, check_job_id).
Atomic publication, temporary files and state files have their own modules."""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from conveyor.atomic import atomic_output
from conveyor.errors import BadInput, UnsafePath
from conveyor.settings import STATE_DIR
from conveyor.statefiles import OWNER_ONLY, StateMode, make_state_dir, storage_error
from conveyor.tempfiles import TEMP_PREFIX

#: Where :meth:`Storage.ingest` writes its copies before publishing them into
#: ``inputs/<job_id>/`` (the same file system, so the rename is atomic).
STAGING_DIR = "inputs/.conveyor-staging"

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
