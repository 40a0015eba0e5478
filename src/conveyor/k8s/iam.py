"""Least-privilege IAM policy documents: each role gets only the calls it makes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.errors import ConfigError
from conveyor.k8s.config import Deployment

Policy = dict[str, Any]
Statement = dict[str, Any]

#: The worker: receive, keep the lease alive, release, ack; read the counts (--until-empty,
#: status); find the dead-letter queue from the redrive policy.
WORKER_QUEUE_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
)
#: The worker on the dead-letter queue: dead_letter() sends a permanently failed job there.
WORKER_DLQ_ACTIONS = ("sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage")
#: `conveyor submit`.
SUBMITTER_ACTIONS = ("sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage")
#: `conveyor queue create|delete|purge` and `conveyor dlq list|redrive`, on both queues.
#: The redrive is receive → send → delete by hand (no StartMessageMoveTask), and the
#: dead-letter listing releases what it peeked at (ChangeMessageVisibility).
ADMIN_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:CreateQueue",
    "sqs:DeleteMessage",
    "sqs:DeleteQueue",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:PurgeQueue",
    "sqs:ReceiveMessage",
    "sqs:SendMessage",
    "sqs:SetQueueAttributes",
)
#: `conveyor status` reads the dead-letter count too.
STATUS_ACTIONS = ("sqs:GetQueueAttributes", "sqs:GetQueueUrl")
#: KEDA's aws-sqs-queue scaler reads the message counts, nothing else.
SCALER_ACTIONS = ("sqs:GetQueueAttributes",)
#: Pulling an image with an ECR token.
ECR_PULL_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
)

POLICIES = ("worker", "submitter", "admin", "scaler", "trust", "ecr-refresh", "ecr-refresh-trust")


def _statement(sid: str, actions: tuple[str, ...], resources: list[str]) -> Statement:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions)),
        "Resource": resources[0] if len(resources) == 1 else resources,
    }


def _policy(*statements: Statement) -> Policy:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _kms(deploy: Deployment, actions: tuple[str, ...]) -> list[Statement]:
    """Access to the queue's customer-managed KMS key, when it has one (SSE-KMS)."""
    if deploy.aws.kms_key_arn is None:
        return []
    return [_statement("QueueKey", actions, [deploy.aws.kms_key_arn])]


def worker_policy(deploy: Deployment) -> Policy:
    """What a worker pod's role needs, and nothing more (in place of AmazonSQSFullAccess)."""
    queue = deploy.require_queue("the worker policy")
    dlq = deploy.dead_letter_queue(queue)
    return _policy(
        _statement("ConsumeJobs", WORKER_QUEUE_ACTIONS, [queue.arn]),
        _statement("DeadLetterJobs", WORKER_DLQ_ACTIONS, [dlq.arn]),
        *_kms(deploy, ("kms:Decrypt", "kms:GenerateDataKey")),
    )


def submitter_policy(deploy: Deployment) -> Policy:
    """What `conveyor submit` and `conveyor status` need, from a laptop or a one-off pod."""
    queue = deploy.require_queue("the submitter policy")
    return _policy(
        _statement("SubmitJobs", SUBMITTER_ACTIONS, [queue.arn]),
        _statement("CountDeadLetters", STATUS_ACTIONS, [deploy.dead_letter_queue(queue).arn]),
        *_kms(deploy, ("kms:Decrypt", "kms:GenerateDataKey")),
    )


def admin_policy(deploy: Deployment) -> Policy:
    """Queue administration, kept apart from the workers: create, delete, purge, redrive."""
    queue = deploy.require_queue("the admin policy")
    dlq = deploy.dead_letter_queue(queue)
    return _policy(
        _statement("AdministerQueues", ADMIN_ACTIONS, [queue.arn, dlq.arn]),
        *_kms(deploy, ("kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey")),
    )


def scaler_policy(deploy: Deployment) -> Policy:
    """What KEDA's operator role (or ``--keda-role-arn``) needs to read the queue depth."""
    queue = deploy.require_queue("the scaler policy")
    return _policy(_statement("ReadQueueDepth", SCALER_ACTIONS, [queue.arn]))


def trust_policy(deploy: Deployment, service_account: str | None = None) -> Policy:
    """The role's trust: only this ServiceAccount's IRSA token, audience sts.amazonaws.com.

    Raises:
        ConfigError: the cluster's OIDC issuer or the account is unknown.
    """
    issuer = deploy.aws.oidc_issuer
    if not issuer:
        raise ConfigError(
            "the trust policy needs the cluster's OIDC issuer: give --oidc-issuer (aws eks "
            "describe-cluster --name CLUSTER --query cluster.identity.oidc.issuer --output text)"
        )
    provider = issuer.removeprefix("https://").rstrip("/")
    account = deploy.account_id
    if account is None:
        raise ConfigError("the trust policy needs the AWS account: give --account-id")
    subject = service_account or deploy.workload.service_account
    namespace = deploy.workload.namespace
    principal = f"arn:{deploy.partition}:iam::{account}:oidc-provider/{provider}"
    return _policy(
        {
            "Sid": "ServiceAccountOnly",
            "Effect": "Allow",
            "Principal": {"Federated": principal},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{provider}:sub": f"system:serviceaccount:{namespace}:{subject}",
                    f"{provider}:aud": "sts.amazonaws.com",
                }
            },
        }
    )


def ecr_refresh_policy(deploy: Deployment) -> Policy:
    """The pull-secret refresher's role: an ECR token, and pulls from this one repository.

    ``ecr:GetAuthorizationToken`` is the one action AWS only grants on ``"*"`` (it names no
    repository); what the token can pull is limited by the second statement.
    """
    ecr = deploy.ecr_image
    if ecr is None:
        raise ConfigError("the pull-secret refresher needs an ECR --image (ACCOUNT.dkr.ecr…)")
    return _policy(
        _statement("GetToken", ("ecr:GetAuthorizationToken",), ["*"]),
        _statement("PullConveyorImage", ECR_PULL_ACTIONS, [ecr.repository_arn]),
    )


def refresher_service_account(deploy: Deployment) -> str:
    """The refresher's ServiceAccount name."""
    return f"{deploy.workload.name}-ecr-refresh"


def ecr_refresh_trust_policy(deploy: Deployment) -> Policy:
    """The refresher role's trust: only the refresher's ServiceAccount."""
    return trust_policy(deploy, refresher_service_account(deploy))


def render_policy(deploy: Deployment, name: str) -> Policy:
    """One policy document by name (see ``POLICIES``).

    Raises:
        ConfigError: an unknown name, or a value the policy needs is missing.
    """
    renderers: dict[str, Callable[[Deployment], Policy]] = {
        "worker": worker_policy,
        "submitter": submitter_policy,
        "admin": admin_policy,
        "scaler": scaler_policy,
        "trust": trust_policy,
        "ecr-refresh": ecr_refresh_policy,
        "ecr-refresh-trust": ecr_refresh_trust_policy,
    }
    if name not in renderers:
        raise ConfigError(f"unknown policy {name!r}: one of {', '.join(POLICIES)}")
    return renderers[name](deploy)
