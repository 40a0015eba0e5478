"""The sections a Deployment is made of: workload, AWS, EFS, KEDA, pull secret, ledger, prune.

Each section is frozen and holds one group of `conveyor k8s` options (their --help sections).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from conveyor.errors import ConfigError
from conveyor.k8s.names import check_quantity, is_dns_subdomain, is_duration, is_secret_key
from conveyor.settings import Settings

_FS_ID = re.compile(r"^fs-[0-9a-f]{8,40}$")
_AP_ID = re.compile(r"^fsap-[0-9a-f]{8,40}$")


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

    def check(self) -> None:
        """Raise ConfigError unless the ids are EFS ids and the access point can be used."""
        if self.file_system_id is not None and not _FS_ID.match(self.file_system_id):
            raise ConfigError(f"--efs-id {self.file_system_id!r} is not an EFS id (fs-…)")
        if self.access_point_id is not None:
            if not _AP_ID.match(self.access_point_id):
                raise ConfigError(
                    f"--access-point {self.access_point_id!r} is not an access point id (fsap-…)"
                )
            if self.mode == "nfs":
                raise ConfigError("--access-point needs --efs-mode csi: NFS mounts bypass it")


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
        if not is_dns_subdomain(self.name):
            raise ConfigError(
                f"--ledger-secret name {self.name!r} is not a valid Secret name: lower-case "
                "letters, digits, '-' and '.', at most 253 characters (NAME or NAME:KEY)"
            )
        if not is_secret_key(self.key):
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
        if not is_duration(self.older_than):
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
