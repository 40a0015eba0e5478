"""SQS queue URLs and ARNs, read one way everywhere (``queues/`` and ``k8s/``).

A queue URL is opaque: servers return other shapes than AWS's, so only its last path
segment (the name) is relied on; region and account are read where the URL carries them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from conveyor.errors import ConfigError

FIFO_SUFFIX = ".fifo"
DLQ_SUFFIX = "-dlq"

#: An AWS region: ``us-east-1``, ``us-gov-west-1``, ``cn-north-1``, ``eu-central-2``.
_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d+"
REGION_PATTERN = re.compile(rf"{_REGION}\Z")
#: Hosts that name a region: ``sqs.<region>.`` (AWS, LocalStack's default strategy),
#: ``sqs-fips.<region>.``, and the legacy ``<region>.queue.`` (also LocalStack's ``domain``).
#: Either may follow other labels (a VPC endpoint's ``vpce-….sqs.<region>.vpce.…``).
_REGION_HOSTS = (
    re.compile(rf"(?:^|\.)sqs(?:-fips)?\.(?P<region>{_REGION})\."),
    re.compile(rf"(?:^|\.)(?P<region>{_REGION})\.queue\."),
)
#: AWS's own SQS endpoints (no endpoint override is needed to reach them).
_AWS_HOST = re.compile(r"(?:[a-z0-9-]+\.)*(?:amazonaws\.com(?:\.cn)?|api\.aws)")
_ACCOUNT = re.compile(r"\d{12}\Z")
_ARN = re.compile(
    rf"arn:(?P<partition>aws[a-z-]*):sqs:(?P<region>{_REGION}):(?P<account>\d{{12}}):(?P<name>[^:/\s]+)"
)


def dead_letter_name(name: str) -> str:
    """conveyor's one naming rule for a queue's dead-letter queue: ``jobs`` → ``jobs-dlq``,
    ``jobs.fifo`` → ``jobs-dlq.fifo`` (a FIFO queue's dead-letter queue must be FIFO too,
    and SQS wants ``.fifo`` last)."""
    if name.endswith(FIFO_SUFFIX):
        return name.removesuffix(FIFO_SUFFIX) + DLQ_SUFFIX + FIFO_SUFFIX
    return name + DLQ_SUFFIX


@dataclass(frozen=True)
class QueueUrl:
    """What a queue URL says about its queue.

    Attributes:
        url: the URL as given, used verbatim as ``QueueUrl`` in every request.
        name: the queue's name, the URL's last path segment.
        region: the region the URL names (host ``sqs.<region>.…``, ``<region>.queue.…``,
            or a path ``…/<region>/<account>/<name>`` as LocalStack's path strategy
            returns), or None when it names none.
        account_id: the 12-digit path segment before the name, or None.
        origin: ``scheme://host[:port]``, the endpoint of a non-AWS server.
        aws: whether the host is AWS's own (``*.amazonaws.com``, ``.com.cn``, ``api.aws``).
        china: whether the host is in AWS's China partition (``.amazonaws.com.cn``).
    """

    url: str
    name: str
    region: str | None
    account_id: str | None
    origin: str
    aws: bool
    china: bool

    @property
    def fifo(self) -> bool:
        """A FIFO queue (its name ends in ``.fifo``)."""
        return self.name.endswith(FIFO_SUFFIX)

    @property
    def dead_letter_name(self) -> str:
        """The name conveyor gives this queue's dead-letter queue."""
        return dead_letter_name(self.name)

    def region_or(self, default: str | None) -> str | None:
        """The URL's region, else ``default`` (the configured region)."""
        return self.region or default


def parse_queue_url(url: str) -> QueueUrl:
    """Read a queue URL: any http(s) URL whose last path segment is the queue's name.

    Raises:
        ConfigError: not an http(s) URL with a host and a name.
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        raise ConfigError(f"not an SQS queue URL: {url!r} ({exc})") from None
    segments = [segment for segment in parts.path.split("/") if segment]
    if parts.scheme not in ("http", "https") or not host or not segments:
        raise ConfigError(
            f"not an SQS queue URL: {url!r} (expected http(s)://HOST/.../NAME, e.g. "
            "https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
        )
    name = segments[-1]
    before = segments[:-1]
    account = before[-1] if before and _ACCOUNT.match(before[-1]) else None
    return QueueUrl(
        url=url,
        name=name,
        region=_region_of(host, before),
        account_id=account,
        origin=f"{parts.scheme}://{parts.netloc}",
        aws=bool(_AWS_HOST.fullmatch(host)),
        china=host.endswith(".amazonaws.com.cn"),
    )


def _region_of(host: str, before: list[str]) -> str | None:
    """The region named by the host, else by a path segment right before the account."""
    if host == "queue.amazonaws.com":
        return "us-east-1"  # the oldest, region-less endpoint is us-east-1's
    for pattern in _REGION_HOSTS:
        match = pattern.search(host)
        if match:
            return match.group("region")
    if len(before) >= 2 and _ACCOUNT.match(before[-1]) and REGION_PATTERN.match(before[-2]):
        return before[-2]
    return None


@dataclass(frozen=True)
class QueueArn:
    """An SQS queue's ARN: ``arn:<partition>:sqs:<region>:<account>:<name>``."""

    partition: str
    region: str
    account_id: str
    name: str

    def __str__(self) -> str:
        return f"arn:{self.partition}:sqs:{self.region}:{self.account_id}:{self.name}"


def parse_queue_arn(arn: str) -> QueueArn:
    """Read an SQS queue ARN (a RedrivePolicy's ``deadLetterTargetArn``).

    Raises:
        ConfigError: it is not one.
    """
    match = _ARN.fullmatch(arn.strip())
    if match is None:
        raise ConfigError(
            f"not an SQS queue ARN: {arn!r} (expected arn:aws:sqs:REGION:ACCOUNT:NAME)"
        )
    return QueueArn(
        match.group("partition"), match.group("region"), match.group("account"), match.group("name")
    )
