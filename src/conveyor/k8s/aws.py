"""The AWS names the manifests and policies need: SQS queue ARNs, ECR image parts, partitions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor.errors import ConfigError
from conveyor.queues.sqs_url import parse_queue_url

_ACCOUNT = re.compile(r"^[0-9]{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_ECR_IMAGE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?"
    r"/(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


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
