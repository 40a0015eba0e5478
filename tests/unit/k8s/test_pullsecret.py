"""The ECR pull secret: used by every conveyor pod, kept fresh by a narrowly allowed refresher."""

from __future__ import annotations

from conveyor.k8s import render
from tests.unit.k8s.cases import (
    ACCOUNT,
    REGION,
    SCENARIOS,
    env_of,
    is_refresher,
    one,
    parts_for,
    pod_specs,
)


def test_the_pull_secret_is_used_and_kept_fresh() -> None:
    deploy = SCENARIOS["pull-secret"]
    docs = render(deploy, parts_for(deploy))
    for doc in docs:
        for spec in pod_specs(doc):
            if not is_refresher(doc):
                assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    (cron,) = [doc for doc in docs if is_refresher(doc)]
    _minute, hour, *_ = cron["spec"]["schedule"].split()
    assert hour.startswith("*/") and int(hour[2:]) <= 8  # well inside ECR's 12 hours
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert "ecr get-login-password" in init["command"][-1]
    assert env_of(init)["REGISTRY"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    assert pod["containers"][0]["args"][:2] == ["apply", "--server-side"]
    role = one(docs, "Role")
    scoped = [r for r in role["rules"] if "resourceNames" in r]
    assert scoped == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["regcred"],
            "verbs": ["get", "patch", "update"],
        }
    ]
    unscoped = [r for r in role["rules"] if "resourceNames" not in r]
    assert [r["verbs"] for r in unscoped] == [["create"]]  # RBAC cannot scope create...
    policy = one(docs, "ValidatingAdmissionPolicy")  # ...so admission pins it
    assert "'regcred'" in policy["spec"]["validations"][0]["expression"]
    assert "conveyor-ecr-refresh'" in policy["spec"]["matchConditions"][0]["expression"]
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]


def test_no_pull_secret_by_default() -> None:
    docs = render(SCENARIOS["csi"], parts_for(SCENARIOS["csi"]))
    assert not [doc for doc in docs if is_refresher(doc)]
    for doc in docs:
        for spec in pod_specs(doc):
            assert "imagePullSecrets" not in spec
