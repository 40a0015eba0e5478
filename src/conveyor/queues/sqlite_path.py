"""Where an embedded SQLite database may live: a file named by a ``sqlite:///`` URL, on a
local disk (SQLite's locking is unsafe on network filesystems such as NFS and EFS)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from conveyor.errors import ConfigError

#: Filesystem types on which SQLite's locking is unsafe (network and cluster filesystems;
#: Amazon EFS mounts as nfs4).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "coda",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.glusterfs",
        "fuse.ceph-fuse",
        "fuse.mountpoint-s3",
        "fuse.juicefs",
    }
)


def _unescape_mount_path(field: str) -> str:
    r"""Decode mountinfo's octal escapes (``\040`` for a space, ``\134`` for a backslash)."""
    out: list[str] = []
    i = 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str, mountinfo: str) -> str | None:
    """The type of the filesystem holding absolute ``path``, per ``/proc/self/mountinfo`` text.

    The mount whose mount point is the longest prefix of ``path`` wins; among mounts on the
    same point, the last one (it hides the earlier ones). Returns None if nothing matches.
    """
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            separator = fields.index("-", 6)
            mount_point, fstype = _unescape_mount_path(fields[4]), fields[separator + 1]
        except (ValueError, IndexError):
            continue  # not a mount line
        root = mount_point.rstrip("/")
        under = path == mount_point or path.startswith(root + "/")
        if under and (best is None or len(root) >= best[0]):
            best = (len(root), fstype)
    return best[1] if best else None


def is_network_filesystem(fstype: str | None) -> bool:
    """Whether SQLite's file locking is unsafe on this filesystem type."""
    return fstype is not None and fstype.lower() in NETWORK_FILESYSTEMS


def _read_mountinfo() -> str | None:
    """This process's mount table (Linux), or None where there is none to read."""
    try:
        return Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def check_local_filesystem(path: Path, mountinfo: str | None = None) -> None:
    """Refuse a database path on a network filesystem, where SQLite's locks do not hold.

    ``path`` need not exist yet: its nearest existing ancestor is checked (symlinks
    resolved). Without a readable mount table (not Linux) the check passes.

    Raises:
        ConfigError: the path is on NFS, EFS, SMB/CIFS or a similar filesystem.
    """
    text = _read_mountinfo() if mountinfo is None else mountinfo
    if text is None:
        return
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fstype = filesystem_type(os.path.realpath(existing), text)
    if is_network_filesystem(fstype):
        raise ConfigError(
            f"the SQLite queue cannot live on {path} ({fstype}): SQLite's locking is unsafe "
            "on network filesystems; use an SQS queue there (--queue / CONVEYOR_QUEUE_URL) "
            "or put queue.db on a local disk"
        )


def path_from_url(url: str) -> Path:
    """The file named by ``sqlite:///abs/path.db`` (or ``sqlite://rel/path.db``).

    Raises:
        ConfigError: not a sqlite URL, or it names no file.
    """
    prefix = "sqlite://"
    if not url.startswith(prefix) or not url[len(prefix) :].strip("/"):
        raise ConfigError(f"bad SQLite queue URL {url!r}: use sqlite:///absolute/path/queue.db")
    return Path(unquote(url[len(prefix) :])).expanduser()
