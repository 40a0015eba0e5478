"""The KEDA objects validate against KEDA's CRDs and run the work-queue Job's pod."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from conveyor.k8s import Deployment, render
from tests.unit.k8s.cases import ACCOUNT, KEDA_CRDS, QUEUE, REGION, SCENARIOS, one, worker_job


@cache
def keda_validator(kind: str) -> jsonschema.protocols.Validator:
    """A validator for the OpenAPI v3 schema of a KEDA CRD, strict about unknown fields."""
    path = KEDA_CRDS / f"keda.sh_{kind.lower()}s.yaml"
    if not path.is_file():
        pytest.fail(f"KEDA CRD missing: {path} (vendored from ../shared/schemas/keda)")
    crd = yaml.safe_load(path.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema: dict[str, Any] = copy.deepcopy(served["schema"]["openAPIV3Schema"])
    _forbid_unknown(schema)
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    validator_class.check_schema(schema)
    return validator_class(schema)


def _forbid_unknown(node: Any) -> None:
    """The API server prunes or rejects unknown fields; a plain JSON Schema ignores them."""
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _forbid_unknown(value)
    elif isinstance(node, list):
        for value in node:
            _forbid_unknown(value)


def test_keda_objects_validate_against_the_crds(
    rendered: tuple[Deployment, list[dict[str, Any]]],
) -> None:
    deploy, docs = rendered
    keda_docs = [doc for doc in docs if doc["apiVersion"] == "keda.sh/v1alpha1"]
    assert {doc["kind"] for doc in keda_docs} == (
        {"ScaledJob", "TriggerAuthentication"} if deploy.queue is not None else set()
    )
    for doc in keda_docs:
        keda_validator(doc["kind"]).validate(doc)


def test_the_strict_keda_schema_rejects_a_misspelled_field() -> None:
    scaled = one(render(SCENARIOS["csi"], ["keda"]), "ScaledJob")
    scaled["spec"]["scalingStrategie"] = {"strategy": "default"}
    with pytest.raises(jsonschema.ValidationError):
        keda_validator("ScaledJob").validate(scaled)


def test_the_scaled_job_runs_the_same_pod_as_the_work_queue_job() -> None:
    docs = render(SCENARIOS["metrics"], ["queue-job", "keda"])
    scaled = one(docs, "ScaledJob")["spec"]
    assert (
        scaled["jobTargetRef"]["template"]["spec"] == worker_job(docs)["spec"]["template"]["spec"]
    )
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["metadata"]["queueURL"] == QUEUE
    assert trigger["metadata"]["awsRegion"] == REGION
    assert trigger["metadata"]["queueLength"] == "5"
    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["podIdentity"] == {"provider": "aws", "identityOwner": "keda"}
    assert scaled["maxReplicaCount"] == 10 and scaled["pollingInterval"] == 30


def test_a_keda_role_replaces_the_operator_identity() -> None:
    docs = render(SCENARIOS["parallelism-version"], ["keda"])
    identity = one(docs, "TriggerAuthentication")["spec"]["podIdentity"]
    assert identity == {"provider": "aws", "roleArn": f"arn:aws:iam::{ACCOUNT}:role/keda-sqs"}
