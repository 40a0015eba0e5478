"""What the k8s tests render: the tutorial's names, deployments for every flag combination,
and readers of the rendered objects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from kubernetes_validate.utils import latest_version

from conveyor.k8s import Deployment
from conveyor.k8s.sections import Aws, Efs, Keda, LedgerSecret, PullSecret, Workload

KEDA_CRDS = Path(__file__).resolve().parents[2] / "data" / "keda"
ACCOUNT = "123456789012"
REGION = "us-west-1"
QUEUE = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/eks-batch-job-queue"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:eks-batch-job-queue"
DLQ_ARN = QUEUE_ARN + "-dlq"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/conveyor:0.1.0"
FS = "fs-0ff53d77cb74d6474"
AP = "fsap-0123456789abcdef0"
OIDC = f"https://oidc.eks.{REGION}.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
#: The Secret holding the PostgreSQL ledger's URL: workers on EFS cannot run without one.
LEDGER_SECRET = "conveyor-ledger"
#: A ledger URL with a password, as a user would have it in their shell.
LEDGER_URL = "postgresql://conveyor:hunter2-s3cret@ledger.abc.us-west-1.rds.amazonaws.com/jobs"
#: The Kubernetes versions every manifest must validate against: EKS's oldest in standard
#: support when written, and the newest the installed schemas carry.
K8S_VERSIONS = ("1.33", latest_version())
POD_SECURITY_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def deployment(
    *,
    workload: dict[str, Any] | None = None,
    aws: dict[str, Any] | None = None,
    efs: dict[str, Any] | None = None,
    keda: dict[str, Any] | None = None,
    pull_secret: dict[str, Any] | None = None,
    ledger: dict[str, Any] | None = None,
) -> Deployment:
    """A Deployment with the tutorial's queue, an ECR image, an EFS file system and the
    ledger's Secret."""
    return Deployment(
        workload=replace(Workload(image=IMAGE), **(workload or {})),
        aws=replace(Aws(queue_url=QUEUE, oidc_issuer=OIDC), **(aws or {})),
        efs=replace(Efs(file_system_id=FS), **(efs or {})),
        keda=replace(Keda(), **(keda or {})),
        pull_secret=replace(PullSecret(), **(pull_secret or {})),
        ledger=replace(LedgerSecret(LEDGER_SECRET), **(ledger or {})),
    )


#: Flag combinations: each renders every part it can and must pass every check of the tests.
SCENARIOS: dict[str, Deployment] = {
    "csi": deployment(),
    "access-point": deployment(efs={"access_point_id": AP}),
    "nfs": deployment(efs={"mode": "nfs"}),
    "pull-secret": deployment(pull_secret={"name": "regcred"}),
    "metrics": deployment(workload={"metrics_port": 9100}),
    "parallelism-version": deployment(
        workload={"parallelism": 7, "version": "v3", "deadline_s": 3600, "grace_s": 100.5},
        keda={"role_arn": f"arn:aws:iam::{ACCOUNT}:role/keda-sqs"},
    ),
    "ledger-key": deployment(ledger={"name": "rds.ledger", "key": "dsn"}),
    "sample-no-efs": Deployment(workload=Workload(image=IMAGE)),
}


def parts_for(deploy: Deployment) -> list[str]:
    """Every part this deployment can render."""
    if deploy.queue is None:
        return ["job"]
    parts = ["service-account", "storage", "job", "queue-job", "keda"]
    if deploy.pull_secret.name is not None:
        parts.append("pull-secret")
    if deploy.ledger.name is not None:
        parts.append("ledger-prune")
    return parts


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod specs inside an object, wherever its kind keeps them."""
    kind = doc["kind"]
    if kind == "Job":
        yield doc["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "ScaledJob":
        yield doc["spec"]["jobTargetRef"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain env values (those from a Secret are left out)."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def secret_env_of(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The container's env values read from Secrets: name -> its secretKeyRef."""
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container.get("env", [])
        if "valueFrom" in item
    }


def is_refresher(doc: dict[str, Any]) -> bool:
    """The pull-secret refresher's CronJob (aws and kubectl, not conveyor)."""
    return doc["kind"] == "CronJob" and doc["metadata"]["name"].endswith("-ecr-refresh")


def worker_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [d for d in by_kind(docs, "Job") if "-worker-" in d["metadata"]["name"]]
    return job
