"""The boto3 SQS client conveyor uses: region and endpoint from the URL, retries, timeouts,
request counting, and AWS errors translated into conveyor's error tree."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config

from conveyor.errors import (
    AccessDenied,
    ConfigError,
    ConveyorError,
    QueueError,
    QueueNotFound,
    TransientQueueError,
)
from conveyor.queues.base import MAX_WAIT_S
from conveyor.queues.sqs_url import QueueUrl, parse_queue_url
from conveyor.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeFilterType

T = TypeVar("T")

#: Seconds the HTTP read may take beyond the longest long poll before it counts as hung.
READ_MARGIN_S = 10
CONNECT_TIMEOUT_S = 5
#: botocore's "standard" retry mode: throttling, 5xx and connection errors, with backoff.
MAX_ATTEMPTS = 5
#: Region for signing requests to a non-AWS endpoint when none is configured: a local
#: SQS-compatible server accepts any region, and AWS itself is never reached this way.
LOCAL_REGION = "us-east-1"

_NOT_FOUND = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidSecurity",
        "KMS.AccessDeniedException",
    }
)
_TRANSIENT = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KMS.ThrottlingException",
        "AWS.SimpleQueueService.PurgeQueueInProgress",
        "PurgeQueueInProgress",
    }
)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach SQS for one queue URL.

    Attributes:
        endpoint_url: None for AWS's own endpoint (boto3 still honours
            ``AWS_ENDPOINT_URL_SQS``), else the SQS-compatible server's base URL.
        region: the signing region, or None to let boto3 resolve it (env, profile).
    """

    endpoint_url: str | None
    region: str | None

    @classmethod
    def for_queue(cls, url: str | QueueUrl, settings: Settings) -> Endpoint:
        """Region from the URL where it names one, else ``settings.region``; endpoint from
        the settings, else the URL's own origin when it is not AWS's (a local server's queue
        URL is enough to reach it).

        Raises:
            ConfigError: not a queue URL.
        """
        parsed = parse_queue_url(url) if isinstance(url, str) else url
        region = parsed.region_or(settings.region)
        if parsed.aws:
            return cls(settings.endpoint_url, region)
        return cls(settings.endpoint_url or parsed.origin, region)

    def in_region(self, region: str) -> Endpoint:
        """The same endpoint, signing for ``region`` (another region's queue: AWS routes by
        region; a local server takes the region from the signature)."""
        return Endpoint(self.endpoint_url, region)

    @classmethod
    def for_settings(cls, settings: Settings) -> Endpoint:
        """The endpoint for calls that name no queue yet (creating one)."""
        return cls(settings.endpoint_url, settings.region)


class RequestCounter:
    """Counts HTTP requests to SQS by API action, retries included (what AWS bills).

    Hooked on botocore's ``request-created`` event, which fires once per attempt.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def attach(self, client: SQSClient) -> None:
        """Count every request ``client`` makes from now on."""
        client.meta.events.register("request-created.sqs", self._on_request)

    def _on_request(self, operation_name: str, **_: Any) -> None:
        with self._lock:
            self._counts[operation_name] += 1

    def counts(self) -> dict[str, int]:
        """A snapshot: action name (``ReceiveMessage``, ``DeleteMessageBatch``...) → count."""
        with self._lock:
            return dict(self._counts)


class RegionalClients:
    """A queue's client, and one more per other region it reaches (a dead-letter queue may
    live in another region), made once with the same endpoint and request counter."""

    def __init__(self, home: SQSClient, endpoint: Endpoint, counter: RequestCounter) -> None:
        self._home = home
        self._endpoint = endpoint
        self._counter = counter
        self._others: dict[str, SQSClient] = {}
        self._lock = threading.Lock()

    def for_region(self, region: str) -> SQSClient:
        """A client signing for ``region``: the home client when it is that region's."""
        if region == self._home.meta.region_name:
            return self._home
        with self._lock:
            client = self._others.get(region)
            if client is None:
                client = make_client(self._endpoint.in_region(region), self._counter)
                self._others[region] = client
            return client

    def close(self) -> None:
        """Close every client, the home one included."""
        self._home.close()
        with self._lock:
            for client in self._others.values():
                client.close()
            self._others.clear()


def make_client(endpoint: Endpoint, counter: RequestCounter | None = None) -> SQSClient:
    """A boto3 SQS client with standard retries and a read timeout above the longest poll.

    Credentials come from boto3's usual chain (environment, profile, IRSA web identity);
    conveyor never reads or stores them itself.

    Raises:
        ConfigError: no region can be found for AWS's own endpoint.
    """
    session = boto3.session.Session()
    region = endpoint.region or session.region_name
    if region is None:
        if endpoint.endpoint_url is None:
            raise ConfigError(
                "no AWS region: use an SQS queue URL, or set --region / AWS_DEFAULT_REGION"
            )
        region = LOCAL_REGION
    config = Config(
        region_name=region,
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=MAX_WAIT_S + READ_MARGIN_S,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        user_agent_extra="conveyor",
    )
    client: SQSClient = session.client("sqs", endpoint_url=endpoint.endpoint_url, config=config)
    if counter is not None:
        counter.attach(client)
    return client


def translate(exc: Exception, action: str, where: str) -> ConveyorError:
    """One clear conveyor error for a botocore failure of ``sqs:<action>`` on ``where``."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _translate_client_error(exc, action, where)
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return ConfigError(
            f"no AWS credentials for sqs:{action} on {where}: set them in the environment, "
            "a profile, or an IAM role for the service account"
        )
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return ConfigError("no AWS region: set --region or AWS_DEFAULT_REGION")
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return TransientQueueError(f"cannot reach SQS for sqs:{action} on {where}: {exc}")
    return QueueError(f"sqs:{action} on {where} failed: {exc}")


def _translate_client_error(
    exc: botocore.exceptions.ClientError, action: str, where: str
) -> ConveyorError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", "")).strip()
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _NOT_FOUND:
        return QueueNotFound(
            f"SQS queue {where} does not exist (sqs:{action}): create it with "
            "`conveyor queue create NAME`, or check the URL and region"
        )
    if code in _DENIED or status == 403:
        return AccessDenied(
            f"access denied: sqs:{action} on {where} ({code}: {message}); "
            f"grant sqs:{action} to this role"
        )
    if code in _TRANSIENT or status >= 500:
        return TransientQueueError(
            f"SQS is unavailable: sqs:{action} on {where} failed after "
            f"{MAX_ATTEMPTS} attempts ({code}: {message})"
        )
    return QueueError(f"sqs:{action} on {where} failed ({code}: {message})")


def call(action: str, where: str, func: Callable[[], T]) -> T:
    """Run one boto3 call, turning its failures into conveyor errors (``raise ... from``)."""
    try:
        return func()
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise translate(exc, action, where) from exc


def get_attributes(
    client: SQSClient, url: str, names: list[QueueAttributeFilterType]
) -> dict[str, str]:
    """GetQueueAttributes, as plain strings."""
    response = call(
        "GetQueueAttributes",
        url,
        lambda: client.get_queue_attributes(QueueUrl=url, AttributeNames=names),
    )
    return {str(key): value for key, value in response.get("Attributes", {}).items()}


def message_counts(client: SQSClient, url: str) -> tuple[int, int, int]:
    """Approximate (visible, in flight, delayed) messages in the queue at ``url``."""
    attributes = get_attributes(
        client,
        url,
        [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )
    return (
        int(attributes.get("ApproximateNumberOfMessages", "0")),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
        int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
    )
