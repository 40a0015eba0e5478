"""The EFS PersistentVolume and PersistentVolumeClaim mounted ReadWriteMany at /efs."""

from __future__ import annotations

from conveyor.errors import ConfigError
from conveyor.k8s.config import Deployment
from conveyor.k8s.objects import Manifest, metadata

#: AWS's recommended NFS options for EFS (used only by the plain-NFS form; the CSI driver
#: sets its own, with TLS).
NFS_MOUNT_OPTIONS = [
    "nfsvers=4.1",
    "rsize=1048576",
    "wsize=1048576",
    "hard",
    "timeo=600",
    "retrans=2",
    "noresvport",
]


def volume_name(deploy: Deployment) -> str:
    """The PersistentVolume's name: PVs are cluster-wide, so it carries the namespace."""
    return f"{deploy.workload.namespace}-{deploy.efs.claim_name}"[:63].rstrip("-")


def _source(deploy: Deployment) -> Manifest:
    efs = deploy.efs
    if efs.mode == "nfs":
        server = efs.server
        if server is None:
            region = deploy.region
            if efs.file_system_id is None or region is None:
                raise ConfigError("--efs-mode nfs needs --efs-server (or --efs-id and --region)")
            server = f"{efs.file_system_id}.efs.{region}.amazonaws.com"
        return {"nfs": {"server": server, "path": "/"}, "mountOptions": NFS_MOUNT_OPTIONS}
    if efs.file_system_id is None:
        raise ConfigError("the EFS volume needs --efs-id (fs-…)")
    handle = efs.file_system_id
    if efs.access_point_id is not None:
        handle = f"{handle}::{efs.access_point_id}"
    return {"csi": {"driver": "efs.csi.aws.com", "volumeHandle": handle}}


def storage_objects(deploy: Deployment) -> list[Manifest]:
    """A statically provisioned PV bound to its claim, both ways, so nothing else takes it.

    EFS is elastic: the capacity is required by Kubernetes and ignored by EFS. The
    reclaim policy is Retain: deleting the claim never deletes the data.
    """
    efs = deploy.efs
    pv_name = volume_name(deploy)
    pv_spec: Manifest = {
        "capacity": {"storage": efs.size},
        "volumeMode": "Filesystem",
        "accessModes": ["ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": efs.storage_class,
        "claimRef": {"namespace": deploy.workload.namespace, "name": efs.claim_name},
    }
    source = _source(deploy)
    pv_spec.update(source)
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": metadata(deploy, pv_name, "storage", namespaced=False),
        "spec": pv_spec,
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(deploy, efs.claim_name, "storage"),
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": efs.storage_class,
            "volumeName": pv_name,
            "resources": {"requests": {"storage": efs.size}},
        },
    }
    return [pv, pvc]
