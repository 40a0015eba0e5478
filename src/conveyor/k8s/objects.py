"""What every rendered object shares: metadata and labels, the restricted security contexts,
and the two shapes used twice (an IRSA ServiceAccount, a CronJob)."""

from __future__ import annotations

from typing import Any

from conveyor import __version__
from conveyor.k8s.config import RUN_AS_UID, Deployment

Manifest = dict[str, Any]

#: Annotation key: what rendered an object.
RENDERED_BY = "conveyor/rendered-by"


def labels(deploy: Deployment, component: str, version: str | None = None) -> dict[str, str]:
    """The recommended ``app.kubernetes.io`` labels of every object."""
    out = {
        "app.kubernetes.io/name": "conveyor",
        "app.kubernetes.io/instance": deploy.workload.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "conveyor",
    }
    if version is not None:
        out["app.kubernetes.io/version"] = version
    return out


def metadata(
    deploy: Deployment,
    name: str,
    component: str,
    *,
    version: str | None = None,
    annotations: dict[str, str] | None = None,
    namespaced: bool = True,
) -> Manifest:
    """Object metadata: name, namespace, labels and annotations."""
    meta: Manifest = {"name": name}
    if namespaced:
        meta["namespace"] = deploy.workload.namespace
    meta["labels"] = labels(deploy, component, version)
    meta["annotations"] = {RENDERED_BY: f"conveyor {__version__}", **(annotations or {})}
    return meta


def restricted_container_security() -> Manifest:
    """A container securityContext that fits the Pod Security "restricted" profile."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security() -> Manifest:
    """The pod securityContext: non-root, numeric ids, RuntimeDefault seccomp, fsGroup.

    ``fsGroupChangePolicy: OnRootMismatch`` keeps the kubelet from walking a large EFS
    tree on every start where a driver applies fsGroup at all.
    """
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "fsGroup": RUN_AS_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def irsa_service_account(deploy: Deployment, name: str, component: str, role_arn: str) -> Manifest:
    """A ServiceAccount annotated for IAM Roles for Service Accounts (IRSA): pods running as
    it get ``role_arn``'s credentials through STS's regional endpoint."""
    annotations = {
        "eks.amazonaws.com/role-arn": role_arn,
        "eks.amazonaws.com/sts-regional-endpoints": "true",
    }
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(deploy, name, component, annotations=annotations),
    }


def cron_job(
    deploy: Deployment, name: str, component: str, schedule: str, job_spec: Manifest
) -> Manifest:
    """A CronJob of ``job_spec`` on ``schedule``: never two runs at once, a missed run
    started up to an hour late, the last success and three failures kept."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(deploy, name, component),
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": labels(deploy, component)}, "spec": job_spec},
        },
    }
