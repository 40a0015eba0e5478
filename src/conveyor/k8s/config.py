"""What `conveyor k8s render` is configured with, checked once, with the AWS names derived."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from conveyor.errors import ConfigError
from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S, MAX_WAIT_S
from conveyor.queues.sqs_url import dead_letter_name, parse_queue_url
from conveyor.settings import Settings

#: The numeric user and group the image runs as (deploy/Dockerfile's USER). Kubernetes can
#: only verify runAsNonRoot against a numeric user, and an EFS access point should map
#: writes to the same uid/gid.
RUN_AS_UID = 10001
#: Where the EFS claim is mounted, and so the storage root of every pod that mounts it.
EFS_MOUNT = "/efs"
#: The tutorial's sample CSV inside the image (deploy/Dockerfile copies it there).
SAMPLE_INPUT = "/opt/conveyor/input.csv"
#: The worker's liveness file (CONVEYOR_HEALTH_FILE), on the writable /tmp emptyDir.
HEALTH_FILE = "/tmp/conveyor-alive"
#: Seconds a pod keeps after the worker's own grace: releasing the lease and exiting.
EXIT_MARGIN_S = 15

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FS_ID = re.compile(r"^fs-[0-9a-f]{8,40}$")
_AP_ID = re.compile(r"^fsap-[0-9a-f]{8,40}$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?[smhdSMHD]?$")
_ECR_IMAGE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?"
    r"/(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def check_dns_label(value: str, what: str, max_len: int = 63) -> str:
    """Return ``value`` if it is a valid Kubernetes object name (RFC 1123 label).

    Raises:
        ConfigError: it is not.
    """
    if len(value) > max_len or not _DNS_LABEL.match(value):
        raise ConfigError(
            f"{what} {value!r} is not a valid Kubernetes name: lower-case letters, digits "
            f"and '-', starting and ending with a letter or digit, at most {max_len} characters"
        )
    return value


def check_quantity(value: str, what: str) -> str:
    """Return ``value`` if it is a Kubernetes quantity such as ``500m`` or ``1Gi``."""
    if not _QUANTITY.match(value):
        raise ConfigError(f"{what} {value!r} is not a Kubernetes quantity (e.g. 500m, 1, 512Mi)")
    return value


def partition_of(region: str, china: bool = False) -> str:
    """The ARN partition of an AWS region."""
    if china or region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@dataclass(frozen=True)
class SqsQueue:
    """An SQS queue named by its URL, with the parts an ARN needs."""

    url: str
    region: str
    account_id: str
    name: str
    partition: str

    @property
    def arn(self) -> str:
        """``arn:<partition>:sqs:<region>:<account>:<name>``."""
        return f"arn:{self.partition}:sqs:{self.region}:{self.account_id}:{self.name}"

    def sibling(self, name: str) -> SqsQueue:
        """Another queue of the same account and region (the dead-letter queue)."""
        base = self.url.rsplit("/", 1)[0]
        return SqsQueue(f"{base}/{name}", self.region, self.account_id, name, self.partition)

    @classmethod
    def parse(cls, url: str, region: str | None = None, account_id: str | None = None) -> SqsQueue:
        """Read region, account and name out of an SQS queue URL, with the parser the
        queues use (:func:`conveyor.queues.sqs_url.parse_queue_url`).

        The URL's own region and account win where it carries them (an AWS URL carries
        both); ``region`` and ``account_id`` fill in for a URL that does not.

        Raises:
            ConfigError: the URL is not a queue URL, or region/account are missing.
        """
        parsed = parse_queue_url(url)
        region = parsed.region_or(region)
        account_id = parsed.account_id or account_id
        if region is None or not _REGION.match(region):
            raise ConfigError(f"no AWS region for queue {url!r}: give --region")
        if account_id is None or not _ACCOUNT.match(account_id):
            raise ConfigError(f"no 12-digit AWS account id for queue {url!r}: give --account-id")
        return cls(url, region, account_id, parsed.name, partition_of(region, parsed.china))


@dataclass(frozen=True)
class EcrImage:
    """An image in a private Amazon ECR registry."""

    account_id: str
    region: str
    repository: str
    partition: str

    @property
    def registry(self) -> str:
        """The registry host, the key of a docker-registry secret."""
        suffix = ".cn" if self.partition == "aws-cn" else ""
        return f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com{suffix}"

    @property
    def repository_arn(self) -> str:
        """``arn:<partition>:ecr:<region>:<account>:repository/<name>``."""
        return (
            f"arn:{self.partition}:ecr:{self.region}:{self.account_id}:repository/{self.repository}"
        )

    @classmethod
    def parse(cls, image: str) -> EcrImage | None:
        """The ECR parts of ``image``, or None when it is not in a private ECR registry."""
        match = _ECR_IMAGE.match(image)
        if match is None:
            return None
        region = match.group("region")
        partition = partition_of(region, bool(match.group("cn")))
        return cls(match.group("account"), region, match.group("repo"), partition)


@dataclass(frozen=True)
class Resources:
    """CPU and memory requests and limits of the conveyor container."""

    cpu_request: str = "250m"
    memory_request: str = "512Mi"
    cpu_limit: str = "1"
    memory_limit: str = "1Gi"

    def check(self) -> None:
        """Raise ConfigError unless every value is a Kubernetes quantity."""
        check_quantity(self.cpu_request, "--cpu-request")
        check_quantity(self.memory_request, "--memory-request")
        check_quantity(self.cpu_limit, "--cpu-limit")
        check_quantity(self.memory_limit, "--memory-limit")


@dataclass(frozen=True)
class Efs:
    """The Amazon EFS file system behind the claim mounted at /efs.

    Attributes:
        file_system_id: ``fs-…``; with ``mode="csi"`` it is the CSI volume handle.
        access_point_id: ``fsap-…``: mounts through an access point, whose POSIX user
            owns every write (the right answer for a non-root pod).
        mode: ``csi`` (the EFS CSI driver, ``efs.csi.aws.com``) or ``nfs`` (the tutorial's
            plain NFS volume, no TLS, no access points).
        server: ``nfs`` mode: the file system's DNS name (derived from the id and region).
        claim: the PersistentVolumeClaim's name; giving it alone mounts an existing claim.
    """

    file_system_id: str | None = None
    access_point_id: str | None = None
    mode: Literal["csi", "nfs"] = "csi"
    server: str | None = None
    claim: str | None = None
    storage_class: str = "efs-sc"
    size: str = "5Gi"

    @property
    def claim_name(self) -> str:
        """The claim's name (default ``conveyor-efs``)."""
        return self.claim or "conveyor-efs"

    @property
    def mounted(self) -> bool:
        """Whether pods mount a claim at /efs: a file system or a claim was named."""
        return bool(self.file_system_id or self.server or self.claim)


