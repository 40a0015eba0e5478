"""The options of `conveyor k8s`, in groups: each sets one field of the Deployment and has its
CONVEYOR_* environment twin and help; a command takes only the groups it reads."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, TypeVar

import click

from conveyor.cli.field_options import FieldOption, option_groups, values_by_target
from conveyor.k8s import (
    Aws,
    Deployment,
    Efs,
    Keda,
    LedgerSecret,
    Prune,
    PullSecret,
    Resources,
    Workload,
)

F = TypeVar("F", bound=Callable[..., Any])

#: The prefix of the environment twins of the options that only `conveyor k8s` has.
ENV_PREFIX = "CONVEYOR_K8S_"


def _option(
    flag: str, target: type[Any], field: str, help_text: str, *env: str, **extra: Any
) -> FieldOption:
    """An option setting ``target.field``; its env twins are ``env``, else
    ``CONVEYOR_K8S_<FLAG>``."""
    name = flag.removeprefix("--").replace("-", "_").upper()
    return FieldOption(flag, target, field, help_text, env or (ENV_PREFIX + name,), extra)


def _split_args(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(value or ""))
    except ValueError as exc:  # an unbalanced quote
        raise click.BadParameter(f"{exc} in {value!r}", ctx=ctx, param=param) from None


#: What the IAM policies are made of: the image, the names, the queues, the cluster.
IDENTITY = (
    _option(
        "--image",
        Workload,
        "image",
        "Container image (e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/conveyor:TAG).",
    ),
    _option(
        "--queue",
        Aws,
        "queue_url",
        "SQS queue URL the workers drain.",
        "CONVEYOR_QUEUE_URL",
        "SQS_QUEUE_URL",
    ),
    _option(
        "--dlq",
        Aws,
        "dlq_url",
        "Dead-letter queue URL [default: the queue's NAME-dlq].",
        ENV_PREFIX + "DLQ_URL",
    ),
    _option(
        "--region",
        Aws,
        "region",
        "AWS region [default: from the queue URL].",
        "CONVEYOR_REGION",
        "AWS_REGION",
    ),
    _option(
        "--account-id", Aws, "account_id", "AWS account id for ARNs [default: from the queue URL]."
    ),
    _option(
        "--oidc-issuer",
        Aws,
        "oidc_issuer",
        "The cluster's OIDC issuer URL (for the IRSA trust policy).",
    ),
    _option(
        "--kms-key-arn",
        Aws,
        "kms_key_arn",
        "Customer-managed KMS key of the queues (SSE-KMS), if any.",
    ),
    _option("--namespace", Workload, "namespace", "Kubernetes namespace."),
    _option("--name", Workload, "name", "Instance name: prefix of every object."),
    _option("--service-account", Workload, "service_account", "The workers' ServiceAccount."),
)

#: How the worker pods run.
PODS = (
    _option(
        "--role-arn",
        Aws,
        "role_arn",
        "IAM role of the workers' ServiceAccount [default: role/NAME-worker].",
    ),
    _option(
        "--job-version",
        Workload,
        "version",
        "Version in Job names and labels (e.g. v3) [default: a hash of the pod template].",
    ),
    _option(
        "--parallelism", Workload, "parallelism", "Worker pods of the work-queue Job.", type=int
    ),
    _option("--cpu-request", Resources, "cpu_request", "CPU request."),
    _option("--cpu-limit", Resources, "cpu_limit", "CPU limit."),
    _option("--memory-request", Resources, "memory_request", "Memory request."),
    _option("--memory-limit", Resources, "memory_limit", "Memory limit."),
    _option(
        "--grace-s",
        Workload,
        "grace_s",
        "The worker's grace on SIGTERM; the pod gets 15 s more.",
        "CONVEYOR_GRACE_S",
        type=float,
    ),
    _option(
        "--visibility-timeout-s",
        Workload,
        "visibility_timeout_s",
        "The workers' SQS visibility timeout.",
        "CONVEYOR_VISIBILITY_TIMEOUT_S",
        type=int,
    ),
    _option(
        "--metrics-port",
        Workload,
        "metrics_port",
        "Prometheus port of the workers (adds the port and scrape annotations).",
        "CONVEYOR_METRICS_PORT",
        type=int,
    ),
    _option(
        "--backoff-limit", Workload, "backoff_limit", "Failed pods before a Job fails.", type=int
    ),
    _option("--ttl-s", Workload, "ttl_s", "ttlSecondsAfterFinished of the Jobs.", type=int),
    _option(
        "--deadline-s",
        Workload,
        "deadline_s",
        "activeDeadlineSeconds of the Jobs [default: none].",
        type=int,
    ),
)

#: What the one-off Job runs.
ONE_OFF = (
    _option(
        "--input",
        Workload,
        "input",
        "One-off Job: CSV under /efs to run on [default: the bundled sample].",
    ),
    _option(
        "--output",
        Workload,
        "output",
        "One-off Job: output path under /efs [default: outputs/NAME/<input name>].",
    ),
    _option(
        "--run-args",
        Workload,
        "run_args",
        "One-off Job: another conveyor command to run instead (e.g. 'status').",
        callback=_split_args,
    ),
)

#: The EFS file system mounted at /efs.
STORAGE = (
    _option(
        "--efs-id",
        Efs,
        "file_system_id",
        "EFS file system id (fs-…): renders the PV/PVC and mounts it at /efs.",
    ),
    _option(
        "--access-point",
        Efs,
        "access_point_id",
        "EFS access point id (fsap-…), whose POSIX user owns the writes.",
    ),
    _option(
        "--efs-mode",
        Efs,
        "mode",
        "EFS CSI driver, or the tutorial's plain NFS volume.",
        type=click.Choice(["csi", "nfs"]),
    ),
    _option(
        "--efs-server",
        Efs,
        "server",
        "NFS mode: the file system's DNS name [default: from --efs-id and the region].",
    ),
    _option(
        "--claim",
        Efs,
        "claim",
        "PersistentVolumeClaim name [default: conveyor-efs]; alone, mounts an existing claim.",
    ),
    _option("--storage-class", Efs, "storage_class", "storageClassName of the PV and PVC."),
    _option(
        "--storage-size",
        Efs,
        "size",
        "Capacity of the PV (required by Kubernetes, ignored by EFS).",
    ),
)

#: The KEDA ScaledJob.
KEDA = (
    _option(
        "--keda-max-replicas", Keda, "max_replicas", "KEDA: most worker Jobs at once.", type=int
    ),
    _option(
        "--keda-queue-length", Keda, "queue_length", "KEDA: messages per worker Job.", type=int
    ),
    _option(
        "--keda-polling-interval-s",
        Keda,
        "polling_interval_s",
        "KEDA: seconds between queue checks.",
        type=int,
    ),
    _option(
        "--keda-role-arn",
        Keda,
        "role_arn",
        "KEDA: role to read the queue depth with [default: KEDA operator's own].",
    ),
)

#: The job ledger's Secret and the CronJob pruning the ledger.
LEDGER = (
    _option(
        "--ledger-secret",
        LedgerSecret,
        "name",
        "Secret holding the job ledger's postgresql:// URL, as NAME or NAME:KEY [default key: "
        "url]: every pod gets CONVEYOR_LEDGER_URL from it (the URL never appears in a "
        "manifest). Needed with EFS storage, where the embedded SQLite ledger is unsafe.",
        "CONVEYOR_LEDGER_SECRET",
        metavar="NAME[:KEY]",
    ),
    _option("--prune-schedule", Prune, "schedule", "ledger-prune CronJob: when it runs (cron)."),
    _option(
        "--prune-older-than",
        Prune,
        "older_than",
        "ledger-prune CronJob: delete jobs finished longer ago than this (45m, 12h, 30d).",
        "CONVEYOR_LEDGER_RETENTION",
    ),
)

#: The ECR pull secret and its refresher.
PULL_SECRET = (
    _option(
        "--pull-secret",
        PullSecret,
        "name",
        "Image pull secret to use and keep refreshed (not needed on EKS with ECR).",
    ),
    _option(
        "--pull-secret-schedule",
        PullSecret,
        "schedule",
        "Cron schedule of the refresher (ECR tokens last 12 h).",
    ),
    _option(
        "--pull-secret-role-arn",
        PullSecret,
        "role_arn",
        "IAM role of the refresher [default: role/NAME-ecr-refresh].",
    ),
)

#: Every group, by its --help title, in the order --help lists them.
GROUPS: dict[str, tuple[FieldOption, ...]] = {
    "Names and AWS": IDENTITY,
    "Worker pods": PODS,
    "One-off Job": ONE_OFF,
    "EFS storage": STORAGE,
    "KEDA": KEDA,
    "Job ledger": LEDGER,
    "Pull secret": PULL_SECRET,
}


def k8s_options(*titles: str) -> Callable[[F], F]:
    """Apply the options of the groups named ``titles`` (keys of ``GROUPS``), in this order."""
    return option_groups(GROUPS, *titles)


def build_deployment(opts: dict[str, Any]) -> Deployment:
    """The Deployment that the options a command took describe (``opts``, by argument
    name); every field whose option it does not take keeps its default.

    Raises:
        ConfigError: a malformed ``--ledger-secret`` (NAME[:KEY], parsed whole).
    """
    values = values_by_target([o for group in GROUPS.values() for o in group], opts)

    def part(target: type[Any]) -> dict[str, Any]:
        return values.get(target, {})

    return Deployment(
        workload=Workload(resources=Resources(**part(Resources)), **part(Workload)),
        aws=Aws(**part(Aws)),
        efs=Efs(**part(Efs)),
        keda=Keda(**part(Keda)),
        pull_secret=PullSecret(**part(PullSecret)),
        ledger=LedgerSecret.parse(part(LedgerSecret).get("name")),
        prune=Prune(**part(Prune)),
    )
