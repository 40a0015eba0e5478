"""The Deployment's checks: a malformed or missing value is a ConfigError naming its flag."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigError
from conveyor.k8s import Deployment, render
from conveyor.k8s.sections import PullSecret, Resources, Workload
from conveyor.settings import EXIT_CONFIG
from tests.unit.k8s.cases import AP, deployment


@pytest.mark.parametrize(
    ("deploy", "parts", "flag"),
    [
        (deployment(efs={"file_system_id": "fs-XYZ"}), ["storage"], "--efs-id"),
        (deployment(efs={"access_point_id": AP, "mode": "nfs"}), ["storage"], "--access-point"),
        (deployment(efs={"file_system_id": None}), ["queue-job"], "--efs-id"),
        (deployment(efs={"file_system_id": None}), ["keda"], "--efs-id"),
        (deployment(aws={"queue_url": None}), ["queue-job"], "--queue"),
        (deployment(workload={"image": None}), ["job"], "--image"),
        (deployment(workload={"resources": Resources(cpu_limit="lots")}), ["job"], "--cpu-limit"),
        (deployment(workload={"visibility_timeout_s": 43_201}), ["job"], "--visibility-timeout-s"),
        (deployment(workload={"version": "v3/../x"}), ["job"], "--job-version"),
        (deployment(workload={"input": "../etc/passwd"}), ["job"], "--input"),
        (deployment(workload={"name": "Conveyor"}), ["job"], "--name"),
        (deployment(pull_secret={"name": "regcred", "role_arn": None}), ["nope"], "unknown part"),
        (
            Deployment(
                workload=Workload(image="ghcr.io/x/conveyor:1"), pull_secret=PullSecret("r")
            ),
            ["pull-secret"],
            "ECR",
        ),
        (
            deployment(aws={"queue_url": "http://127.0.0.1:5000/000000000000/q"}),
            ["queue-job"],
            "--region",
        ),
    ],
)
def test_configuration_errors_name_the_flag(
    deploy: Deployment, parts: list[str], flag: str
) -> None:
    with pytest.raises(ConfigError, match=flag.replace("-", r"\-")) as caught:
        render(deploy, parts)
    assert caught.value.exit_code == EXIT_CONFIG
