"""The options of `conveyor k8s`, in groups: each sets one field of the Deployment, has its
CONVEYOR_* environment twin and help, and a command takes only the groups it reads."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

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

#: The Deployment's sections an option can set (``ledger`` is parsed whole, NAME[:KEY]).
_SECTIONS: dict[str, type[Any]] = {
    "workload": Workload,
    "resources": Resources,
    "aws": Aws,
    "efs": Efs,
    "keda": Keda,
    "pull_secret": PullSecret,
    "prune": Prune,
}


@dataclass(frozen=True)
class K8sOption:
    """One option: its flag, the Deployment field it sets, its env twins and help.

    Attributes:
        flag: the flag, ``--image``; the command gets it as the argument :attr:`name`.
        section, field: what it sets: ``Deployment.<section>.<field>``; the default is
            that field's own.
        help: the --help text.
        env: its environment variables [default: ``CONVEYOR_K8S_<FLAG>``].
        extra: click keywords (``type``, ``metavar``...).
    """

    flag: str
    section: str
    field: str
    help: str
    env: tuple[str, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """The command's argument: the flag with ``_`` for ``-``."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def envvar(self) -> list[str]:
        """The environment variables, the first one set winning."""
        return list(self.env) or [ENV_PREFIX + self.name.upper()]

    @property
    def default(self) -> Any:
        """The default of the field it sets (None: none, or a section without defaults)."""
        section = _SECTIONS.get(self.section)
        if section is None:
            return None
        spec = {f.name: f for f in dataclasses.fields(section)}[self.field]
        return None if spec.default in (dataclasses.MISSING, ()) else spec.default

    def decorator(self, group: str) -> Callable[[F], F]:
        """The click option, listed under ``group`` in --help."""
        kwargs: dict[str, Any] = {"help": self.help, **self.extra}
        if self.default is not None:
            kwargs.update(default=self.default, show_default=True)
        return click.option(
            self.flag,
            self.name,
            cls=GroupedOption,
            group=group,
            envvar=self.envvar,
            show_envvar=True,
            **kwargs,
        )


