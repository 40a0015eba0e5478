"""The Jobs: never restarted in place, versioned names, the work queue's parallelism, the
one-off Job's command, the workers' ServiceAccount and the ledger-prune CronJob."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from conveyor.errors import ConfigError
from conveyor.k8s import Deployment, render
from conveyor.k8s.config import SAMPLE_INPUT
from conveyor.k8s.sections import Prune
from conveyor.settings import EXIT_CONFIG
from tests.unit.k8s.cases import (
    ACCOUNT,
    IMAGE,
    LEDGER_SECRET,
    SCENARIOS,
    by_kind,
    deployment,
    env_of,
    secret_env_of,
    worker_job,
)


def test_jobs_never_restart_in_place_and_fail_fast_on_configuration_errors(
    rendered: tuple[Deployment, list[dict[str, Any]]],
) -> None:
    deploy, docs = rendered
    targets = [d["spec"] for d in by_kind(docs, "Job")]
    targets += [d["spec"]["jobTargetRef"] for d in by_kind(docs, "ScaledJob")]
    assert targets
    for spec in targets:
        assert spec["backoffLimit"] == deploy.workload.backoff_limit
        assert spec["template"]["spec"]["restartPolicy"] == "Never"
        rules = spec["podFailurePolicy"]["rules"]
        ignore = [r for r in rules if r["action"] == "Ignore"]
        fail = [r for r in rules if r["action"] == "FailJob"]
        assert ignore[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
        assert EXIT_CONFIG in fail[0]["onExitCodes"]["values"]
        assert fail[0]["onExitCodes"]["operator"] == "In"
        # Interrupted (75) is neither: it counts against backoffLimit and is retried.
        assert 75 not in fail[0]["onExitCodes"]["values"]


def test_the_work_queue_job_has_parallelism_and_no_completions(
    rendered: tuple[Deployment, list[dict[str, Any]]],
) -> None:
    deploy, docs = rendered
    if deploy.queue is None:
        assert not [d for d in by_kind(docs, "Job") if "-worker-" in d["metadata"]["name"]]
        return
    spec = worker_job(docs)["spec"]
    assert spec["parallelism"] == deploy.workload.parallelism
    assert "completions" not in spec
    assert spec["template"]["spec"]["containers"][0]["args"] == ["worker", "--until-empty"]


def test_job_names_are_versioned_and_labelled() -> None:
    base = render(SCENARIOS["csi"], ["queue-job"])[0]
    again = render(SCENARIOS["csi"], ["queue-job"])[0]
    changed = render(deployment(workload={"image": IMAGE + "1"}), ["queue-job"])[0]
    pinned = render(SCENARIOS["parallelism-version"], ["queue-job"])[0]
    assert base["metadata"]["name"] == again["metadata"]["name"]
    assert base["metadata"]["name"] != changed["metadata"]["name"]
    assert pinned["metadata"]["name"] == "conveyor-worker-v3"
    labels = pinned["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "conveyor",
        "app.kubernetes.io/instance": "conveyor",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "conveyor",
        "app.kubernetes.io/version": "v3",
    }
    assert pinned["spec"]["template"]["metadata"]["labels"] == labels
    assert pinned["spec"]["activeDeadlineSeconds"] == 3600
    assert pinned["spec"]["ttlSecondsAfterFinished"] == 86_400
    assert "conveyor/template-hash" in pinned["metadata"]["annotations"]


def test_the_one_off_job_runs_the_sample_or_an_input_under_efs() -> None:
    (plain,) = render(SCENARIOS["sample-no-efs"], ["job"])
    container = plain["spec"]["template"]["spec"]["containers"][0]
    assert "args" not in container  # the image's own command: the tutorial's sample job
    assert [v["name"] for v in plain["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    (sample,) = render(SCENARIOS["csi"], ["job"])
    args = sample["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["run", SAMPLE_INPUT, "--output", "/efs/outputs/conveyor/input.csv"]
    (mine,) = render(deployment(workload={"input": "inputs/a.csv", "output": "out/a.csv"}), ["job"])
    container = mine["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "/efs/inputs/a.csv", "--output", "/efs/out/a.csv"]
    assert "livenessProbe" not in container
    assert sorted(mine["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"]) == [65, 78]


def test_the_service_account_is_annotated_for_irsa() -> None:
    (derived,) = render(SCENARIOS["csi"], ["service-account"])
    role = f"arn:aws:iam::{ACCOUNT}:role/other"
    (given,) = render(deployment(aws={"role_arn": role}), ["service-account"])
    annotation = "eks.amazonaws.com/role-arn"
    assert derived["metadata"]["annotations"][annotation] == (
        f"arn:aws:iam::{ACCOUNT}:role/conveyor-worker"
    )
    assert given["metadata"]["annotations"][annotation] == role


def test_the_ledger_prune_cron_job_deletes_old_jobs_through_the_secret() -> None:
    deploy = deployment(workload={"metrics_port": 9100})
    (cron,) = render(replace(deploy, prune=Prune("7 1 * * 0", "14d")), ["ledger-prune"])
    assert cron["spec"]["schedule"] == "7 1 * * 0"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["ledger", "prune", "--older-than", "14d"]
    assert secret_env_of(container) == {
        "CONVEYOR_LEDGER_URL": {"name": LEDGER_SECRET, "key": "url"}
    }
    # Only the ledger: no queue, no storage, no metrics port.
    assert env_of(container) == {}
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "ports" not in container and "livenessProbe" not in container
    assert EXIT_CONFIG in job["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"]
    assert pod["automountServiceAccountToken"] is False


def test_the_ledger_prune_cron_job_needs_the_secret_and_sane_values() -> None:
    with pytest.raises(ConfigError, match="--ledger-secret"):
        render(deployment(ledger={"name": None}), ["ledger-prune"])
    with pytest.raises(ConfigError, match="--prune-schedule"):
        render(replace(deployment(), prune=Prune(schedule="daily")), ["ledger-prune"])
    with pytest.raises(ConfigError, match="--prune-older-than"):
        render(replace(deployment(), prune=Prune(older_than="a month")), ["ledger-prune"])
