"""Every pod fits the Pod Security "restricted" profile and is wired as the worker expects:
env, volumes, probe, metrics port, and the ledger's URL from its Secret only."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.errors import ConfigError
from conveyor.k8s import RUN_AS_UID, Deployment, render
from conveyor.k8s.sections import Workload
from conveyor.settings import EXIT_CONFIG, Settings
from tests.unit.k8s.cases import (
    IMAGE,
    POD_SECURITY_VOLUMES,
    QUEUE,
    REGION,
    SCENARIOS,
    by_kind,
    deployment,
    env_of,
    is_refresher,
    one,
    parts_for,
    pod_specs,
    secret_env_of,
    worker_job,
)


def test_every_pod_fits_the_restricted_profile(
    rendered: tuple[Deployment, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    specs = [spec for doc in docs for spec in pod_specs(doc)]
    assert specs
    for spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] == RUN_AS_UID
        assert pod_sc["fsGroup"] == RUN_AS_UID
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        assert spec["restartPolicy"] == "Never"
        volumes = {v["name"]: v for v in spec["volumes"]}
        for volume in volumes.values():
            assert set(volume) - {"name"} <= POD_SECURITY_VOLUMES, volume
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["runAsNonRoot"] is True
            assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] != 0
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not sc.get("privileged")
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]]


def test_worker_pods_do_not_mount_the_api_token_but_the_refresher_does() -> None:
    docs = render(SCENARIOS["pull-secret"], parts_for(SCENARIOS["pull-secret"]))
    for doc in docs:
        for spec in pod_specs(doc):
            assert spec["automountServiceAccountToken"] is is_refresher(doc)
    (worker_sa,) = [
        d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"] == "conveyor"
    ]
    assert worker_sa["automountServiceAccountToken"] is False


def test_worker_env_volumes_and_probe_are_wired(
    rendered: tuple[Deployment, list[dict[str, Any]]],
) -> None:
    deploy, docs = rendered
    if deploy.queue is None:
        return
    pvc = one(docs, "PersistentVolumeClaim")
    pv = one(docs, "PersistentVolume")
    specs = [worker_job(docs)["spec"]["template"]["spec"]]
    specs.append(one(docs, "ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"])
    for spec in specs:
        (container,) = spec["containers"]
        env = env_of(container)
        assert env["SQS_QUEUE_URL"] == QUEUE
        assert env["CONVEYOR_STORAGE"] == "/efs"
        assert env["CONVEYOR_LOG_FORMAT"] == "json"
        assert env["AWS_REGION"] == REGION
        assert float(env["CONVEYOR_GRACE_S"]) == deploy.workload.grace_s
        assert spec["terminationGracePeriodSeconds"] > float(env["CONVEYOR_GRACE_S"])
        visibility_s = int(env["CONVEYOR_VISIBILITY_TIMEOUT_S"])
        assert visibility_s == deploy.workload.visibility_timeout_s
        mount = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/efs"]
        claim = {v["name"]: v for v in spec["volumes"]}[mount]["persistentVolumeClaim"]
        assert claim["claimName"] == pvc["metadata"]["name"]
        probe = container["livenessProbe"]["exec"]["command"]
        assert probe[:2] == ["conveyor", "health"]
        assert probe[probe.index("--file") + 1] == env["CONVEYOR_HEALTH_FILE"]
        assert env["CONVEYOR_HEALTH_FILE"].startswith("/tmp/")
        max_age_s = int(probe[probe.index("--max-age-s") + 1])
        assert max_age_s > Settings(visibility_timeout_s=visibility_s).heartbeat_s
        assert max_age_s > Settings().wait_s
        assert spec["serviceAccountName"] == deploy.workload.service_account
    # The PV and the claim are bound to each other, both ways.
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pv["spec"]["claimRef"] == {
        "namespace": pvc["metadata"]["namespace"],
        "name": pvc["metadata"]["name"],
    }
    assert pv["spec"]["storageClassName"] == pvc["spec"]["storageClassName"]
    assert pv["spec"]["accessModes"] == pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


@pytest.mark.parametrize("port", [None, 9100])
def test_the_metrics_port_adds_a_container_port_and_scrape_annotations(port: int | None) -> None:
    docs = render(deployment(workload={"metrics_port": port}), ["queue-job", "keda"])
    for template in (
        worker_job(docs)["spec"]["template"],
        one(docs, "ScaledJob")["spec"]["jobTargetRef"]["template"],
    ):
        container = template["spec"]["containers"][0]
        annotations = template["metadata"].get("annotations", {})
        if port is None:
            assert "ports" not in container and "CONVEYOR_METRICS_PORT" not in env_of(container)
            assert not any(key.startswith("prometheus.io/") for key in annotations)
        else:
            assert container["ports"] == [
                {"name": "metrics", "containerPort": port, "protocol": "TCP"}
            ]
            assert env_of(container)["CONVEYOR_METRICS_PORT"] == str(port)
            assert env_of(container)["CONVEYOR_METRICS_HOST"] == "0.0.0.0"
            assert annotations == {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(port),
                "prometheus.io/path": "/metrics",
            }


def test_every_conveyor_pod_reads_the_ledger_url_from_its_secret(
    rendered: tuple[Deployment, list[dict[str, Any]]],
) -> None:
    deploy, docs = rendered
    pods = 0
    for doc in docs:
        if is_refresher(doc):
            continue  # it runs aws and kubectl, not conveyor
        for spec in pod_specs(doc):
            (container,) = spec["containers"]
            secrets = secret_env_of(container)
            if deploy.ledger.name is None:
                assert secrets == {}
            else:
                assert secrets == {
                    "CONVEYOR_LEDGER_URL": {"name": deploy.ledger.name, "key": deploy.ledger.key}
                }
            assert "CONVEYOR_LEDGER_URL" not in env_of(container)
            pods += 1
    assert pods >= 1


@pytest.mark.parametrize(
    ("parts", "workload"),
    [
        (["queue-job"], {}),
        (["keda"], {}),
        (["job"], {"run_args": ("status",)}),
        (["job"], {"run_args": ("ledger", "migrate")}),
    ],
)
def test_pods_on_efs_that_use_the_ledger_need_its_secret(
    parts: list[str], workload: dict[str, Any]
) -> None:
    deploy = deployment(ledger={"name": None}, workload=workload)
    with pytest.raises(ConfigError, match=r"--ledger-secret") as caught:
        render(deploy, parts)
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == EXIT_CONFIG


def test_pods_that_never_open_the_ledger_need_no_secret() -> None:
    # `conveyor run` on /efs publishes a file and records nothing; without EFS there is
    # no shared storage to keep a SQLite ledger on.
    (run,) = render(deployment(ledger={"name": None}), ["job"])
    (container,) = run["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "run" and secret_env_of(container) == {}
    bare = Deployment(workload=Workload(image=IMAGE, run_args=("status",)))
    (status,) = render(bare, ["job"])
    assert secret_env_of(status["spec"]["template"]["spec"]["containers"][0]) == {}
