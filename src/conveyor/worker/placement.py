"""Where the embedded SQLite ledger may not go: shared storage (NFS, EFS), found from the
mount table."""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.errors import ConfigError
from conveyor.settings import Settings


def network_filesystem_of(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the network filesystem (NFS, EFS, SMB...) holding ``path``, or None if
    it is local.

    ``path`` need not exist yet: its nearest existing ancestor is looked up (symlinks
    resolved). ``mountinfo`` is ``/proc/self/mountinfo``'s text (read when None; where there
    is none, as off Linux, every path counts as local).
    """
    from conveyor.queues.sqlite_path import filesystem_type, is_network_filesystem

    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fstype = filesystem_type(os.path.realpath(existing), mountinfo)
    return fstype if is_network_filesystem(fstype) else None


def check_ledger_placement(settings: Settings, mountinfo: str | None = None) -> None:
    """Refuse to run with the embedded SQLite ledger on shared storage (NFS/EFS).

    Workers on shared storage run on several machines; SQLite's locking does not hold
    across them, so the ledger must be a database server there (``CONVEYOR_LEDGER_URL``).

    Raises:
        ConfigError: no ledger URL is set and the storage is on a network filesystem.
    """
    if settings.ledger_url is not None:
        return
    fstype = network_filesystem_of(settings.storage, mountinfo)
    if fstype is None:
        return
    queue_too = " (and --queue to an SQS queue)" if settings.queue_url is None else ""
    raise ConfigError(
        f"storage {settings.storage} is on {fstype}, shared storage where the embedded SQLite "
        f"ledger is unsafe: set CONVEYOR_LEDGER_URL (--ledger) to a postgresql:// URL"
        f"{queue_too}"
    )