@dataclass(frozen=True)
class Keda:
    """The KEDA ScaledJob that starts worker Jobs from the queue depth."""

    max_replicas: int = 10
    queue_length: int = 5
    polling_interval_s: int = 30
    role_arn: str | None = None
    successful_history: int = 3
    failed_history: int = 5


@dataclass(frozen=True)
class PullSecret:
    """An image pull secret for ECR, refreshed by a CronJob (ECR tokens last 12 hours)."""

    name: str | None = None
    schedule: str = "17 */6 * * *"
    role_arn: str | None = None
    aws_cli_image: str = "public.ecr.aws/aws-cli/aws-cli:2.31.23"
    kubectl_image: str = "registry.k8s.io/kubectl:v1.34.0"


@dataclass(frozen=True)
class LedgerSecret:
    """The Kubernetes Secret (and key in it) holding the job ledger's URL,
    ``postgresql://user:password@host/db``: pods get it as ``CONVEYOR_LEDGER_URL`` through
    ``secretKeyRef``, so neither the URL nor its password ever appears in a manifest.

    Attributes:
        name: the Secret's name; None when there is none (the embedded SQLite ledger).
        key: the key in the Secret's data.
    """

    name: str | None = None
    key: str = "url"

    @classmethod
    def parse(cls, value: str | None) -> LedgerSecret:
        """``NAME`` or ``NAME:KEY`` (``--ledger-secret``); None or empty: no Secret.

        Raises:
            ConfigError: the name or the key is not one Kubernetes accepts.
        """
        if not value:
            return cls()
        name, sep, key = value.partition(":")
        secret = cls(name, key if sep else cls.key)
        secret.check()
        return secret

    def check(self) -> None:
        """Raise ConfigError unless the name is a Secret name and the key a data key."""
        if self.name is None:
            return
        if len(self.name) > 253 or not _DNS_SUBDOMAIN.match(self.name):
            raise ConfigError(
                f"--ledger-secret name {self.name!r} is not a valid Secret name: lower-case "
                "letters, digits, '-' and '.', at most 253 characters (NAME or NAME:KEY)"
            )
        if len(self.key) > 253 or not _SECRET_KEY.match(self.key):
            raise ConfigError(
                f"--ledger-secret key {self.key!r} is not a valid Secret key: letters, "
                "digits, '-', '_' and '.' (NAME or NAME:KEY)"
            )


