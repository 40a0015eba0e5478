"""SQS-specific behaviour, against moto's server on 127.0.0.1 (the contract suite covers the
rest): batch failures, FIFO, size limit, the 12-hour cap, errors, request counts, queue
creation."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from conveyor.errors import (
    AccessDenied,
    ConfigError,
    LeaseCapReached,
    LeaseLost,
    MessageTooLarge,
    QueueError,
    QueueNotFound,
    TransientQueueError,
)
from conveyor.queues import Outgoing, open_queue
from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S, MAX_WAIT_S
from conveyor.queues.sqs import SQSQueue
from conveyor.queues.sqs_admin import (
    DEAD_LETTER_RETENTION_S,
    QUEUE_RETENTION_S,
    create_queue,
    delete_queue,
)
from conveyor.queues.sqs_batch import BATCH_ATTEMPTS, run_batch
from conveyor.queues.sqs_client import Endpoint, make_client, translate
from conveyor.queues.sqs_dlq import ATTRIBUTE_BUDGET_BYTES, MAX_REASON_BYTES, DeadLetterQueue
from conveyor.queues.sqs_url import parse_queue_url
from conveyor.settings import Settings
from tests.fixtures.sqs import REGION, fake_aws_env


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def sqs(sqs_settings: Settings) -> Iterator[Any]:
    """A plain boto3 client on the test server, to look behind conveyor's back."""
    client = boto3.client("sqs", endpoint_url=sqs_settings.endpoint_url, region_name=REGION)
    yield client
    client.close()


@pytest.fixture
def open_sqs(sqs_settings: Settings) -> Iterator[Callable[..., SQSQueue]]:
    """``open_sqs(url, clock=None, **settings)``: an SQSQueue, closed at teardown."""
    opened: list[SQSQueue] = []

    def factory(url: str, clock: Clock | None = None, **changes: Any) -> SQSQueue:
        settings = sqs_settings.with_(**changes)
        queue = SQSQueue(url, settings) if clock is None else SQSQueue(url, settings, clock=clock)
        opened.append(queue)
        return queue

    yield factory
    for queue in opened:
        queue.close()


def attributes(sqs: Any, url: str) -> dict[str, str]:
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


# --- creating and deleting queues --------------------------------------------------------


def test_create_queue_links_a_longer_lived_dead_letter_queue(
    sqs_settings: Settings, sqs: Any
) -> None:
    url = create_queue("jobs", max_receive_count=4, visibility_timeout_s=120, settings=sqs_settings)

    queue = attributes(sqs, url)
    policy = json.loads(queue["RedrivePolicy"])
    dlq_url = sqs.get_queue_url(QueueName="jobs-dlq")["QueueUrl"]
    dlq = attributes(sqs, dlq_url)
    assert url.endswith("/jobs")
    assert policy == {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": 4}
    assert int(queue["MessageRetentionPeriod"]) == QUEUE_RETENTION_S
    assert int(dlq["MessageRetentionPeriod"]) == DEAD_LETTER_RETENTION_S > QUEUE_RETENTION_S
    assert queue["ReceiveMessageWaitTimeSeconds"] == "20"
    assert queue["VisibilityTimeout"] == "120"
    assert "RedrivePolicy" not in dlq


def test_create_queue_defaults_come_from_settings_and_it_is_idempotent(
    sqs_settings: Settings, sqs: Any
) -> None:
    settings = sqs_settings.with_(max_receive_count=7, visibility_timeout_s=45)

    first = create_queue("jobs", settings=settings)
    again = create_queue("jobs", settings=settings)

    assert first == again
    assert json.loads(attributes(sqs, first)["RedrivePolicy"])["maxReceiveCount"] == 7
    assert attributes(sqs, first)["VisibilityTimeout"] == "45"


def test_create_fifo_queue_names_both_queues_fifo(sqs_settings: Settings, sqs: Any) -> None:
    url = create_queue("jobs", fifo=True, settings=sqs_settings)

    dlq_url = sqs.get_queue_url(QueueName="jobs-dlq.fifo")["QueueUrl"]
    assert url.endswith("/jobs.fifo")
    assert attributes(sqs, url)["FifoQueue"] == "true"
    assert attributes(sqs, dlq_url)["FifoQueue"] == "true"


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("jobs", {"max_receive_count": 1}),  # one crash would dead-letter a good job
        ("jobs", {"visibility_timeout_s": MAX_VISIBILITY_TIMEOUT_S + 1}),
        ("bad name!", {}),
        ("x" * 77, {}),  # its DLQ name would pass 80 characters
    ],
)
def test_create_queue_rejects_what_sqs_or_safety_forbids(
    sqs_settings: Settings, sqs: Any, name: str, changes: dict[str, int]
) -> None:
    with pytest.raises(ConfigError):
        create_queue(name, settings=sqs_settings.with_(**changes))
    assert sqs.list_queues().get("QueueUrls", []) == []


