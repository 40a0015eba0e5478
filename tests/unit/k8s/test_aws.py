"""AWS names from the queue URL: region, account and partition in the queues' ARNs."""

from __future__ import annotations

import pytest

from conveyor.k8s.aws import SqsQueue
from tests.unit.k8s.cases import ACCOUNT, QUEUE, QUEUE_ARN, REGION


@pytest.mark.parametrize(
    ("url", "region", "account", "arn"),
    [
        (QUEUE, None, None, QUEUE_ARN),
        (f"https://{REGION}.queue.amazonaws.com/{ACCOUNT}/q", None, None, None),
        (
            f"https://sqs.cn-north-1.amazonaws.com.cn/{ACCOUNT}/q",
            None,
            None,
            f"arn:aws-cn:sqs:cn-north-1:{ACCOUNT}:q",
        ),
        (
            "http://127.0.0.1:4566/000000000000/q",
            "us-east-1",
            None,
            "arn:aws:sqs:us-east-1:000000000000:q",
        ),
    ],
)
def test_queue_arns_come_from_the_url(
    url: str, region: str | None, account: str | None, arn: str | None
) -> None:
    queue = SqsQueue.parse(url, region, account)
    assert queue.arn == (arn or f"arn:aws:sqs:{REGION}:{ACCOUNT}:q")
