"""The pods: ServiceAccount, the one-off and work-queue Jobs, and KEDA's ScaledJob."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from conveyor import __version__
from conveyor.errors import ConfigError
from conveyor.k8s.config import (
    EFS_MOUNT,
    HEALTH_FILE,
    RUN_AS_UID,
    SAMPLE_INPUT,
    Aws,
    Deployment,
    Efs,
    check_dns_label,
)
from conveyor.settings import EXIT_BAD_INPUT, EXIT_CONFIG

Manifest = dict[str, Any]

CONTAINER = "conveyor"
#: The environment variable the ledger's URL reaches conveyor through.
LEDGER_URL_ENV = "CONVEYOR_LEDGER_URL"
#: Commands a one-off Job may run that never open the ledger.
LEDGER_FREE_COMMANDS = frozenset({"run", "health", "k8s", "--help", "--version"})
#: Annotation keys: what rendered an object and from which template (Step 12's versioning).
RENDERED_BY = "conveyor/rendered-by"
TEMPLATE_HASH = "conveyor/template-hash"


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


def _seconds(value: float) -> str:
    """An env value for seconds: ``25`` rather than ``25.0``."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _env(deploy: Deployment, *, worker: bool) -> list[Manifest]:
    """The container's environment: the worker's contract, or what a one-off command
    (`run`, `submit`, `status`) needs of the storage, the queue and the ledger.

    The ledger's URL comes from its Secret (``secretKeyRef``): it carries a password, and
    a manifest is read by anyone who can read the namespace's Jobs."""
    work = deploy.workload
    queue = deploy.require_queue("the worker") if worker else deploy.queue
    env: list[tuple[str, str]] = []
    if deploy.efs.mounted:
        env.append(("CONVEYOR_STORAGE", EFS_MOUNT))
    if queue is not None:
        env.append(("SQS_QUEUE_URL", queue.url))
    if worker:
        env += [
            ("CONVEYOR_GRACE_S", _seconds(work.grace_s)),
            ("CONVEYOR_VISIBILITY_TIMEOUT_S", str(work.visibility_timeout_s)),
            ("CONVEYOR_LOG_FORMAT", "json"),
            ("CONVEYOR_HEALTH_FILE", HEALTH_FILE),
        ]
        if work.metrics_port is not None:
            # The worker binds 127.0.0.1 by default; the scraper reaches the pod's IP.
            env += [
                ("CONVEYOR_METRICS_PORT", str(work.metrics_port)),
                ("CONVEYOR_METRICS_HOST", "0.0.0.0"),  # noqa: S104
            ]
    region = deploy.region
    if queue is not None and region is not None:
        env += [("AWS_REGION", region), ("AWS_DEFAULT_REGION", region)]
    items: list[Manifest] = [{"name": name, "value": value} for name, value in env]
    secret = deploy.ledger
    if secret.name is not None:
        items.append(
            {
                "name": LEDGER_URL_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
            }
        )
    return items


def _container(deploy: Deployment, *, worker: bool) -> Manifest:
    work = deploy.workload
    container: Manifest = {
        "name": CONTAINER,
        "image": deploy.image,
        "imagePullPolicy": "IfNotPresent",
    }
    if worker:
        container["args"] = ["worker", "--until-empty"]
    elif work.run_args:
        container["args"] = list(work.run_args)
    elif work.input is not None or deploy.efs.mounted:
        # On /efs the output outlives the pod; without a claim the image's own command
        # runs the sample and the output dies with the pod, as in the tutorial.
        source = f"{EFS_MOUNT}/{work.input}" if work.input else SAMPLE_INPUT
        output = work.output or f"outputs/{work.name}/{source.rsplit('/', 1)[-1]}"
        container["args"] = ["run", source, "--output", f"{EFS_MOUNT}/{output}"]
    env = _env(deploy, worker=worker)
    if env:
        container["env"] = env
    if worker and work.metrics_port is not None:
        container["ports"] = [
            {"name": "metrics", "containerPort": work.metrics_port, "protocol": "TCP"}
        ]
    res = work.resources
    container["resources"] = {
        "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
        "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit},
    }
    container["securityContext"] = restricted_container_security()
    if worker:
        container["livenessProbe"] = {
            "exec": {
                "command": [
                    "conveyor",
                    "health",
                    "--file",
                    HEALTH_FILE,
                    "--max-age-s",
                    str(deploy.health_max_age_s),
                ]
            },
            "initialDelaySeconds": 30,
            "periodSeconds": 30,
            "timeoutSeconds": 10,
            "failureThreshold": 3,
        }
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if deploy.efs.mounted:
        mounts.append({"name": "efs", "mountPath": EFS_MOUNT})
    container["volumeMounts"] = mounts
    return container


