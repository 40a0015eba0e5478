"""The Deployment that `conveyor k8s` renders from: its sections, checked once, with the AWS
names derived (queue, dead-letter queue, region, account, roles), and the pods' fixed paths."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from conveyor.errors import ConfigError
from conveyor.k8s.aws import EcrImage, SqsQueue, partition_of
from conveyor.k8s.names import check_dns_label, check_quantity, is_label_value
from conveyor.k8s.sections import Aws, Efs, Keda, LedgerSecret, Prune, PullSecret, Workload
from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S, MAX_WAIT_S
from conveyor.queues.sqs_url import dead_letter_name
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
        self.efs.check()
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
        if work.version is not None and not is_label_value(work.version, max_len=16):
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