@dataclass(frozen=True)
class Prune:
    """The CronJob that deletes finished jobs from the ledger (``conveyor ledger prune``)."""

    schedule: str = "41 3 * * *"
    older_than: str = "30d"

    def check(self) -> None:
        """Raise ConfigError unless the schedule is a cron line and the age a duration."""
        if len(self.schedule.split()) != 5:
            raise ConfigError(
                f"--prune-schedule {self.schedule!r} is not a cron schedule (5 fields)"
            )
        if not _DURATION.match(self.older_than.strip()):
            raise ConfigError(
                f"--prune-older-than {self.older_than!r} is not a duration (45m, 12h, 30d)"
            )


@dataclass(frozen=True)
class Aws:
    """The AWS side: the queue, its dead-letter queue, the IAM role, the OIDC issuer."""

    queue_url: str | None = None
    dlq_url: str | None = None
    region: str | None = None
    account_id: str | None = None
    role_arn: str | None = None
    oidc_issuer: str | None = None
    kms_key_arn: str | None = None


@dataclass(frozen=True)
class Workload:
    """How the pods run: image, names, sizes and timings.

    Attributes:
        version: the Jobs' version (Jobs are immutable, so a changed Job gets a new name);
            None derives it from a hash of the pod template.
        input: one-off Job: a CSV under /efs to run on (else the image's sample job).
        output: one-off Job: where to write it under /efs.
        run_args: one-off Job: any other conveyor command instead (``submit …``,
            ``status``, ``dlq list``), with the same ServiceAccount, storage and queue.
    """

    image: str | None = None
    name: str = "conveyor"
    version: str | None = None
    namespace: str = "default"
    service_account: str = "conveyor"
    parallelism: int = 2
    resources: Resources = field(default_factory=Resources)
    grace_s: float = Settings.grace_s
    visibility_timeout_s: int = Settings.visibility_timeout_s
    metrics_port: int | None = None
    backoff_limit: int = 6
    ttl_s: int | None = 86_400
    deadline_s: int | None = None
    tmp_size: str = "1Gi"
    input: str | None = None
    output: str | None = None
    run_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deployment:
    """Everything the manifests and policies are rendered from."""

    workload: Workload = field(default_factory=Workload)
    aws: Aws = field(default_factory=Aws)
    efs: Efs = field(default_factory=Efs)
    keda: Keda = field(default_factory=Keda)
    pull_secret: PullSecret = field(default_factory=PullSecret)
    ledger: LedgerSecret = field(default_factory=LedgerSecret)
    prune: Prune = field(default_factory=Prune)

    # Derived values -------------------------------------------------------------------

    @property
    def queue(self) -> SqsQueue | None:
        """The SQS queue, or None when no queue URL was given."""
        if self.aws.queue_url is None:
            return None
        return SqsQueue.parse(self.aws.queue_url, self.aws.region, self.aws.account_id)

    def require_queue(self, what: str) -> SqsQueue:
        """The SQS queue; ConfigError naming ``what`` needs it when none was given."""
        queue = self.queue
        if queue is None:
            raise ConfigError(f"{what} needs the SQS queue: give --queue (or SQS_QUEUE_URL)")
        return queue

    def dead_letter_queue(self, queue: SqsQueue) -> SqsQueue:
        """The dead-letter queue: ``--dlq``, else conveyor's ``<name>-dlq`` convention."""
        if self.aws.dlq_url is not None:
            return SqsQueue.parse(self.aws.dlq_url, queue.region, queue.account_id)
        return queue.sibling(dead_letter_name(queue.name))

    @property
    def region(self) -> str | None:
        """The AWS region: given, or from the queue URL, or from an ECR image."""
        if self.aws.region:
            return self.aws.region
        queue = self.queue
        if queue is not None:
            return queue.region
        ecr = self.ecr_image
        return ecr.region if ecr else None

    @property
    def account_id(self) -> str | None:
        """The AWS account: given, or from the queue URL, or from an ECR image."""
        if self.aws.account_id:
            return self.aws.account_id
        queue = self.queue
        if queue is not None:
            return queue.account_id
        ecr = self.ecr_image
        return ecr.account_id if ecr else None

    @property
    def partition(self) -> str:
        """The ARN partition of the region (``aws`` when unknown)."""
        queue = self.queue
        if queue is not None:
            return queue.partition
        return partition_of(self.region or "")

    @property
    def ecr_image(self) -> EcrImage | None:
        """The image's ECR parts, when it lives in a private ECR registry."""
        return EcrImage.parse(self.workload.image) if self.workload.image else None

    def role_arn(self, role_arn: str | None, suffix: str) -> str:
        """``role_arn`` or, when the account is known, ``role/<name>-<suffix>``.

        Raises:
            ConfigError: neither is known.
        """
        if role_arn:
            return role_arn
        account = self.account_id
        if account is None:
            raise ConfigError(
                "the IAM role is unknown: give --role-arn, or --account-id to use "
                f"role/{self.workload.name}-{suffix}"
            )
        return f"arn:{self.partition}:iam::{account}:role/{self.workload.name}-{suffix}"

    @property
    def image(self) -> str:
        """The conveyor image; ConfigError when none was given."""
        if not self.workload.image:
            raise ConfigError(
                "the pods need an image: give --image "
                "(e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/conveyor:TAG, see `make push`)"
            )
        return self.workload.image

    @property
    def termination_grace_s(self) -> int:
        """terminationGracePeriodSeconds: the worker's grace plus time to release and exit."""
        return math.ceil(self.workload.grace_s) + EXIT_MARGIN_S

    @property
    def health_max_age_s(self) -> int:
        """The liveness probe's ``--max-age-s``: longer than a heartbeat and a long poll."""
        heartbeat_s = Settings(visibility_timeout_s=self.workload.visibility_timeout_s).heartbeat_s
        return max(120, math.ceil(2 * heartbeat_s + MAX_WAIT_S))

    def check(self) -> None:
        """Check what every render needs, so errors name the flag to fix.

        Raises:
            ConfigError: a value is malformed or out of range.
        """
        self._check_names()
        self._check_numbers()
        self._check_efs()
        self.ledger.check()
        self.prune.check()
        if self.aws.queue_url is not None:
            self.require_queue("the queue URL")

    def _check_names(self) -> None:
        work = self.workload
        check_dns_label(work.name, "--name", max_len=40)
        check_dns_label(work.namespace, "--namespace")
        check_dns_label(work.service_account, "--service-account")
        check_dns_label(self.efs.claim_name, "--claim")
        check_dns_label(self.efs.storage_class, "--storage-class")
        if self.pull_secret.name is not None:
            check_dns_label(self.pull_secret.name, "--pull-secret")
        if work.version is not None and (
            len(work.version) > 16 or not _LABEL_VALUE.match(work.version)
        ):
            raise ConfigError(
                f"--job-version {work.version!r} must be up to 16 letters, digits, '-', '_' or '.'"
            )
        for path, flag in ((work.input, "--input"), (work.output, "--output")):
            if path is not None and (path.startswith("/") or ".." in path.split("/")):
                raise ConfigError(f"{flag} {path!r} must be a relative path under {EFS_MOUNT}")

    def _check_numbers(self) -> None:
        work = self.workload
        work.resources.check()
        check_quantity(self.efs.size, "--storage-size")
        check_quantity(work.tmp_size, "--tmp-size")
        if work.parallelism < 1:
            raise ConfigError("--parallelism must be at least 1")
        if work.grace_s <= 0:
            raise ConfigError("--grace-s must be positive")
        if not 1 <= work.visibility_timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
            raise ConfigError(
                f"--visibility-timeout-s must be between 1 and {MAX_VISIBILITY_TIMEOUT_S} "
                "(SQS's cap)"
            )
        if work.metrics_port is not None and not 1 <= work.metrics_port <= 65535:
            raise ConfigError("--metrics-port must be between 1 and 65535")
        if self.keda.max_replicas < 1 or self.keda.queue_length < 1:
            raise ConfigError("--keda-max-replicas and --keda-queue-length must be at least 1")

    def _check_efs(self) -> None:
        efs = self.efs
        if efs.file_system_id is not None and not _FS_ID.match(efs.file_system_id):
            raise ConfigError(f"--efs-id {efs.file_system_id!r} is not an EFS id (fs-…)")
        if efs.access_point_id is not None:
            if not _AP_ID.match(efs.access_point_id):
                raise ConfigError(
                    f"--access-point {efs.access_point_id!r} is not an access point id (fsap-…)"
                )
            if efs.mode == "nfs":
                raise ConfigError("--access-point needs --efs-mode csi: NFS mounts bypass it")