def pod_spec(deploy: Deployment, *, worker: bool) -> Manifest:
    """The pod spec shared by the Jobs and the ScaledJob.

    The pod does not mount the Kubernetes API token: conveyor never calls the API, and
    IRSA's webhook injects its own projected token (audience ``sts.amazonaws.com``) at
    /var/run/secrets/eks.amazonaws.com/serviceaccount, independent of that setting.
    """
    if not worker and deploy.workload.input is not None and not deploy.efs.mounted:
        raise ConfigError("--input names a file under /efs: give --efs-id or --claim")
    _require_ledger(deploy, worker=worker)
    spec: Manifest = {
        "serviceAccountName": deploy.workload.service_account,
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": deploy.termination_grace_s,
        "securityContext": restricted_pod_security(),
    }
    if deploy.pull_secret.name is not None:
        spec["imagePullSecrets"] = [{"name": deploy.pull_secret.name}]
    spec["containers"] = [_container(deploy, worker=worker)]
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {"sizeLimit": deploy.workload.tmp_size}}]
    if deploy.efs.mounted:
        volumes.append(
            {"name": "efs", "persistentVolumeClaim": {"claimName": deploy.efs.claim_name}}
        )
    spec["volumes"] = volumes
    return spec


def _require_ledger(deploy: Deployment, *, worker: bool) -> None:
    """Refuse pods that would keep the ledger in SQLite on the shared storage.

    Without a ledger URL, a conveyor that reads or writes the ledger keeps it beside the
    storage, on /efs: SQLite's locking is unsafe on NFS, and workers refuse to start there
    (exit 78). ``conveyor run`` (the one-off Job's default) never touches the ledger.

    Raises:
        ConfigError: such a pod, and no ``--ledger-secret``.
    """
    if deploy.ledger.name is not None or not deploy.efs.mounted:
        return
    args = deploy.workload.run_args
    if not worker and (not args or args[0] in LEDGER_FREE_COMMANDS):
        return
    what = "the worker pods" if worker else f"`conveyor {args[0]}`"
    raise ConfigError(
        f"{what} would keep the job ledger in SQLite on {EFS_MOUNT} (NFS, where it is "
        "unsafe): give --ledger-secret NAME[:KEY], a Secret holding the PostgreSQL ledger's "
        "URL (see docs/kubernetes.md)"
    )


def template_hash(*parts: object) -> str:
    """Eight hex digits of the SHA-256 of ``parts`` as canonical JSON.

    Jobs are immutable: a Job whose template changed needs a new name, and a name derived
    from the content changes exactly when the content does.
    """
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def pod_failure_policy(exit_codes: list[int]) -> Manifest:
    """Disruptions (eviction, preemption, node drain) do not count against backoffLimit;
    the configuration-error exit codes fail the Job at once; anything else counts."""
    return {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": sorted(exit_codes),
                },
            },
        ]
    }


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
    job_spec["template"] = _pod_template(deploy, component, version, spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            deploy, name, component, version=version, annotations={TEMPLATE_HASH: digest}
        ),
        "spec": job_spec,
    }


