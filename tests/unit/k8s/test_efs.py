"""The EFS PersistentVolume's source: CSI, CSI through an access point, or plain NFS."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.k8s import render
from tests.unit.k8s.cases import AP, FS, REGION, deployment, one


@pytest.mark.parametrize(
    ("efs", "source"),
    [
        ({}, {"csi": {"driver": "efs.csi.aws.com", "volumeHandle": FS}}),
        (
            {"access_point_id": AP},
            {"csi": {"driver": "efs.csi.aws.com", "volumeHandle": f"{FS}::{AP}"}},
        ),
        ({"mode": "nfs"}, {"nfs": {"server": f"{FS}.efs.{REGION}.amazonaws.com", "path": "/"}}),
        (
            {"mode": "nfs", "server": "files.example.internal"},
            {"nfs": {"server": "files.example.internal", "path": "/"}},
        ),
    ],
)
def test_the_efs_volume_source(efs: dict[str, Any], source: dict[str, Any]) -> None:
    pv = one(render(deployment(efs=efs), ["storage"]), "PersistentVolume")
    assert {key: pv["spec"][key] for key in ("csi", "nfs") if key in pv["spec"]} == source
    assert ("mountOptions" in pv["spec"]) == ("nfs" in source)
