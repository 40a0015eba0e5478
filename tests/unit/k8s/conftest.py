"""The `rendered` fixture: every scenario's objects, through the YAML text and back."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from conveyor.k8s import Deployment, render, to_yaml
from tests.unit.k8s.cases import SCENARIOS, parts_for


@pytest.fixture(params=sorted(SCENARIOS))
def rendered(request: pytest.FixtureRequest) -> tuple[Deployment, list[dict[str, Any]]]:
    """(deployment, its objects) for each scenario, through the YAML text and back."""
    deploy = SCENARIOS[request.param]
    docs = list(yaml.safe_load_all(to_yaml(render(deploy, parts_for(deploy)))))
    return deploy, docs