def test_create_queue_with_other_attributes_than_the_existing_one_fails(
    sqs_settings: Settings,
) -> None:
    create_queue("jobs", visibility_timeout_s=30, settings=sqs_settings)
    with pytest.raises(ConfigError, match="already exists"):
        create_queue("jobs", visibility_timeout_s=31, settings=sqs_settings)


def test_delete_queue_deletes_its_own_dead_letter_queue_only(
    sqs_settings: Settings, sqs: Any
) -> None:
    url = create_queue("jobs", settings=sqs_settings)
    shared_dlq = sqs.create_queue(QueueName="shared-dlq")["QueueUrl"]
    arn = attributes(sqs, shared_dlq)["QueueArn"]
    other = sqs.create_queue(
        QueueName="other",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
        },
    )["QueueUrl"]

    deleted = delete_queue(url, sqs_settings)
    deleted_other = delete_queue(other, sqs_settings)

    assert [u.rsplit("/", 1)[1] for u in deleted] == ["jobs", "jobs-dlq"]
    assert deleted_other == [other]
    assert sqs.list_queues()["QueueUrls"] == [shared_dlq]
    with pytest.raises(QueueNotFound):
        delete_queue(url, sqs_settings)


# --- opening: attributes, errors, client configuration ------------------------------------


def test_missing_queue_is_one_clear_error_naming_it(
    sqs_settings: Settings, sqs_endpoint: str
) -> None:
    url = f"{sqs_endpoint}/123456789012/no-such-queue"

    with pytest.raises(QueueNotFound) as caught:
        open_queue(url, sqs_settings)

    assert url in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 78


def test_queue_url_alone_reaches_a_local_server(sqs_settings: Settings) -> None:
    url = create_queue("jobs", settings=sqs_settings)

    queue = open_queue(url, Settings())  # no endpoint, no region: both from the URL
    try:
        queue.send(Outgoing("hello"))
        assert [r.body for r in queue.receive(1, wait_s=1)] == ["hello"]
    finally:
        queue.close()


def test_attributes_are_read_once_and_the_size_limit_enforced(
    sqs_settings: Settings, sqs: Any, open_sqs: Callable[..., SQSQueue]
) -> None:
    url = create_queue("jobs", max_receive_count=4, settings=sqs_settings)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1024"})

    queue = open_sqs(url, max_receive_count=9)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "2048"})
    queue.send(Outgoing("x" * 896))
    with pytest.raises(MessageTooLarge):
        queue.send(Outgoing("x" * 897))  # the last 128 bytes are kept for a dead letter
    queue.stats()

    assert queue.size_limit_bytes == 1024  # as it was when opened
    assert queue.max_message_bytes == 1024 - 128
    assert queue.max_receive_count == 4  # the RedrivePolicy's, not the settings'
    counts = queue.request_counts()
    assert counts["GetQueueAttributes"] == 1 + 2  # the open, then stats: queue and DLQ
    assert counts["SendMessageBatch"] == 1  # the oversized message was never sent


def test_batches_respect_the_total_size_limit(
    sqs_settings: Settings, sqs: Any, open_sqs: Callable[..., SQSQueue]
) -> None:
    url = create_queue("jobs", settings=sqs_settings)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1024"})
    queue = open_sqs(url)

    ids = queue.send_batch([Outgoing(f"{i}" + "x" * 399) for i in range(10)])

    assert len(set(ids)) == 10
    assert queue.request_counts()["SendMessageBatch"] == 5  # two 400-byte bodies per batch
    assert queue.stats().visible == 10


def test_client_waits_longer_than_the_longest_long_poll(sqs_settings: Settings) -> None:
    client = make_client(Endpoint.for_settings(sqs_settings))
    try:
        config = client.meta.config
        assert config.read_timeout > MAX_WAIT_S
        assert config.retries is not None and config.retries["mode"] == "standard"
    finally:
        client.close()