class GroupedOption(click.Option):
    """An option that --help lists under the title of its group."""

    def __init__(self, *args: Any, group: str = "Options", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    """A command whose --help lists its options group by group."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                groups.setdefault(getattr(param, "group", "Options"), []).append(record)
        for title, rows in groups.items():
            if not rows:
                continue
            with formatter.section(title):
                formatter.write_dl(rows)


def _split_args(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(shlex.split(value or ""))


#: What the IAM policies are made of: the image, the names, the queues, the cluster.
IDENTITY = (
    K8sOption(
        "--image",
        "workload",
        "image",
        "Container image (e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/conveyor:TAG).",
    ),
    K8sOption(
        "--queue",
        "aws",
        "queue_url",
        "SQS queue URL the workers drain.",
        env=("CONVEYOR_QUEUE_URL", "SQS_QUEUE_URL"),
    ),
    K8sOption(
        "--dlq",
        "aws",
        "dlq_url",
        "Dead-letter queue URL [default: the queue's NAME-dlq].",
        env=(ENV_PREFIX + "DLQ_URL",),
    ),
    K8sOption(
        "--region",
        "aws",
        "region",
        "AWS region [default: from the queue URL].",
        env=("CONVEYOR_REGION", "AWS_REGION"),
    ),
    K8sOption(
        "--account-id",
        "aws",
        "account_id",
        "AWS account id for ARNs [default: from the queue URL].",
    ),
    K8sOption(
        "--oidc-issuer",
        "aws",
        "oidc_issuer",
        "The cluster's OIDC issuer URL (for the IRSA trust policy).",
    ),
    K8sOption(
        "--kms-key-arn",
        "aws",
        "kms_key_arn",
        "Customer-managed KMS key of the queues (SSE-KMS), if any.",
    ),
    K8sOption("--namespace", "workload", "namespace", "Kubernetes namespace."),
    K8sOption("--name", "workload", "name", "Instance name: prefix of every object."),
    K8sOption("--service-account", "workload", "service_account", "The workers' ServiceAccount."),
)

#: How the worker pods run.
PODS = (
    K8sOption(
        "--role-arn",
        "aws",
        "role_arn",
        "IAM role of the workers' ServiceAccount [default: role/NAME-worker].",
    ),
    K8sOption(
        "--job-version",
        "workload",
        "version",
        "Version in Job names and labels (e.g. v3) [default: a hash of the pod template].",
    ),
    K8sOption(
        "--parallelism",
        "workload",
        "parallelism",
        "Worker pods of the work-queue Job.",
        extra={"type": int},
    ),
    K8sOption("--cpu-request", "resources", "cpu_request", "CPU request."),
    K8sOption("--cpu-limit", "resources", "cpu_limit", "CPU limit."),
    K8sOption("--memory-request", "resources", "memory_request", "Memory request."),
    K8sOption("--memory-limit", "resources", "memory_limit", "Memory limit."),
    K8sOption(
        "--grace-s",
        "workload",
        "grace_s",
        "The worker's grace on SIGTERM; the pod gets 15 s more.",
        env=("CONVEYOR_GRACE_S",),
        extra={"type": float},
    ),
    K8sOption(
        "--visibility-timeout-s",
        "workload",
        "visibility_timeout_s",
        "The workers' SQS visibility timeout.",
        env=("CONVEYOR_VISIBILITY_TIMEOUT_S",),
        extra={"type": int},
    ),
    K8sOption(
        "--metrics-port",
        "workload",
        "metrics_port",
        "Prometheus port of the workers (adds the port and scrape annotations).",
        env=("CONVEYOR_METRICS_PORT",),
        extra={"type": int},
    ),
    K8sOption(
        "--backoff-limit",
        "workload",
        "backoff_limit",
        "Failed pods before a Job fails.",
        extra={"type": int},
    ),
    K8sOption(
        "--ttl-s", "workload", "ttl_s", "ttlSecondsAfterFinished of the Jobs.", extra={"type": int}
    ),
    K8sOption(
        "--deadline-s",
        "workload",
        "deadline_s",
        "activeDeadlineSeconds of the Jobs [default: none].",
        extra={"type": int},
    ),
)

#: What the one-off Job runs.
ONE_OFF = (
    K8sOption(
        "--input",
        "workload",
        "input",
        "One-off Job: CSV under /efs to run on [default: the bundled sample].",
    ),
    K8sOption(
        "--output",
        "workload",
        "output",
        "One-off Job: output path under /efs [default: outputs/NAME/<input name>].",
    ),
    K8sOption(
        "--run-args",
        "workload",
        "run_args",
        "One-off Job: another conveyor command to run instead (e.g. 'status').",
        extra={"callback": _split_args},
    ),
)

#: The EFS file system mounted at /efs.
STORAGE = (
    K8sOption(
        "--efs-id",
        "efs",
        "file_system_id",
        "EFS file system id (fs-…): renders the PV/PVC and mounts it at /efs.",
    ),
    K8sOption(
        "--access-point",
        "efs",
        "access_point_id",
        "EFS access point id (fsap-…), whose POSIX user owns the writes.",
    ),
    K8sOption(
        "--efs-mode",
        "efs",
        "mode",
        "EFS CSI driver, or the tutorial's plain NFS volume.",
        extra={"type": click.Choice(["csi", "nfs"])},
    ),
    K8sOption(
        "--efs-server",
        "efs",
        "server",
        "NFS mode: the file system's DNS name [default: from --efs-id and the region].",
    ),
    K8sOption(
        "--claim",
        "efs",
        "claim",
        "PersistentVolumeClaim name [default: conveyor-efs]; alone, mounts an existing claim.",
    ),
    K8sOption("--storage-class", "efs", "storage_class", "storageClassName of the PV and PVC."),
    K8sOption(
        "--storage-size",
        "efs",
        "size",
        "Capacity of the PV (required by Kubernetes, ignored by EFS).",
    ),
)

#: The KEDA ScaledJob.
KEDA = (
    K8sOption(
        "--keda-max-replicas",
        "keda",
        "max_replicas",
        "KEDA: most worker Jobs at once.",
        extra={"type": int},
    ),
    K8sOption(
        "--keda-queue-length",
        "keda",
        "queue_length",
        "KEDA: messages per worker Job.",
        extra={"type": int},
    ),
    K8sOption(
        "--keda-polling-interval-s",
        "keda",
        "polling_interval_s",
        "KEDA: seconds between queue checks.",
        extra={"type": int},
    ),
    K8sOption(
        "--keda-role-arn",
        "keda",
        "role_arn",
        "KEDA: role to read the queue depth with [default: KEDA operator's own].",
    ),
)

#: The job ledger's Secret and the CronJob pruning the ledger.
LEDGER = (
    K8sOption(
        "--ledger-secret",
        "ledger",
        "secret",
        "Secret holding the job ledger's postgresql:// URL, as NAME or NAME:KEY [default key: "
        "url]: every pod gets CONVEYOR_LEDGER_URL from it (the URL never appears in a "
        "manifest). Needed with EFS storage, where the embedded SQLite ledger is unsafe.",
        env=("CONVEYOR_LEDGER_SECRET",),
        extra={"metavar": "NAME[:KEY]"},
    ),
    K8sOption(
        "--prune-schedule",
        "prune",
        "schedule",
        "ledger-prune CronJob: when it runs (cron).",
    ),
    K8sOption(
        "--prune-older-than",
        "prune",
        "older_than",
        "ledger-prune CronJob: delete jobs finished longer ago than this (45m, 12h, 30d).",
        env=("CONVEYOR_LEDGER_RETENTION",),
    ),
)

#: The ECR pull secret and its refresher.
PULL_SECRET = (
    K8sOption(
        "--pull-secret",
        "pull_secret",
        "name",
        "Image pull secret to use and keep refreshed (not needed on EKS with ECR).",
    ),
    K8sOption(
        "--pull-secret-schedule",
        "pull_secret",
        "schedule",
        "Cron schedule of the refresher (ECR tokens last 12 h).",
    ),
    K8sOption(
        "--pull-secret-role-arn",
        "pull_secret",
        "role_arn",
        "IAM role of the refresher [default: role/NAME-ecr-refresh].",
    ),
)

#: Every group, by its --help title, in the order --help lists them.
GROUPS: dict[str, tuple[K8sOption, ...]] = {
    "Names and AWS": IDENTITY,
    "Worker pods": PODS,
    "One-off Job": ONE_OFF,
    "EFS storage": STORAGE,
    "KEDA": KEDA,
    "Job ledger": LEDGER,
    "Pull secret": PULL_SECRET,
}


def option_groups(*titles: str) -> Callable[[F], F]:
    """Apply the options of the groups named ``titles`` to a command, in this order."""

    def decorate(func: F) -> F:
        for title in reversed(titles):
            for option in reversed(GROUPS[title]):
                func = option.decorator(title)(func)
        return func

    return decorate


def build_deployment(opts: Mapping[str, Any]) -> Deployment:
    """The Deployment that the options in ``opts`` describe (by :attr:`K8sOption.name`);
    every field whose option a command does not take keeps its default."""
    values: dict[str, dict[str, Any]] = {section: {} for section in (*_SECTIONS, "ledger")}
    for group in GROUPS.values():
        for option in group:
            if option.name in opts:
                values[option.section][option.field] = opts[option.name]
    return Deployment(
        workload=Workload(resources=Resources(**values["resources"]), **values["workload"]),
        aws=Aws(**values["aws"]),
        efs=Efs(**values["efs"]),
        keda=Keda(**values["keda"]),
        pull_secret=PullSecret(**values["pull_secret"]),
        ledger=LedgerSecret.parse(values["ledger"].get("secret")),
        prune=Prune(**values["prune"]),
    )
