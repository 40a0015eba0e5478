"""`render()` and its parts: every object validates against the official Kubernetes schemas
(strict, as `kubectl apply` is), in the order and the defaults the options call for."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from kubernetes_validate.utils import latest_version

from conveyor.k8s import PARTS, Deployment, default_parts
from tests.unit.k8s.cases import K8S_VERSIONS, SCENARIOS, parts_for


def test_the_schemas_are_a_current_kubernetes() -> None:
    major, minor = (int(n) for n in latest_version().split(".")[:2])
    assert (major, minor) >= (1, 34)


def test_every_object_validates_against_the_official_schemas(
    rendered: tuple[Deployment, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        for version in K8S_VERSIONS:
            # strict: unknown fields are errors, as `kubectl apply` rejects them.
            kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 1


def test_default_parts_follow_the_options() -> None:
    assert default_parts(SCENARIOS["csi"]) == ["service-account", "storage", "queue-job"]
    assert default_parts(SCENARIOS["pull-secret"])[:2] == ["service-account", "pull-secret"]
    assert default_parts(SCENARIOS["sample-no-efs"]) == ["job"]
    assert set(PARTS) == {*parts_for(SCENARIOS["pull-secret"]), "iam"}
