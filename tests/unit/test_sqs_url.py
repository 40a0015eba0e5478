"""SQS queue URLs of every shape servers return, ARNs, the dead-letter naming rule, and what
a dead letter's attributes may hold (size and characters): no server needed."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.errors import ConfigError
from conveyor.k8s.aws import SqsQueue
from conveyor.k8s.config import Deployment
from conveyor.queues.sqs_client import Endpoint
from conveyor.queues.sqs_dlq import (
    ATTRIBUTE_BUDGET_BYTES,
    MAX_REASON_BYTES,
    REASON_ATTRIBUTE,
    RECEIVE_COUNT_ATTRIBUTE,
    attributes_bytes,
    body_limit_bytes,
    dead_letter_attributes,
    shorten,
    sqs_text,
)
from conveyor.queues.sqs_url import dead_letter_name, parse_queue_arn, parse_queue_url
from conveyor.settings import Settings as ConveyorSettings

ACCOUNT = "123456789012"

# (url, name, region, account, aws, endpoint origin)
SHAPES = [
    pytest.param(
        f"https://sqs.eu-west-3.amazonaws.com/{ACCOUNT}/jobs",
        "jobs",
        "eu-west-3",
        ACCOUNT,
        True,
        id="aws",
    ),
    pytest.param(
        f"https://sqs.cn-north-1.amazonaws.com.cn/{ACCOUNT}/jobs",
        "jobs",
        "cn-north-1",
        ACCOUNT,
        True,
        id="aws-china",
    ),
    pytest.param(
        f"https://sqs-fips.us-gov-west-1.amazonaws.com/{ACCOUNT}/jobs.fifo",
        "jobs.fifo",
        "us-gov-west-1",
        ACCOUNT,
        True,
        id="aws-fips-fifo",
    ),
    pytest.param(
        f"https://ap-south-1.queue.amazonaws.com/{ACCOUNT}/jobs",
        "jobs",
        "ap-south-1",
        ACCOUNT,
        True,
        id="aws-legacy-host",
    ),
    pytest.param(
        f"https://queue.amazonaws.com/{ACCOUNT}/jobs",
        "jobs",
        "us-east-1",
        ACCOUNT,
        True,
        id="aws-oldest",
    ),
    pytest.param(
        "http://127.0.0.1:5000/123456789012/jobs", "jobs", None, ACCOUNT, False, id="host-port"
    ),
    pytest.param(
        "http://localhost:4566/queue/us-east-1/000000000000/jobs",
        "jobs",
        "us-east-1",
        "000000000000",
        False,
        id="localstack-path",
    ),
    pytest.param(
        "http://sqs.eu-central-1.localhost.localstack.cloud:4566/000000000000/jobs",
        "jobs",
        "eu-central-1",
        "000000000000",
        False,
        id="localstack-standard",
    ),
    pytest.param(
        "http://eu-central-1.queue.localhost.localstack.cloud:4566/000000000000/jobs",
        "jobs",
        "eu-central-1",
        "000000000000",
        False,
        id="localstack-domain",
    ),
    pytest.param(
        "http://sqs.ap-northeast-2.example.test:9324/000000000000/jobs",
        "jobs",
        "ap-northeast-2",
        "000000000000",
        False,
        id="sqs-region-host",
    ),
    pytest.param(
        "http://elasticmq:9324/queue/jobs", "jobs", None, None, False, id="elasticmq-no-account"
    ),
    pytest.param(
        "http://gateway.test/prefix/deeper/us-west-2/210987654321/jobs/",
        "jobs",
        "us-west-2",
        "210987654321",
        False,
        id="prefix-and-trailing-slash",
    ),
]


@pytest.mark.parametrize(("url", "name", "region", "account", "aws"), SHAPES)
def test_every_url_shape_gives_name_region_and_account(
    url: str, name: str, region: str | None, account: str | None, aws: bool
) -> None:
    parsed = parse_queue_url(url)

    assert (parsed.name, parsed.region, parsed.account_id, parsed.aws) == (
        name,
        region,
        account,
        aws,
    )
    assert parsed.url == url  # sent verbatim, never rebuilt
    assert parsed.fifo == name.endswith(".fifo")


@pytest.mark.parametrize(("url", "name", "region", "account", "aws"), SHAPES)
def test_the_endpoint_takes_the_urls_region_before_the_configured_one(
    url: str, name: str, region: str | None, account: str | None, aws: bool
) -> None:
    endpoint = Endpoint.for_queue(url, ConveyorSettings(region="sa-east-1"))

    assert endpoint.region == (region or "sa-east-1")
    # AWS's own hosts need no endpoint; any other server is reached at the URL's origin.
    origin = url.split("/", 3)[:3]
    assert endpoint.endpoint_url == (None if aws else "/".join(origin))


def test_a_configured_endpoint_wins_over_the_urls_origin() -> None:
    settings = ConveyorSettings(endpoint_url="http://proxy:1")
    url = "http://localhost:4566/queue/us-east-1/000000000000/jobs"

    endpoint = Endpoint.for_queue(url, settings)

    assert (endpoint.endpoint_url, endpoint.region) == ("http://proxy:1", "us-east-1")
    assert endpoint.in_region("eu-west-1") == Endpoint("http://proxy:1", "eu-west-1")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///tmp/q.db",
        "ftp://host/1/jobs",
        "https://sqs.us-east-1.amazonaws.com",
        "https://sqs.us-east-1.amazonaws.com/",
        "http:///123456789012/jobs",
        "http://[::1/1/jobs",
        "jobs",
    ],
)
def test_what_is_not_a_queue_url_is_one_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="not an SQS queue URL") as caught:
        parse_queue_url(url)
    assert caught.value.exit_code == 78 and "\n" not in caught.value.message


def test_arns_are_read_whole() -> None:
    arn = parse_queue_arn(f"arn:aws-cn:sqs:cn-north-1:{ACCOUNT}:jobs-dlq.fifo")

    assert (arn.partition, arn.region, arn.account_id, arn.name) == (
        "aws-cn",
        "cn-north-1",
        ACCOUNT,
        "jobs-dlq.fifo",
    )
    assert str(arn) == f"arn:aws-cn:sqs:cn-north-1:{ACCOUNT}:jobs-dlq.fifo"
    for bad in ("", "arn:aws:sqs:us-east-1:1:jobs", f"arn:aws:sns:us-east-1:{ACCOUNT}:t"):
        with pytest.raises(ConfigError, match="not an SQS queue ARN"):
            parse_queue_arn(bad)


@pytest.mark.parametrize(
    ("name", "dlq"),
    [("jobs", "jobs-dlq"), ("jobs.fifo", "jobs-dlq.fifo"), ("a.fifo.fifo", "a.fifo-dlq.fifo")],
)
def test_one_dead_letter_naming_rule_for_queues_and_kubernetes(name: str, dlq: str) -> None:
    url = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{name}"

    assert dead_letter_name(name) == dlq
    assert parse_queue_url(url).dead_letter_name == dlq
    deploy = Deployment()
    queue = SqsQueue.parse(url)
    assert deploy.dead_letter_queue(queue).name == dlq


@pytest.mark.parametrize(
    ("url", "arn"),
    [
        (
            "http://localhost:4566/queue/eu-west-1/000000000000/jobs",
            "arn:aws:sqs:eu-west-1:000000000000:jobs",
        ),
        (
            "http://sqs.eu-west-1.localhost.localstack.cloud:4566/000000000000/jobs",
            "arn:aws:sqs:eu-west-1:000000000000:jobs",
        ),
        (
            f"https://sqs.cn-north-1.amazonaws.com.cn/{ACCOUNT}/jobs",
            f"arn:aws-cn:sqs:cn-north-1:{ACCOUNT}:jobs",
        ),
    ],
)
def test_kubernetes_reads_queue_urls_with_the_same_parser(url: str, arn: str) -> None:
    # The URL's region wins over a configured one, as for the worker's client.
    assert SqsQueue.parse(url, region="us-east-2").arn == arn


# --- what a dead letter's attributes may hold -----------------------------------------------


def test_attribute_size_counts_names_types_and_values() -> None:
    attributes = dead_letter_attributes("body", "boom", 3, 262_144)

    assert attributes == {
        REASON_ATTRIBUTE: {"DataType": "String", "StringValue": "boom"},
        RECEIVE_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": "3"},
    }
    expected = len(REASON_ATTRIBUTE + "String" + "boom") + len(
        RECEIVE_COUNT_ATTRIBUTE + "Number" + "3"
    )
    assert attributes_bytes(attributes) == expected
    value = "é" * 10  # two UTF-8 bytes each
    sized = {"n": {"DataType": "String", "StringValue": value}}
    assert attributes_bytes(sized) == 1 + 6 + 20  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [1024, 65_536, 262_144, 1_048_576])
@pytest.mark.parametrize("reason_chars", [0, 10, 1_000, 5_000])
@pytest.mark.parametrize("spare", [0, 1, 20, 40, 200, 4_000])
def test_a_dead_letter_always_fits_its_queue(limit: int, reason_chars: int, spare: int) -> None:
    body = "x" * max(0, limit - spare)
    reason = ("\x1b[31mValueError\x1b[0m: bad row é " * 200)[:reason_chars]

    attributes = dead_letter_attributes(body, reason, 12, limit)

    assert len(body.encode()) + attributes_bytes(attributes) <= limit
    for value in attributes.values():
        assert sqs_text(value["StringValue"]) == value["StringValue"]
        assert value["StringValue"]  # SQS refuses an empty value
    if RECEIVE_COUNT_ATTRIBUTE in attributes:
        assert attributes[RECEIVE_COUNT_ATTRIBUTE]["StringValue"] == "12"


def test_the_reason_is_shortened_to_the_room_left_then_dropped() -> None:
    limit = 262_144
    reason = "x" * 1_000
    count_size = len(RECEIVE_COUNT_ATTRIBUTE + "Number" + "5")
    overhead = len(REASON_ATTRIBUTE + "String")

    whole = dead_letter_attributes("b" * (limit - 5_000), reason, 5, limit)
    short = dead_letter_attributes("b" * (limit - count_size - overhead - 100), reason, 5, limit)
    count_only = dead_letter_attributes("b" * (limit - count_size - overhead - 5), reason, 5, limit)
    nothing = dead_letter_attributes("b" * (limit - 10), reason, 5, limit)

    assert whole[REASON_ATTRIBUTE]["StringValue"] == reason
    shortened = short[REASON_ATTRIBUTE]["StringValue"]
    assert shortened.endswith("\u2026") and len(shortened.encode()) == 100
    assert set(count_only) == {RECEIVE_COUNT_ATTRIBUTE}  # 5 bytes of reason say nothing
    assert nothing == {}


def test_a_long_reason_is_cut_to_its_byte_cap_whole_characters_only() -> None:
    reason = "€" * 1_000  # three UTF-8 bytes each

    value = dead_letter_attributes("{}", reason, 1, 1_048_576)[REASON_ATTRIBUTE]["StringValue"]

    assert len(value.encode()) <= MAX_REASON_BYTES
    assert value == "€" * ((MAX_REASON_BYTES - 3) // 3) + "\u2026"
    assert shorten("abc", 2) == "" and shorten("abcdef", 4) == "a\u2026"


def test_every_message_a_queue_takes_can_be_dead_lettered_with_its_reason() -> None:
    for limit in (1024, 262_144, 1_048_576):
        body = "x" * body_limit_bytes(limit)
        reason = "r" * 2_000

        attributes = dead_letter_attributes(body, reason, 99, limit)

        assert REASON_ATTRIBUTE in attributes
        if limit >= 8 * ATTRIBUTE_BUDGET_BYTES:  # full-sized queues keep the whole cap
            assert len(attributes[REASON_ATTRIBUTE]["StringValue"].encode()) == MAX_REASON_BYTES
    assert body_limit_bytes(262_144) == 262_144 - ATTRIBUTE_BUDGET_BYTES


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\x1b[1;31mboom\x1b[0m", "boom"),
        ("\x1b]0;title\x07ok", "ok"),
        ("tab\tnew\nline\r", "tab\tnew\nline\r"),
        ("nul\x00 bell\x07 del\x7f", "nul\ufffd bell\ufffd del\x7f"),
        ("lone \udcff surrogate", "lone \ufffd surrogate"),
        ("bad \ufffe \uffff end", "bad \ufffd \ufffd end"),
        ("emoji \U0001f600 ok", "emoji \U0001f600 ok"),
    ],
)
def test_attribute_values_keep_to_the_characters_sqs_accepts(raw: str, clean: str) -> None:
    assert sqs_text(raw) == clean
    reason = dead_letter_attributes("{}", raw, 1, 262_144)[REASON_ATTRIBUTE]["StringValue"]
    assert reason == clean.strip()


_ALLOWED = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


@settings(max_examples=300, deadline=None)
@given(
    reason=st.text(max_size=3_000),
    limit=st.sampled_from([1024, 4096, 262_144]),
    spare=st.integers(min_value=0, max_value=3_000),
    receive_count=st.integers(min_value=1, max_value=10**9),
)
def test_any_reason_beside_any_body_fits_and_uses_allowed_characters_only(
    reason: str, limit: int, spare: int, receive_count: int
) -> None:
    body = "b" * max(0, limit - spare)

    attributes = dead_letter_attributes(body, reason, receive_count, limit)

    size = len(body) + sum(
        len(name.encode()) + len(a["DataType"].encode()) + len(a["StringValue"].encode())
        for name, a in attributes.items()
    )
    assert size <= limit
    for value in attributes.values():
        assert value["StringValue"] and _ALLOWED.fullmatch(value["StringValue"])
    if spare >= ATTRIBUTE_BUDGET_BYTES:  # what conveyor leaves free: the reason always fits
        assert REASON_ATTRIBUTE in attributes or not sqs_text(reason).strip()