@pytest.mark.slow  # one real 20 s long poll
def test_a_long_poll_of_twenty_seconds_ends_without_a_read_timeout(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", settings=sqs_settings))

    assert queue.receive(10, wait_s=MAX_WAIT_S) == []
    assert queue.request_counts()["ReceiveMessage"] == 1  # no retry after a timeout


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-3.amazonaws.com/123456789012/jobs", "eu-west-3"),
        ("https://sqs.us-gov-west-1.amazonaws.com/123456789012/jobs", "us-gov-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/jobs", "cn-north-1"),
        ("https://ap-south-1.queue.amazonaws.com/123456789012/jobs", "ap-south-1"),
        ("https://queue.amazonaws.com/123456789012/jobs", "us-east-1"),
        ("http://127.0.0.1:4566/000000000000/jobs", None),
        ("https://sqs.example.com/123/jobs", None),
    ],
)
def test_region_comes_from_an_aws_queue_url(url: str, region: str | None) -> None:
    assert parse_queue_url(url).region == region


def test_endpoint_for_aws_and_local_urls() -> None:
    settings = Settings(region="eu-central-1")
    aws = Endpoint.for_queue("https://sqs.eu-west-3.amazonaws.com/1/jobs", settings)
    local = Endpoint.for_queue("http://127.0.0.1:9/1/jobs", settings)
    forced = Endpoint.for_queue(
        "http://127.0.0.1:9/1/jobs", settings.with_(endpoint_url="http://x:1")
    )

    assert (aws.endpoint_url, aws.region) == (None, "eu-west-3")
    assert (local.endpoint_url, local.region) == ("http://127.0.0.1:9", "eu-central-1")
    assert forced.endpoint_url == "http://x:1"


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": "told so"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "ReceiveMessage",
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("AccessDenied", 403), AccessDenied),
        (client_error("AWS.SimpleQueueService.NonExistentQueue", 400), QueueNotFound),
        (client_error("QueueDoesNotExist", 400), QueueNotFound),
        (client_error("ThrottlingException", 400), TransientQueueError),
        (client_error("InternalError", 500), TransientQueueError),
        (client_error("InvalidParameterValue", 400), QueueError),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), TransientQueueError),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), TransientQueueError),
        (botocore.exceptions.NoCredentialsError(), ConfigError),
    ],
)
def test_aws_errors_become_one_line_conveyor_errors(exc: Exception, kind: type) -> None:
    error = translate(exc, "ReceiveMessage", "https://sqs.eu-west-3.amazonaws.com/1/jobs")

    assert type(error) is kind
    assert "\n" not in error.message
    assert "sqs.eu-west-3.amazonaws.com/1/jobs" in error.message or kind is ConfigError


def test_access_denied_names_the_missing_permission() -> None:
    error = translate(client_error("AccessDenied", 403), "DeleteMessageBatch", "q-url")

    assert isinstance(error, AccessDenied) and error.exit_code == 78
    assert "sqs:DeleteMessageBatch" in error.message and "q-url" in error.message


def test_unreachable_endpoint_is_transient(sqs_settings: Settings) -> None:
    # A port nothing listens on; connection refusals are retried, so this takes seconds.
    url = "http://127.0.0.1:9/123456789012/jobs"
    with pytest.raises(TransientQueueError, match="cannot reach SQS"):
        SQSQueue(url, sqs_settings.with_(endpoint_url=None))


# --- batches -----------------------------------------------------------------------------


