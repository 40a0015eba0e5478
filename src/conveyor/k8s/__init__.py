"""Kubernetes manifests and IAM policies for running conveyor on Amazon EKS.

Plain dicts, one function per object family; `conveyor k8s render` prints them as YAML.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import yaml

from conveyor.errors import ConfigError
from conveyor.k8s.config import RUN_AS_UID, Deployment
from conveyor.k8s.efs import storage_objects
from conveyor.k8s.iam import POLICIES, Policy, render_policy
from conveyor.k8s.keda import keda_objects
from conveyor.k8s.objects import Manifest
from conveyor.k8s.pullsecret import pull_secret_objects
from conveyor.k8s.sections import (
    Aws,
    Efs,
    Keda,
    LedgerSecret,
    Prune,
    PullSecret,
    Resources,
    Workload,
)
from conveyor.k8s.workloads import one_off_job, prune_cron_job, queue_job, service_account

__all__ = [
    "PARTS",
    "POLICIES",
    "RUN_AS_UID",
    "Aws",
    "Deployment",
    "Efs",
    "Keda",
    "LedgerSecret",
    "Manifest",
    "Prune",
    "PullSecret",
    "Resources",
    "Workload",
    "default_parts",
    "render",
    "render_policies",
    "render_policy",
    "to_yaml",
    "write_dir",
]

_RENDERERS: dict[str, Callable[[Deployment], list[Manifest]]] = {
    "service-account": lambda d: [service_account(d)],
    "pull-secret": pull_secret_objects,
    "storage": storage_objects,
    "job": lambda d: [one_off_job(d)],
    "queue-job": lambda d: [queue_job(d)],
    "keda": keda_objects,
    "ledger-prune": lambda d: [prune_cron_job(d)],
}
#: What ``--only`` accepts, in the order objects are applied (``iam`` is JSON, not YAML).
PARTS = (*_RENDERERS, "iam")


def default_parts(deploy: Deployment) -> list[str]:
    """The parts rendered when none are asked for: what this configuration can run.

    The ServiceAccount and the work-queue Job when a queue is given (else the one-off
    Job), the storage when a file system is, the refresher when a pull secret is. KEDA,
    the ledger-prune CronJob and the IAM policies only on request.
    """
    parts: list[str] = []
    if deploy.queue is not None:
        parts.append("service-account")
    if deploy.pull_secret.name is not None:
        parts.append("pull-secret")
    if deploy.efs.file_system_id or deploy.efs.server:
        parts.append("storage")
    parts.append("queue-job" if deploy.queue is not None else "job")
    return parts


def render(deploy: Deployment, parts: Iterable[str]) -> list[Manifest]:
    """The Kubernetes objects of ``parts``, in apply order (``iam`` is skipped here).

    Raises:
        ConfigError: an unknown part, or a value a part needs is missing or malformed.
    """
    deploy.check()
    wanted = set(parts)
    unknown = wanted - set(PARTS)
    if unknown:
        raise ConfigError(f"unknown part {sorted(unknown)[0]!r}: one of {', '.join(PARTS)}")
    docs: list[Manifest] = []
    for part, renderer in _RENDERERS.items():
        if part in wanted:
            docs.extend(renderer(deploy))
    return docs


def render_policies(deploy: Deployment) -> dict[str, Policy]:
    """Every IAM policy this configuration can produce, by name.

    The queue policies need ``--queue``; ``trust`` needs ``--oidc-issuer``; the refresher's
    need ``--pull-secret`` and an ECR image. Policies that cannot be made are left out.
    """
    deploy.check()
    wanted: list[str] = []
    if deploy.queue is not None:
        wanted += ["worker", "submitter", "admin", "scaler"]
    if deploy.aws.oidc_issuer:
        wanted.append("trust")
    if deploy.pull_secret.name is not None:
        wanted.append("ecr-refresh")
        if deploy.aws.oidc_issuer:
            wanted.append("ecr-refresh-trust")
    return {name: render_policy(deploy, name) for name in wanted}


class _Dumper(yaml.SafeDumper):
    """Block-style YAML with indented lists, as kubectl users expect."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Multi-line strings (the refresher's script) as readable literal blocks."""
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(docs: Sequence[Manifest]) -> str:
    """Multi-document YAML, one document per object, keys in the order rendered."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def file_name(index: int, doc: Manifest) -> str:
    """``NN-kind-name.yaml``: `kubectl apply -f DIR` applies files in name order."""
    return f"{index:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"


def write_dir(out: Path, docs: Sequence[Manifest], policies: dict[str, Policy]) -> list[Path]:
    """Write one YAML file per object and ``iam/<name>.json`` per policy; return the paths.

    The policies go in a subdirectory so that `kubectl apply -f DIR` never sees them.
    """
    written: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    for index, doc in enumerate(docs, start=1):
        path = out / file_name(index, doc)
        path.write_text(to_yaml([doc]), encoding="utf-8")
        written.append(path)
    if policies:
        (out / "iam").mkdir(exist_ok=True)
    for name, policy in policies.items():
        path = out / "iam" / f"{name}.json"
        path.write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
