"""The IAM policies: each role gets only its own calls, on its own queues."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor.errors import ConfigError
from conveyor.k8s import render_policies, render_policy
from tests.unit.k8s.cases import (
    ACCOUNT,
    DLQ_ARN,
    OIDC,
    QUEUE,
    QUEUE_ARN,
    REGION,
    SCENARIOS,
    deployment,
)


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    assert policy["Version"] == "2012-10-17"
    return list(policy["Statement"])


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@pytest.mark.parametrize("name", ["worker", "submitter", "admin", "scaler"])
@pytest.mark.parametrize("kms", [None, f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd"])
def test_queue_policies_are_scoped_to_the_queues(name: str, kms: str | None) -> None:
    policy = render_policy(deployment(aws={"kms_key_arn": kms}), name)
    assert json.loads(json.dumps(policy)) == policy
    allowed = {QUEUE_ARN, DLQ_ARN} | ({kms} if kms else set())
    for statement in statements(policy):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action
            assert action.startswith(("sqs:", "kms:"))
        for resource in as_list(statement["Resource"]):
            assert resource in allowed


def actions_on(policy: dict[str, Any], arn: str) -> set[str]:
    return {
        action
        for statement in statements(policy)
        if arn in as_list(statement["Resource"])
        for action in as_list(statement["Action"])
    }


def test_each_role_gets_only_its_own_calls() -> None:
    deploy = SCENARIOS["csi"]
    worker = render_policy(deploy, "worker")
    assert actions_on(worker, QUEUE_ARN) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    assert actions_on(worker, DLQ_ARN) == {
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    submitter = render_policy(deploy, "submitter")
    assert actions_on(submitter, QUEUE_ARN) == {
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    assert "sqs:SendMessage" not in actions_on(submitter, DLQ_ARN)
    assert actions_on(render_policy(deploy, "scaler"), QUEUE_ARN) == {"sqs:GetQueueAttributes"}
    admin = render_policy(deploy, "admin")
    for verb in ("sqs:CreateQueue", "sqs:DeleteQueue", "sqs:PurgeQueue"):
        assert verb in actions_on(admin, QUEUE_ARN) and verb not in actions_on(worker, QUEUE_ARN)


def test_a_fifo_queue_has_a_fifo_dead_letter_queue() -> None:
    fifo = QUEUE + ".fifo"
    policy = render_policy(deployment(aws={"queue_url": fifo}), "worker")
    dlq = f"arn:aws:sqs:{REGION}:{ACCOUNT}:eks-batch-job-queue-dlq.fifo"
    assert "sqs:SendMessage" in actions_on(policy, dlq)


def test_the_trust_policy_admits_only_the_service_account() -> None:
    (statement,) = statements(render_policy(SCENARIOS["csi"], "trust"))
    provider = OIDC.removeprefix("https://")
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{provider}"
    }
    assert statement["Condition"] == {
        "StringEquals": {
            f"{provider}:sub": "system:serviceaccount:default:conveyor",
            f"{provider}:aud": "sts.amazonaws.com",
        }
    }


def test_the_refresher_policy_has_one_unavoidable_wildcard() -> None:
    policies = render_policies(SCENARIOS["pull-secret"])
    assert set(policies) == {
        "worker",
        "submitter",
        "admin",
        "scaler",
        "trust",
        "ecr-refresh",
        "ecr-refresh-trust",
    }
    wildcard = [s for s in statements(policies["ecr-refresh"]) if s["Resource"] == "*"]
    assert [s["Action"] for s in wildcard] == [["ecr:GetAuthorizationToken"]]
    (pull,) = [s for s in statements(policies["ecr-refresh"]) if s["Resource"] != "*"]
    assert pull["Resource"] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/conveyor"
    (trust,) = statements(policies["ecr-refresh-trust"])
    assert (
        trust["Condition"]["StringEquals"][f"{OIDC.removeprefix('https://')}:sub"]
        == "system:serviceaccount:default:conveyor-ecr-refresh"
    )


def test_the_trust_policy_needs_the_oidc_issuer() -> None:
    with pytest.raises(ConfigError, match="--oidc-issuer"):
        render_policy(deployment(aws={"oidc_issuer": None}), "trust")
