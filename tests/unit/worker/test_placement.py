"""The embedded SQLite ledger refused on shared storage (worker/placement.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import ConfigError
from conveyor.settings import Settings
from conveyor.worker.placement import check_ledger_placement, network_filesystem_of

#: A mount table with the storage on Amazon EFS (NFSv4.1) and the rest on a local disk.
EFS_MOUNTINFO = (
    "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n"
    "95 22 0:52 / {root} rw,relatime shared:50 - nfs4 fs-0123.efs.us-east-1.amazonaws.com:/ "
    "rw,vers=4.1,rsize=1048576\n"
)


def test_the_embedded_ledger_is_refused_on_shared_storage(tmp_path: Path) -> None:
    efs = tmp_path / "efs"
    efs.mkdir()  # the mount point
    mountinfo = EFS_MOUNTINFO.format(root=efs)
    on_efs = Settings(storage=efs / "conveyor")  # not there yet: its mount point decides

    with pytest.raises(ConfigError) as refused:
        check_ledger_placement(on_efs, mountinfo)

    assert refused.value.exit_code == 78
    assert "\n" not in refused.value.message
    assert "set CONVEYOR_LEDGER_URL" in refused.value.message
    assert "nfs4" in refused.value.message
    assert network_filesystem_of(efs, mountinfo) == "nfs4"
    # A ledger server on shared storage is fine, and so is the embedded one on a local disk.
    check_ledger_placement(on_efs.with_(ledger_url="postgresql://db/jobs"), mountinfo)
    check_ledger_placement(Settings(storage=tmp_path / "local"), mountinfo)
    assert network_filesystem_of(tmp_path / "local", mountinfo) is None
