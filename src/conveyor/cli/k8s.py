"""``conveyor k8s``: render the Kubernetes manifests and IAM policies for Amazon EKS."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.k8s import (
    PARTS,
    POLICIES,
    Aws,
    Deployment,
    Efs,
    Keda,
    LedgerSecret,
    Prune,
    PullSecret,
    Resources,
    Workload,
    default_parts,
    render,
    render_policies,
    render_policy,
    to_yaml,
    write_dir,
)
from conveyor.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

_K = "CONVEYOR_K8S_"


def _option(flag: str, env: str | list[str], help_text: str, **extra: Any) -> Callable[[F], F]:
    """A click option with its env twin: ``CONVEYOR_K8S_<env>``, or the names given."""
    envvar = env if isinstance(env, list) else _K + env
    dest = extra.pop("dest", None)
    params = [flag, dest] if dest else [flag]
    return click.option(*params, envvar=envvar, show_envvar=True, help=help_text, **extra)


#: Every deployment option; each has its env twin, shown in --help.
_OPTIONS: list[Callable[[F], F]] = [
    _option(
        "--image",
        "IMAGE",
        "Container image (e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/conveyor:TAG).",
    ),
    _option(
        "--queue",
        ["CONVEYOR_QUEUE_URL", "SQS_QUEUE_URL"],
        "SQS queue URL the workers drain.",
        dest="queue_url",
    ),
    _option(
        "--dlq", "DLQ_URL", "Dead-letter queue URL [default: the queue's NAME-dlq].", dest="dlq_url"
    ),
    _option(
        "--region", ["CONVEYOR_REGION", "AWS_REGION"], "AWS region [default: from the queue URL]."
    ),
    _option("--account-id", "ACCOUNT_ID", "AWS account id for ARNs [default: from the queue URL]."),
    _option(
        "--role-arn",
        "ROLE_ARN",
        "IAM role of the workers' ServiceAccount [default: role/NAME-worker].",
    ),
    _option(
        "--oidc-issuer", "OIDC_ISSUER", "The cluster's OIDC issuer URL (for the IRSA trust policy)."
    ),
    _option(
        "--kms-key-arn", "KMS_KEY_ARN", "Customer-managed KMS key of the queues (SSE-KMS), if any."
    ),
    _option(
        "--namespace", "NAMESPACE", "Kubernetes namespace.", default="default", show_default=True
    ),
    _option(
        "--name",
        "NAME",
        "Instance name: prefix of every object.",
        default="conveyor",
        show_default=True,
    ),
    _option(
        "--job-version",
        "JOB_VERSION",
        "Version in Job names and labels (e.g. v3) [default: a hash of the pod template].",
    ),
    _option(
        "--service-account",
        "SERVICE_ACCOUNT",
        "The workers' ServiceAccount.",
        default="conveyor",
        show_default=True,
    ),
    _option(
        "--parallelism",
        "PARALLELISM",
        "Worker pods of the work-queue Job.",
        type=int,
        default=2,
        show_default=True,
    ),
    _option(
        "--cpu-request",
        "CPU_REQUEST",
        "CPU request.",
        default=Resources.cpu_request,
        show_default=True,
    ),
    _option(
        "--cpu-limit", "CPU_LIMIT", "CPU limit.", default=Resources.cpu_limit, show_default=True
    ),
    _option(
        "--memory-request",
        "MEMORY_REQUEST",
        "Memory request.",
        default=Resources.memory_request,
        show_default=True,
    ),
    _option(
        "--memory-limit",
        "MEMORY_LIMIT",
        "Memory limit.",
        default=Resources.memory_limit,
        show_default=True,
    ),
    _option(
        "--grace-s",
        ["CONVEYOR_GRACE_S"],
        "The worker's grace on SIGTERM; the pod gets 15 s more.",
        type=float,
        default=Settings.grace_s,
        show_default=True,
    ),
    _option(
        "--visibility-timeout-s",
        ["CONVEYOR_VISIBILITY_TIMEOUT_S"],
        "The workers' SQS visibility timeout.",
        type=int,
        default=Settings.visibility_timeout_s,
        show_default=True,
    ),
    _option(
        "--metrics-port",
        ["CONVEYOR_METRICS_PORT"],
        "Prometheus port of the workers (adds the port and scrape annotations).",
        type=int,
    ),
    _option(
        "--backoff-limit",
        "BACKOFF_LIMIT",
        "Failed pods before a Job fails.",
        type=int,
        default=6,
        show_default=True,
    ),
    _option(
        "--ttl-s",
        "TTL_S",
        "ttlSecondsAfterFinished of the Jobs.",
        type=int,
        default=86400,
        show_default=True,
    ),
    _option(
        "--deadline-s", "DEADLINE_S", "activeDeadlineSeconds of the Jobs [default: none].", type=int
    ),
    _option(
        "--input",
        "INPUT",
        "One-off Job: CSV under /efs to run on [default: the bundled sample].",
        dest="input_path",
    ),
    _option(
        "--output",
        "OUTPUT",
        "One-off Job: output path under /efs [default: outputs/NAME/<input name>].",
        dest="output_path",
    ),
    _option(
        "--run-args",
        "RUN_ARGS",
        "One-off Job: another conveyor command to run instead (e.g. 'status').",
    ),
    _option(
        "--efs-id", "EFS_ID", "EFS file system id (fs-…): renders the PV/PVC and mounts it at /efs."
    ),
    _option(
        "--access-point",
        "ACCESS_POINT",
        "EFS access point id (fsap-…), whose POSIX user owns the writes.",
    ),
    _option(
        "--efs-mode",
        "EFS_MODE",
        "EFS CSI driver, or the tutorial's plain NFS volume.",
        type=click.Choice(["csi", "nfs"]),
        default="csi",
        show_default=True,
    ),
    _option(
        "--efs-server",
        "EFS_SERVER",
        "NFS mode: the file system's DNS name [default: from --efs-id and the region].",
    ),
    _option(
        "--claim",
        "CLAIM",
        "PersistentVolumeClaim name [default: conveyor-efs]; alone, mounts an existing claim.",
    ),
    _option(
        "--storage-class",
        "STORAGE_CLASS",
        "storageClassName of the PV and PVC.",
        default="efs-sc",
        show_default=True,
    ),
    _option(
        "--storage-size",
        "STORAGE_SIZE",
        "Capacity of the PV (required by Kubernetes, ignored by EFS).",
        default="5Gi",
        show_default=True,
    ),
    _option(
        "--keda-max-replicas",
        "KEDA_MAX_REPLICAS",
        "KEDA: most worker Jobs at once.",
        type=int,
        default=10,
        show_default=True,
    ),
    _option(
        "--keda-queue-length",
        "KEDA_QUEUE_LENGTH",
        "KEDA: messages per worker Job.",
        type=int,
        default=5,
        show_default=True,
    ),
    _option(
        "--keda-polling-interval-s",
        "KEDA_POLLING_INTERVAL_S",
        "KEDA: seconds between queue checks.",
        type=int,
        default=30,
        show_default=True,
    ),
    _option(
        "--keda-role-arn",
        "KEDA_ROLE_ARN",
        "KEDA: role to read the queue depth with [default: KEDA operator's own].",
    ),
    _option(
        "--ledger-secret",
        ["CONVEYOR_LEDGER_SECRET"],
        "Secret holding the job ledger's postgresql:// URL, as NAME or NAME:KEY [default key: "
        "url]: every pod gets CONVEYOR_LEDGER_URL from it (the URL never appears in a "
        "manifest). Needed with EFS storage, where the embedded SQLite ledger is unsafe.",
        metavar="NAME[:KEY]",
    ),
    _option(
        "--prune-schedule",
        "PRUNE_SCHEDULE",
        "ledger-prune CronJob: when it runs (cron).",
        default=Prune.schedule,
        show_default=True,
    ),
    _option(
        "--prune-older-than",
        ["CONVEYOR_LEDGER_RETENTION"],
        "ledger-prune CronJob: delete jobs finished longer ago than this (45m, 12h, 30d).",
        default=Prune.older_than,
        show_default=True,
    ),
    _option(
        "--pull-secret",
        "PULL_SECRET",
        "Image pull secret to use and keep refreshed (not needed on EKS with ECR).",
    ),
    _option(
        "--pull-secret-schedule",
        "PULL_SECRET_SCHEDULE",
        "Cron schedule of the refresher (ECR tokens last 12 h).",
        default=PullSecret.schedule,
        show_default=True,
    ),
    _option(
        "--pull-secret-role-arn",
        "PULL_SECRET_ROLE_ARN",
        "IAM role of the refresher [default: role/NAME-ecr-refresh].",
    ),
]


def deployment_options(func: F) -> F:
    """Apply every deployment option to a command."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def build_deployment(opts: dict[str, Any]) -> Deployment:
    """The Deployment described by the options of :func:`deployment_options`."""
    return Deployment(
        workload=Workload(
            image=opts["image"],
            name=opts["name"],
            version=opts["job_version"],
            namespace=opts["namespace"],
            service_account=opts["service_account"],
            parallelism=opts["parallelism"],
            resources=Resources(
                opts["cpu_request"], opts["memory_request"], opts["cpu_limit"], opts["memory_limit"]
            ),
            grace_s=opts["grace_s"],
            visibility_timeout_s=opts["visibility_timeout_s"],
            metrics_port=opts["metrics_port"],
            backoff_limit=opts["backoff_limit"],
            ttl_s=opts["ttl_s"],
            deadline_s=opts["deadline_s"],
            input=opts["input_path"],
            output=opts["output_path"],
            run_args=tuple(shlex.split(opts["run_args"] or "")),
        ),
        aws=Aws(
            queue_url=opts["queue_url"],
            dlq_url=opts["dlq_url"],
            region=opts["region"],
            account_id=opts["account_id"],
            role_arn=opts["role_arn"],
            oidc_issuer=opts["oidc_issuer"],
            kms_key_arn=opts["kms_key_arn"],
        ),
        efs=Efs(
            file_system_id=opts["efs_id"],
            access_point_id=opts["access_point"],
            mode=opts["efs_mode"],
            server=opts["efs_server"],
            claim=opts["claim"],
            storage_class=opts["storage_class"],
            size=opts["storage_size"],
        ),
        keda=Keda(
            max_replicas=opts["keda_max_replicas"],
            queue_length=opts["keda_queue_length"],
            polling_interval_s=opts["keda_polling_interval_s"],
            role_arn=opts["keda_role_arn"],
        ),
        pull_secret=PullSecret(
            name=opts["pull_secret"],
            schedule=opts["pull_secret_schedule"],
            role_arn=opts["pull_secret_role_arn"],
        ),
        ledger=LedgerSecret.parse(opts["ledger_secret"]),
        prune=Prune(schedule=opts["prune_schedule"], older_than=opts["prune_older_than"]),
    )


