"""The conveyor pod: its container (args, env, probe, resources, mounts) and volumes, shared
by the Jobs, the ScaledJob and the ledger-prune CronJob."""

from __future__ import annotations

from conveyor.errors import ConfigError
from conveyor.k8s.config import EFS_MOUNT, HEALTH_FILE, SAMPLE_INPUT, Deployment
from conveyor.k8s.objects import (
    Manifest,
    labels,
    restricted_container_security,
    restricted_pod_security,
)

CONTAINER = "conveyor"
#: The environment variable the ledger's URL reaches conveyor through.
LEDGER_URL_ENV = "CONVEYOR_LEDGER_URL"
#: Commands a one-off Job may run that never open the ledger.
LEDGER_FREE_COMMANDS = frozenset({"run", "health", "k8s", "--help", "--version"})


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


def pod_template(deploy: Deployment, component: str, version: str, spec: Manifest) -> Manifest:
    """The pod template of a Job: labels, and scrape annotations when metrics are on."""
    meta: Manifest = {"labels": labels(deploy, component, version)}
    port = deploy.workload.metrics_port
    if port is not None and component != "run":
        meta["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
    return {"metadata": meta, "spec": spec}
