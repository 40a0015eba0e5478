"""Creating and deleting an SQS queue together with its dead-letter queue."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import botocore.exceptions

from conveyor.errors import ConfigError
from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S
from conveyor.queues.sqs_client import Endpoint, call, make_client, translate
from conveyor.queues.sqs_url import FIFO_SUFFIX, dead_letter_name, parse_queue_arn, parse_queue_url
from conveyor.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

#: Messages wait up to 4 days in the queue (SQS's default) and 14 days (SQS's maximum) in
#: the dead-letter queue, so a dead letter outlives the job it came from and can be redriven.
QUEUE_RETENTION_S = 4 * 24 * 3600
DEAD_LETTER_RETENTION_S = 14 * 24 * 3600
#: Below 2, one crashed worker would dead-letter a job that never failed.
MIN_MAX_RECEIVE_COUNT = 2
LONG_POLL_S = 20

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name.removesuffix(FIFO_SUFFIX)) or len(name) > 80:
        raise ConfigError(
            f"bad SQS queue name {name!r}: up to 80 letters, digits, '-' or '_' "
            f"(FIFO names end in {FIFO_SUFFIX})"
        )


def create_queue(
    name: str,
    *,
    fifo: bool = False,
    max_receive_count: int | None = None,
    visibility_timeout_s: int | None = None,
    settings: Settings,
) -> str:
    """Create queue ``name`` and its dead-letter queue ``<name>-dlq``, linked by a redrive
    policy, with long polling on; return the queue's URL (to export as ``SQS_QUEUE_URL``).

    Idempotent: creating a queue that exists with the same attributes returns its URL.
    A name ending in ``.fifo`` makes a FIFO queue; ``fifo=True`` adds the suffix.

    Args:
        max_receive_count: receives before SQS dead-letters a message (default
            ``settings.max_receive_count``; at least 2).
        visibility_timeout_s: the queue's default visibility timeout (default
            ``settings.visibility_timeout_s``; 1 to 43,200 s).

    Raises:
        ConfigError: bad name or limits, or the queue exists with other attributes.
        AccessDenied, TransientQueueError: from SQS.
    """
    if max_receive_count is None:
        max_receive_count = settings.max_receive_count
    if visibility_timeout_s is None:
        visibility_timeout_s = settings.visibility_timeout_s
    if name.endswith(FIFO_SUFFIX):
        fifo = True
    elif fifo:
        name += FIFO_SUFFIX
    dlq_name = dead_letter_name(name)
    _check_name(name)
    _check_name(dlq_name)
    if max_receive_count < MIN_MAX_RECEIVE_COUNT:
        raise ConfigError(
            f"max receive count {max_receive_count} is below {MIN_MAX_RECEIVE_COUNT}: a "
            "single crashed worker would dead-letter the job (CONVEYOR_MAX_RECEIVE_COUNT)"
        )
    if not 0 < visibility_timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
        raise ConfigError(
            f"visibility timeout {visibility_timeout_s} s must be within "
            f"1..{MAX_VISIBILITY_TIMEOUT_S} s (CONVEYOR_VISIBILITY_TIMEOUT_S)"
        )
    client = make_client(Endpoint.for_settings(settings))
    try:
        common: dict[QueueAttributeNameType, str] = {"FifoQueue": "true"} if fifo else {}
        dlq_url = _create(
            client, dlq_name, {**common, "MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_S)}
        )
        dlq_arn = call(
            "GetQueueAttributes",
            dlq_url,
            lambda: client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]),
        )["Attributes"]["QueueArn"]
        policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
        attributes: dict[QueueAttributeNameType, str] = {
            **common,
            "MessageRetentionPeriod": str(QUEUE_RETENTION_S),
            "VisibilityTimeout": str(visibility_timeout_s),
            "ReceiveMessageWaitTimeSeconds": str(LONG_POLL_S),
            "RedrivePolicy": json.dumps(policy, separators=(",", ":")),
        }
        return _create(client, name, attributes)
    finally:
        client.close()


def _create(client: SQSClient, name: str, attributes: dict[QueueAttributeNameType, str]) -> str:
    try:
        return client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in (
            "QueueAlreadyExists",
            "QueueNameExists",
            "AWS.SimpleQueueService.QueueNameExists",
        ):
            raise ConfigError(
                f"SQS queue {name} already exists with other attributes: delete it first "
                "(`conveyor queue delete`) or pick another name"
            ) from exc
        if code in ("QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently"):
            raise ConfigError(
                f"SQS queue {name} was deleted less than 60 s ago: wait a minute and retry"
            ) from exc
        raise translate(exc, "CreateQueue", name) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, "CreateQueue", name) from exc


def delete_queue(url: str, settings: Settings) -> list[str]:
    """Delete the queue at ``url`` and its dead-letter queue, when that one is the
    ``<name>-dlq`` that :func:`create_queue` made (a DLQ shared with other queues stays).

    Returns:
        The URLs deleted, the queue first.

    Raises:
        ConfigError: not a queue URL, or an unreadable RedrivePolicy.
        QueueNotFound: the queue does not exist.
    """
    parsed = parse_queue_url(url)
    endpoint = Endpoint.for_queue(parsed, settings)
    clients = [make_client(endpoint)]
    try:
        client = clients[0]
        attributes = call(
            "GetQueueAttributes",
            url,
            lambda: client.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]),
        ).get("Attributes", {})
        dlq: tuple[SQSClient, str] | None = None
        if "RedrivePolicy" in attributes:
            try:
                target = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"unreadable RedrivePolicy on {url}: {exc!r}") from exc
            arn = parse_queue_arn(str(target))
            if arn.name == parsed.dead_letter_name:
                # Looked up in the ARN's own region: it need not be the queue's.
                if arn.region != client.meta.region_name:
                    clients.append(make_client(endpoint.in_region(arn.region)))
                dlq_client = clients[-1]
                dlq_url = call(
                    "GetQueueUrl",
                    str(arn),
                    lambda: dlq_client.get_queue_url(
                        QueueName=arn.name, QueueOwnerAWSAccountId=arn.account_id
                    ),
                )["QueueUrl"]
                dlq = (dlq_client, dlq_url)
        call("DeleteQueue", url, lambda: client.delete_queue(QueueUrl=url))
        deleted = [url]
        if dlq is not None:
            dlq_client, dlq_url = dlq
            call("DeleteQueue", dlq_url, lambda: dlq_client.delete_queue(QueueUrl=dlq_url))
            deleted.append(dlq_url)
        return deleted
    finally:
        for opened in clients:
            opened.close()