@click.group()
def k8s() -> None:
    """Kubernetes (Amazon EKS) manifests and IAM policies for conveyor."""


@k8s.command("render")
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(PARTS),
    envvar=_K + "ONLY",
    show_envvar=True,
    help="Render only these parts (repeatable) [default: what the options describe: "
    "service-account, pull-secret, storage, and queue-job with --queue else job; keda, "
    "ledger-prune and iam on request].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=_K + "OUT",
    show_envvar=True,
    default=None,
    help="Write one file per object (and iam/*.json) into DIR instead of stdout.",
)
@deployment_options
def render_command(only: tuple[str, ...], out: Path | None, **opts: Any) -> None:
    """Print the manifests as multi-document YAML: pipe them to `kubectl apply -f -`.

    The IAM policies (--only iam) are JSON documents for `aws iam create-policy`: printed
    as one JSON object by name, or written to DIR/iam/NAME.json with --out.
    """
    deploy = build_deployment(opts)
    parts = list(only) or default_parts(deploy)
    with_iam = "iam" in parts or (out is not None and not only)
    policies = render_policies(deploy) if with_iam else {}
    docs = render(deploy, [part for part in parts if part != "iam"])
    if out is not None:
        for path in write_dir(out, docs, policies):
            click.echo(str(path), err=True)
        return
    if "iam" in parts:
        if docs:
            raise click.UsageError(
                "--only iam prints JSON, not YAML manifests: render it alone, or use --out DIR"
            )
        click.echo(json.dumps(policies, indent=2))
        return
    click.echo(to_yaml(docs), nl=False)


@k8s.command("policy")
@click.argument("policy_name", metavar="NAME", type=click.Choice(POLICIES))
@deployment_options
def policy_command(policy_name: str, **opts: Any) -> None:
    """Print one IAM policy document as JSON, for `aws iam create-policy`.

    NAME: worker, submitter, admin, scaler (KEDA), trust (IRSA trust of the workers'
    role), ecr-refresh and ecr-refresh-trust (the pull-secret refresher's role).
    """
    deploy = build_deployment(opts)
    deploy.check()
    click.echo(json.dumps(render_policy(deploy, policy_name), indent=2))
