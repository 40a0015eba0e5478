"""The Jobs: the one-off Job, the work-queue Job, the ledger-prune CronJob, and the workers'
ServiceAccount; Job names carry a hash of their template (Jobs are immutable)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from conveyor.errors import ConfigError
from conveyor.k8s.config import EFS_MOUNT, Deployment
from conveyor.k8s.names import check_dns_label
from conveyor.k8s.objects import Manifest, cron_job, irsa_service_account, labels, metadata
from conveyor.k8s.pods import pod_failure_policy, pod_spec, pod_template
from conveyor.k8s.sections import Aws, Efs
from conveyor.settings import EXIT_BAD_INPUT, EXIT_CONFIG

#: Annotation key: the hash of the template a Job was rendered from (Step 12's versioning).
TEMPLATE_HASH = "conveyor/template-hash"


def template_hash(*parts: object) -> str:
    """Eight hex digits of the SHA-256 of ``parts`` as canonical JSON.

    Jobs are immutable: a Job whose template changed needs a new name, and a name derived
    from the content changes exactly when the content does.
    """
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _job(deploy: Deployment, component: str, *, worker: bool) -> Manifest:
    work = deploy.workload
    spec = pod_spec(deploy, worker=worker)
    digest = template_hash(component, spec, work.parallelism, work.backoff_limit)
    version = work.version or digest
    name = check_dns_label(f"{work.name}-{component}-{version}".lower(), "the Job name")
    job_spec: Manifest = {}
    if worker:
        # A work queue: N pods, no completions; the Job succeeds once one pod exits 0
        # (the queue drained) and the others have finished.
        job_spec["parallelism"] = work.parallelism
    job_spec["backoffLimit"] = work.backoff_limit
    job_spec["podFailurePolicy"] = pod_failure_policy(
        [EXIT_CONFIG] if worker else [EXIT_BAD_INPUT, EXIT_CONFIG]
    )
    if work.ttl_s is not None:
        job_spec["ttlSecondsAfterFinished"] = work.ttl_s
    if work.deadline_s is not None:
        job_spec["activeDeadlineSeconds"] = work.deadline_s
    job_spec["template"] = pod_template(deploy, component, version, spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            deploy, name, component, version=version, annotations={TEMPLATE_HASH: digest}
        ),
        "spec": job_spec,
    }


def one_off_job(deploy: Deployment) -> Manifest:
    """Step 7 (and 12): one `conveyor run`, on the bundled sample or on a CSV under /efs."""
    return _job(deploy, "run", worker=False)


def queue_job(deploy: Deployment) -> Manifest:
    """Steps 10 and 12: a work-queue Job of ``parallelism`` workers draining the queue."""
    deploy.require_queue("the work-queue Job")
    require_storage(deploy, "the work-queue Job")
    return _job(deploy, "worker", worker=True)


def require_storage(deploy: Deployment, what: str) -> None:
    """Refuse ``what`` (worker pods) without shared storage: their outputs would die with them."""
    if not deploy.efs.mounted:
        raise ConfigError(
            f"{what} needs shared storage at {EFS_MOUNT}: give --efs-id (or --claim for an "
            "existing claim)"
        )


def service_account(deploy: Deployment) -> Manifest:
    """The workers' ServiceAccount, annotated for IAM Roles for Service Accounts (IRSA)."""
    role = deploy.role_arn(deploy.aws.role_arn, "worker")
    account = irsa_service_account(deploy, deploy.workload.service_account, "worker", role)
    account["automountServiceAccountToken"] = False
    return account


def prune_cron_job(deploy: Deployment) -> Manifest:
    """A CronJob running ``conveyor ledger prune --older-than AGE`` on a schedule: finished
    jobs older than that leave the ledger with their history, a bounded batch per
    transaction, while workers keep writing.

    Its pod reaches only the ledger (no queue, no storage), through the ledger's Secret.

    Raises:
        ConfigError: no ``--ledger-secret`` (a pod's own SQLite ledger would be empty).
    """
    if deploy.ledger.name is None:
        raise ConfigError(
            "the ledger-prune CronJob prunes the PostgreSQL ledger: give --ledger-secret NAME[:KEY]"
        )
    work = deploy.workload
    args = ("ledger", "prune", "--older-than", deploy.prune.older_than)
    alone = replace(deploy, aws=Aws(), efs=Efs(), workload=replace(work, run_args=args))
    spec = pod_spec(alone, worker=False)
    name = check_dns_label(f"{work.name}-ledger-prune", "the CronJob name")
    job_spec: Manifest = {
        "backoffLimit": 2,
        "podFailurePolicy": pod_failure_policy([EXIT_CONFIG]),
        "template": {"metadata": {"labels": labels(deploy, "ledger-prune")}, "spec": spec},
    }
    if work.ttl_s is not None:
        job_spec["ttlSecondsAfterFinished"] = work.ttl_s
    return cron_job(deploy, name, "ledger-prune", deploy.prune.schedule, job_spec)