def _pod_template(deploy: Deployment, component: str, version: str, spec: Manifest) -> Manifest:
    meta: Manifest = {"labels": labels(deploy, component, version)}
    port = deploy.workload.metrics_port
    if port is not None and component != "run":
        meta["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
    return {"metadata": meta, "spec": spec}


def one_off_job(deploy: Deployment) -> Manifest:
    """Step 7 (and 12): one `conveyor run`, on the bundled sample or on a CSV under /efs."""
    return _job(deploy, "run", worker=False)


def queue_job(deploy: Deployment) -> Manifest:
    """Steps 10 and 12: a work-queue Job of ``parallelism`` workers draining the queue."""
    deploy.require_queue("the work-queue Job")
    _require_storage(deploy, "the work-queue Job")
    return _job(deploy, "worker", worker=True)


def _require_storage(deploy: Deployment, what: str) -> None:
    if not deploy.efs.mounted:
        raise ConfigError(
            f"{what} needs shared storage at {EFS_MOUNT}: give --efs-id (or --claim for an "
            "existing claim)"
        )


def service_account(deploy: Deployment) -> Manifest:
    """The workers' ServiceAccount, annotated for IAM Roles for Service Accounts (IRSA)."""
    role = deploy.role_arn(deploy.aws.role_arn, "worker")
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(
            deploy,
            deploy.workload.service_account,
            "worker",
            annotations={
                "eks.amazonaws.com/role-arn": role,
                "eks.amazonaws.com/sts-regional-endpoints": "true",
            },
        ),
        "automountServiceAccountToken": False,
    }


def keda_objects(deploy: Deployment) -> list[Manifest]:
    """A TriggerAuthentication and a ScaledJob starting worker Jobs from the queue depth.

    Each Job KEDA starts runs one ``worker --until-empty``. The trigger counts in-flight
    messages too (``scaleOnInFlight``), so jobs already working are not started again.
    """
    queue = deploy.require_queue("the KEDA ScaledJob")
    _require_storage(deploy, "the KEDA ScaledJob")
    work, keda = deploy.workload, deploy.keda
    auth_name = f"{work.name}-sqs"
    identity: Manifest = {"provider": "aws"}
    if keda.role_arn:
        identity["roleArn"] = keda.role_arn
    else:
        identity["identityOwner"] = "keda"
    auth = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": metadata(deploy, auth_name, "scaler"),
        "spec": {"podIdentity": identity},
    }
    spec = pod_spec(deploy, worker=True)
    version = work.version or template_hash("scaledjob", spec, work.backoff_limit)
    job_target: Manifest = {
        "parallelism": 1,
        "backoffLimit": work.backoff_limit,
        "podFailurePolicy": pod_failure_policy([EXIT_CONFIG]),
        "template": _pod_template(deploy, "worker", version, spec),
    }
    if work.deadline_s is not None:
        job_target["activeDeadlineSeconds"] = work.deadline_s
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": metadata(deploy, f"{work.name}-worker", "worker", version=version),
        "spec": {
            "jobTargetRef": job_target,
            "pollingInterval": keda.polling_interval_s,
            "minReplicaCount": 0,
            "maxReplicaCount": keda.max_replicas,
            "successfulJobsHistoryLimit": keda.successful_history,
            "failedJobsHistoryLimit": keda.failed_history,
            "rollout": {"strategy": "gradual"},
            "scalingStrategy": {"strategy": "default"},
            "triggers": [
                {
                    "type": "aws-sqs-queue",
                    "authenticationRef": {"name": auth_name},
                    "metadata": {
                        "queueURL": queue.url,
                        "queueLength": str(keda.queue_length),
                        "awsRegion": queue.region,
                        "scaleOnInFlight": "true",
                    },
                }
            ],
        },
    }
    return [auth, scaled]


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
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(deploy, name, "ledger-prune"),
        "spec": {
            "schedule": deploy.prune.schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(deploy, "ledger-prune")},
                "spec": job_spec,
            },
        },
    }