def test_invalid_receipt_handles_are_reported_not_dropped(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", settings=sqs_settings))
    queue.send_batch([Outgoing(str(i)) for i in range(12)])
    held = []
    while len(held) < 12:
        held += queue.receive(10, wait_s=1)
    leases = [r.lease for r in held]

    acked = queue.ack_batch([*leases[:6], "bogus-1", *leases[6:], "bogus-2"])
    extended = queue.extend_batch(["bogus-3", leases[0]], 60)

    assert sorted(acked.ok) == sorted(leases)
    assert set(acked.failed) == {"bogus-1", "bogus-2"}
    assert all("ReceiptHandleIsInvalid" in why for why in acked.failed.values())
    assert extended.ok == [] and set(extended.failed) == {"bogus-3", leases[0]}
    assert queue.request_counts()["DeleteMessageBatch"] == 2  # 14 entries: 10 + 4


def fake_batch(responses: list[Mapping[str, Any]]) -> tuple[Callable[..., Any], list[list[str]]]:
    """A batch call that answers from ``responses`` and records the ids sent each time."""
    calls: list[list[str]] = []

    def send(entries: list[Mapping[str, Any]]) -> Mapping[str, Any]:
        calls.append([e["Id"] for e in entries])
        return responses[len(calls) - 1]

    return send, calls


def test_entries_failed_without_sender_fault_are_retried() -> None:
    send, calls = fake_batch(
        [
            {
                "Successful": [{"Id": "0"}],
                "Failed": [
                    {"Id": "1", "SenderFault": False, "Code": "InternalError"},
                    {"Id": "2", "SenderFault": True, "Code": "InvalidParameterValue"},
                ],
            },
            {"Successful": [{"Id": "1"}], "Failed": []},
        ]
    )
    entries = [{"Id": str(i)} for i in range(3)]

    ok, failed = run_batch("DeleteMessageBatch", "q", entries, send)

    assert calls == [["0", "1", "2"], ["1"]]
    assert sorted(ok) == ["0", "1"]
    assert failed == {"2": "InvalidParameterValue"}


def test_entries_failing_on_every_try_or_missing_from_the_answer_are_reported() -> None:
    throttled = {"Id": "0", "SenderFault": False, "Code": "ThrottlingException", "Message": "m"}
    send, calls = fake_batch([{"Successful": [], "Failed": [throttled]}] * BATCH_ATTEMPTS)
    missing, _ = fake_batch([{"Successful": [], "Failed": []}])

    _, failed = run_batch("SendMessageBatch", "q", [{"Id": "0"}], send)
    _, lost = run_batch("SendMessageBatch", "q", [{"Id": "7"}], missing)

    assert len(calls) == BATCH_ATTEMPTS
    assert failed == {"0": "ThrottlingException: m"}
    assert set(lost) == {"7"}


# --- leases: expiry and the 12-hour cap ----------------------------------------------------


def test_extension_past_twelve_hours_since_receive_fails_clearly(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    clock = Clock()
    queue = open_sqs(create_queue("jobs", settings=sqs_settings), clock=clock)
    queue.send(Outgoing("very long job"))
    (held,) = queue.receive(1, wait_s=1, visibility_timeout_s=MAX_VISIBILITY_TIMEOUT_S)

    clock.now_s += MAX_VISIBILITY_TIMEOUT_S - 200  # 200 s of the cap left
    queue.extend(held.lease, 100)
    requests = queue.request_counts()["ChangeMessageVisibilityBatch"]
    too_far = queue.extend_batch([held.lease], 300)
    with pytest.raises(LeaseCapReached, match="12-hour"):
        queue.extend(held.lease, 300)

    assert too_far.ok == [] and "12-hour" in too_far.failed[held.lease]
    assert queue.request_counts()["ChangeMessageVisibilityBatch"] == requests  # refused here
    assert issubclass(LeaseCapReached, LeaseLost)
    queue.release(held.lease, delay_s=900)  # shortened to end within the cap
    assert queue.stats().in_flight == 1


def test_an_expired_lease_cannot_be_extended(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    clock = Clock()
    queue = open_sqs(create_queue("jobs", settings=sqs_settings), clock=clock)
    queue.send(Outgoing("job"))
    (held,) = queue.receive(1, wait_s=1, visibility_timeout_s=600)
    queue.extend(held.lease, 30)

    clock.now_s += 31
    with pytest.raises(LeaseLost, match="expired"):
        queue.extend(held.lease, 30)


# --- FIFO queues ----------------------------------------------------------------------------


def test_fifo_sends_an_identical_job_once_within_five_minutes(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", fifo=True, settings=sqs_settings))

    queue.send(Outgoing('{"job": 1}', dedup_id="job-a"))
    queue.send(Outgoing('{"job": 1, "resubmitted": true}', dedup_id="job-a"))
    queue.send_batch([Outgoing("same body"), Outgoing("same body")])  # dedup by body
    queue.send(Outgoing('{"job": 2}', dedup_id="job-b"))

    received = []
    while batch := queue.receive(10, wait_s=1):
        received += batch
        queue.ack_batch([r.lease for r in batch])
    assert sorted(r.body for r in received) == sorted(['{"job": 1}', '{"job": 2}', "same body"])


def test_fifo_jobs_run_in_parallel_unless_grouped(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", fifo=True, settings=sqs_settings))
    queue.send_batch([Outgoing(f"job-{i}", dedup_id=f"d{i}") for i in range(3)])
    queue.send_batch([Outgoing(f"ordered-{i}", dedup_id=f"o{i}", group_id="g") for i in range(3)])

    first = queue.receive(10, wait_s=1)

    # Each job is its own group; one group's messages come one batch at a time, in order.
    bodies = [r.body for r in first]
    assert {"job-0", "job-1", "job-2"} <= set(bodies)
    ordered = [b for b in bodies if b.startswith("ordered")]
    assert ordered == [f"ordered-{i}" for i in range(len(ordered))] and ordered


def test_fifo_release_with_delay_and_delay_on_send(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", fifo=True, settings=sqs_settings))
    with pytest.raises(ConfigError, match="FIFO"):
        queue.send(Outgoing("later", delay_s=5, dedup_id="x"))
    queue.send(Outgoing("retry me", dedup_id="y"))
    (held,) = queue.receive(1, wait_s=1)

    queue.release(held.lease, delay_s=30)

    assert queue.receive(1, wait_s=1) == []
    assert queue.stats().in_flight == 1


def test_fifo_dead_letter_and_redrive(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", fifo=True, settings=sqs_settings))
    queue.send(Outgoing("bad", dedup_id="bad-job"))
    (held,) = queue.receive(1, wait_s=1)

    queue.dead_letter(held.lease, "no ID column")
    (dead,) = queue.dead_letters()
    moved = queue.redrive()
    (again,) = queue.receive(1, wait_s=1)

    assert (dead.body, dead.reason, dead.receive_count) == ("bad", "no ID column", 1)
    assert moved == 1
    assert (again.body, again.receive_count) == ("bad", 1)


# --- dead letters --------------------------------------------------------------------------


def test_dead_letters_moved_by_sqs_show_their_receive_count(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", max_receive_count=2, settings=sqs_settings))
    queue.send(Outgoing("poison"))
    for _ in range(2):
        (held,) = queue.receive(1, wait_s=1)
        queue.release(held.lease)
    assert queue.receive(1, wait_s=1) == []  # SQS moves it on this receive

    (dead,) = queue.dead_letters()
    (listed_again,) = queue.dead_letters()  # listing does not consume

    assert (dead.body, dead.reason, dead.receive_count) == ("poison", None, 2)
    assert listed_again.message_id == dead.message_id


def test_a_queue_without_dead_letter_queue_still_works(
    sqs_settings: Settings, sqs: Any, open_sqs: Callable[..., SQSQueue]
) -> None:
    url = sqs.create_queue(QueueName="tutorial-queue")["QueueUrl"]  # as the tutorial does
    queue = open_sqs(url, max_receive_count=6)
    queue.send(Outgoing("job"))
    (held,) = queue.receive(1, wait_s=1)

    with pytest.raises(ConfigError, match="no dead-letter queue"):
        queue.dead_letter(held.lease, "bad")
    assert queue.max_receive_count == 6
    assert queue.stats().dead_lettered == 0
    assert queue.dead_letters() == [] and queue.redrive() == 0
    assert queue.ack(held.lease) is True


def test_dead_letter_needs_a_lease_from_this_instance(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    url = create_queue("jobs", settings=sqs_settings)
    receiver, other = open_sqs(url), open_sqs(url)
    receiver.send(Outgoing("job"))
    (held,) = receiver.receive(1, wait_s=1)

    with pytest.raises(LeaseLost, match="unknown"):
        other.dead_letter(held.lease, "bad")
    assert other.ack(held.lease) is True  # SQS itself accepts the lease from anyone


# --- cost ----------------------------------------------------------------------------------


def test_requests_per_job_in_a_steady_pipeline(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    url = create_queue("jobs", settings=sqs_settings)
    submitter, worker = open_sqs(url), open_sqs(url)
    jobs = 50

    submitter.send_batch([Outgoing(f'{{"job": {i}}}') for i in range(jobs)])
    done = 0
    while done < jobs:
        batch = worker.receive(10, wait_s=1)
        done += len(worker.ack_batch([r.lease for r in batch]).ok)

    counts = {"submit": submitter.request_counts(), "worker": worker.request_counts()}
    total = sum(sum(c.values()) for c in counts.values())
    assert counts["submit"] == {"GetQueueAttributes": 1, "SendMessageBatch": 5}
    assert counts["worker"]["DeleteMessageBatch"] == 5
    assert counts["worker"]["ReceiveMessage"] <= 6  # moto may split a batch
    assert total / jobs <= 0.35, counts


def test_an_idle_receive_costs_one_request(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", settings=sqs_settings))

    assert queue.receive(10, wait_s=1) == []
    assert queue.request_counts() == {"GetQueueAttributes": 1, "ReceiveMessage": 1}


# --- queue URLs of other shapes (LocalStack's path strategy, gateways) ----------------------

MOTO_ACCOUNT = "123456789012"


def prefixed_url(endpoint: str, name: str, region: str = REGION) -> str:
    """The queue's URL as LocalStack's path strategy shapes it; moto routes by the name in
    the last segment, so it serves it too."""
    return f"{endpoint}/queue/{region}/{MOTO_ACCOUNT}/{name}"


def test_a_queue_url_with_a_path_prefix_works_for_every_operation(
    sqs_settings: Settings, sqs_endpoint: str
) -> None:
    create_queue("jobs", settings=sqs_settings)
    url = prefixed_url(sqs_endpoint, "jobs")

    queue = open_queue(url, Settings())  # endpoint and region from the URL alone
    try:
        assert isinstance(queue, SQSQueue) and queue.name == "jobs" and queue.url == url
        queue.send_batch([Outgoing("good"), Outgoing("bad")])
        held = {r.body: r for r in queue.receive(10, wait_s=1)}
        queue.extend(held["good"].lease, 30)
        assert queue.ack_batch([held["good"].lease]).ok == [held["good"].lease]
        queue.dead_letter(held["bad"].lease, "no ID column")
        stats = queue.stats()
        (dead,) = queue.dead_letters()
        assert (stats.visible, stats.in_flight, stats.dead_lettered) == (0, 0, 1)
        assert (dead.body, dead.reason) == ("bad", "no ID column")
        assert queue.redrive() == 1
        assert [r.body for r in queue.receive(1, wait_s=1)] == ["bad"]
        assert queue.purge() == -1
    finally:
        queue.close()


def test_the_cli_takes_a_queue_url_with_a_path_prefix(
    sqs_settings: Settings, sqs_endpoint: str, tmp_path: Path
) -> None:
    from tests.e2e.helpers import run

    create_queue("jobs", settings=sqs_settings)
    url = prefixed_url(sqs_endpoint, "jobs")
    env = {
        **fake_aws_env(sqs_endpoint, tmp_path),
        "PATH": os.environ.get("PATH", ""),
        "CONVEYOR_STORAGE": str(tmp_path / "storage"),
        "CONVEYOR_QUEUE_URL": url,
    }
    del env["AWS_ENDPOINT_URL_SQS"]  # the URL alone says where the server is
    (tmp_path / "good.csv").write_text("ID,Value\n1,2\n")
    (tmp_path / "bad.csv").write_text("ID,Value\n1,two\n")
    worker = ("worker", "--until-empty", "--wait-s", "1", "--empty-polls", "1")

    run("submit", tmp_path / "good.csv", tmp_path / "bad.csv", env=env)
    run(*worker, env=env)  # one job succeeds, the other is dead-lettered
    stats = run("queue", "stats", env=env)
    listed = run("dlq", "list", env=env)
    redriven = run("dlq", "redrive", env=env)
    purged = run("queue", "purge", "--yes", env=env)

    assert "'two' is not a finite number" in listed.stdout, listed.stdout
    assert "1" in redriven.stdout, redriven.stdout
    for done in (stats, listed, redriven, purged):
        assert done.returncode == 0 and "Traceback" not in done.stderr


def test_the_dead_letter_queue_is_found_in_the_region_of_its_arn(
    sqs_settings: Settings, sqs_endpoint: str, open_sqs: Callable[..., SQSQueue]
) -> None:
    # Given a dead-letter queue in another region than its source queue's client signs for
    # (moto keeps regions apart, as AWS does: a client for the wrong region cannot see it)
    endpoint = Endpoint(sqs_endpoint, REGION)
    far = make_client(endpoint.in_region("eu-west-1"))
    dlq_url = far.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    arn = far.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    source = open_sqs(create_queue("jobs", settings=sqs_settings))
    asked: list[str] = []

    def client_for(region: str) -> Any:
        asked.append(region)
        return far if region == "eu-west-1" else source._client

    dead = DeadLetterQueue(
        source._client, arn["Attributes"]["QueueArn"], source.url, False, client_for
    )
    try:
        # When a message is dead-lettered there and listed
        dead.put("job", "boom", 3, message_id="m1", group_id=None)
        (letter,) = dead.peek(10)
    finally:
        far.close()

    # Then every call went to the ARN's region, and the URL came from GetQueueUrl there
    assert dead.url == dlq_url
    assert set(asked) == {"eu-west-1"}
    assert (letter.body, letter.reason, letter.receive_count) == ("job", "boom", 3)


# --- dead letters that fit whatever happens -----------------------------------------------

_XML_CHARS = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def strict_like_aws(client: Any, limit: int) -> None:
    """Make ``client`` refuse sends as AWS does and moto does not: a message whose body and
    attributes (names, types and values) exceed ``limit`` bytes, or that holds characters
    outside XML's set, fails with AWS's error codes before reaching the server."""

    def refuse(code: str, message: str, action: str) -> botocore.exceptions.ClientError:
        error = {"Error": {"Code": code, "Message": message}}
        return botocore.exceptions.ClientError(
            {**error, "ResponseMetadata": {"HTTPStatusCode": 400}},  # type: ignore[typeddict-item]
            action,
        )

    def check(params: dict[str, Any], model: Any, **_: Any) -> None:
        entries = params.get("Entries", [params])
        for entry in entries:
            attributes = entry.get("MessageAttributes", {})
            texts = [entry["MessageBody"], *(a["StringValue"] for a in attributes.values())]
            size = len(entry["MessageBody"].encode()) + sum(
                len(name.encode()) + len(a["DataType"].encode()) + len(a["StringValue"].encode())
                for name, a in attributes.items()
            )
            if size > limit:
                raise refuse(
                    "InvalidParameterValue",
                    f"One or more parameters are invalid. Reason: Message must be shorter "
                    f"than {limit} bytes.",
                    model.name,
                )
            if not all(_XML_CHARS.fullmatch(text) for text in texts):
                raise refuse("InvalidMessageContents", "Invalid characters found.", model.name)

    for action in ("SendMessage", "SendMessageBatch"):
        client.meta.events.register(f"before-parameter-build.sqs.{action}", check)


@pytest.fixture
def strict_queue(
    sqs_settings: Settings, sqs: Any
) -> Iterator[Callable[[int], tuple[SQSQueue, Any]]]:
    """``strict_queue(limit)``: a queue and dead-letter queue of MaximumMessageSize
    ``limit``, opened by conveyor through a client that refuses what AWS refuses; and a
    plain client on the same queue, for another producer that sends what it likes."""
    opened: list[SQSQueue] = []

    def factory(limit: int) -> tuple[SQSQueue, Any]:
        url = create_queue("jobs", settings=sqs_settings)
        dlq = sqs.get_queue_url(QueueName="jobs-dlq")["QueueUrl"]
        for queue_url in (url, dlq):
            sqs.set_queue_attributes(
                QueueUrl=queue_url, Attributes={"MaximumMessageSize": str(limit)}
            )
        client = make_client(Endpoint.for_queue(url, sqs_settings))
        strict_like_aws(client, limit)
        queue = SQSQueue(url, sqs_settings, client=client)
        opened.append(queue)
        return queue, sqs

    yield factory
    for queue in opened:
        queue.close()


LONG_REASON = "\x1b[31mValueError\x1b[0m: row 7: " + "bad value " * 120  # 1,000+ characters


@pytest.mark.parametrize(
    ("spare", "reason_kept"),
    [
        (ATTRIBUTE_BUDGET_BYTES, "whole"),  # the largest body conveyor itself sends
        (200, "shortened"),  # another producer's body, near the limit
        (10, "none"),  # not even the receive count fits: the body goes alone
    ],
)
def test_a_message_near_the_size_limit_is_dead_lettered_all_the_same(
    strict_queue: Callable[[int], tuple[SQSQueue, Any]], spare: int, reason_kept: str
) -> None:
    # Given a 256 KiB queue and a message whose body leaves only `spare` bytes
    limit = 262_144
    queue, producer = strict_queue(limit)
    body = "x" * (limit - spare)
    producer.send_message(QueueUrl=queue.url, MessageBody=body)
    (held,) = queue.receive(1, wait_s=1)

    # When it is dead-lettered with a long reason full of ANSI colour codes
    queue.dead_letter(held.lease, LONG_REASON)

    # Then it reaches the dead-letter queue, body intact, with what of the reason fits
    (dead,) = queue.dead_letters()
    assert dead.body == body
    assert queue.stats().visible == 0
    clean = LONG_REASON.replace("\x1b[31m", "").replace("\x1b[0m", "").strip()
    if reason_kept == "whole":
        assert dead.reason == clean
        assert dead.receive_count == 1
    elif reason_kept == "shortened":
        assert dead.reason is not None and dead.reason.endswith("\u2026")
        assert clean.startswith(dead.reason.removesuffix("\u2026"))
        assert dead.receive_count == 1
    else:
        assert dead.reason is None


def test_conveyor_sends_only_bodies_it_can_dead_letter_with_their_reason(
    strict_queue: Callable[[int], tuple[SQSQueue, Any]],
) -> None:
    queue, _ = strict_queue(262_144)

    with pytest.raises(MessageTooLarge):
        queue.send(Outgoing("x" * (queue.max_message_bytes + 1)))
    queue.send(Outgoing("x" * queue.max_message_bytes))
    (held,) = queue.receive(1, wait_s=1)
    queue.dead_letter(held.lease, "r" * 5_000)

    (dead,) = queue.dead_letters()
    assert queue.max_message_bytes == 262_144 - ATTRIBUTE_BUDGET_BYTES
    assert dead.reason is not None and len(dead.reason.encode()) == MAX_REASON_BYTES


def test_a_reason_with_control_characters_is_sanitised_not_refused(
    strict_queue: Callable[[int], tuple[SQSQueue, Any]],
) -> None:
    queue, _ = strict_queue(262_144)
    queue.send(Outgoing('{"job": 1}'))
    (held,) = queue.receive(1, wait_s=1)

    queue.dead_letter(held.lease, "\x1b[1;31mboom\x1b[0m\x00 at \x07row\ud800 3\n")

    (dead,) = queue.dead_letters()
    assert dead.reason == "boom\ufffd at \ufffdrow\ufffd 3"


def test_a_dead_letter_the_server_still_refuses_goes_without_attributes(
    sqs_settings: Settings, sqs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a server that counts sizes more strictly than its MaximumMessageSize says
    url = create_queue("jobs", settings=sqs_settings)
    dlq = sqs.get_queue_url(QueueName="jobs-dlq")["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=dlq, Attributes={"MaximumMessageSize": "262144"})
    client = make_client(Endpoint.for_queue(url, sqs_settings))
    strict_like_aws(client, 262_144 - 3_000)
    queue = SQSQueue(url, sqs_settings, client=client)
    try:
        sqs.send_message(QueueUrl=url, MessageBody="y" * (262_144 - 3_000))
        (held,) = queue.receive(1, wait_s=1)

        # When the message is dead-lettered, its attributes no longer fitting
        queue.dead_letter(held.lease, "boom")

        # Then it went without them rather than not at all
        (dead,) = queue.dead_letters()
        assert (len(dead.body), dead.reason) == (262_144 - 3_000, None)
        assert "without its reason" in caplog.text and "shorter than" in caplog.text
    finally:
        queue.close()


def test_dead_letters_are_purged_all_at_once_never_by_age(
    sqs_settings: Settings, open_sqs: Callable[..., SQSQueue]
) -> None:
    queue = open_sqs(create_queue("jobs", settings=sqs_settings))
    queue.send_batch([Outgoing("a"), Outgoing("b")])
    for held in queue.receive(10, wait_s=1):
        queue.dead_letter(held.lease, "bad")

    with pytest.raises(ConfigError, match="by age itself"):
        queue.purge_dead_letters(older_than_s=3600)
    assert queue.stats().dead_lettered == 2
    assert queue.purge_dead_letters() == -1
    assert queue.stats().dead_lettered == 0 and queue.dead_letters() == []
