"""The rendered manifests validate against Kubernetes' and KEDA's schemas, fit the Pod
Security "restricted" profile, and wire env, volumes and IAM as the worker expects."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from kubernetes_validate.utils import latest_version

from conveyor.cli import cli
from conveyor.errors import ConfigError
from conveyor.k8s import (
    PARTS,
    RUN_AS_UID,
    Aws,
    Deployment,
    Efs,
    Keda,
    LedgerSecret,
    Prune,
    PullSecret,
    Resources,
    Workload,
    default_parts,
    render,
    render_policies,
    render_policy,
    to_yaml,
)
from conveyor.k8s.config import SAMPLE_INPUT, SqsQueue
from conveyor.settings import EXIT_CONFIG, Settings

KEDA_CRDS = Path(__file__).resolve().parents[1] / "data" / "keda"
ACCOUNT = "123456789012"
REGION = "us-west-1"
QUEUE = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/eks-batch-job-queue"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:eks-batch-job-queue"
DLQ_ARN = QUEUE_ARN + "-dlq"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/conveyor:0.1.0"
FS = "fs-0ff53d77cb74d6474"
AP = "fsap-0123456789abcdef0"
OIDC = f"https://oidc.eks.{REGION}.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
#: The Secret holding the PostgreSQL ledger's URL: workers on EFS cannot run without one.
LEDGER_SECRET = "conveyor-ledger"
#: A ledger URL with a password, as a user would have it in their shell.
LEDGER_URL = "postgresql://conveyor:hunter2-s3cret@ledger.abc.us-west-1.rds.amazonaws.com/jobs"
#: The Kubernetes versions every manifest must validate against: EKS's oldest in standard
#: support when written, and the newest the installed schemas carry.
K8S_VERSIONS = ("1.33", latest_version())
POD_SECURITY_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def deployment(
    *,
    workload: dict[str, Any] | None = None,
    aws: dict[str, Any] | None = None,
    efs: dict[str, Any] | None = None,
    keda: dict[str, Any] | None = None,
    pull_secret: dict[str, Any] | None = None,
    ledger: dict[str, Any] | None = None,
) -> Deployment:
    """A Deployment with the tutorial's queue, an ECR image, an EFS file system and the
    ledger's Secret."""
    return Deployment(
        workload=replace(Workload(image=IMAGE), **(workload or {})),
        aws=replace(Aws(queue_url=QUEUE, oidc_issuer=OIDC), **(aws or {})),
        efs=replace(Efs(file_system_id=FS), **(efs or {})),
        keda=replace(Keda(), **(keda or {})),
        pull_secret=replace(PullSecret(), **(pull_secret or {})),
        ledger=replace(LedgerSecret(LEDGER_SECRET), **(ledger or {})),
    )


#: Flag combinations: each renders every part it can and must pass every check below.
SCENARIOS: dict[str, Deployment] = {
    "csi": deployment(),
    "access-point": deployment(efs={"access_point_id": AP}),
    "nfs": deployment(efs={"mode": "nfs"}),
    "pull-secret": deployment(pull_secret={"name": "regcred"}),
    "metrics": deployment(workload={"metrics_port": 9100}),
    "parallelism-version": deployment(
        workload={"parallelism": 7, "version": "v3", "deadline_s": 3600, "grace_s": 100.5},
        keda={"role_arn": f"arn:aws:iam::{ACCOUNT}:role/keda-sqs"},
    ),
    "ledger-key": deployment(ledger={"name": "rds.ledger", "key": "dsn"}),
    "sample-no-efs": Deployment(workload=Workload(image=IMAGE)),
}


def parts_for(deploy: Deployment) -> list[str]:
    """Every part this deployment can render."""
    if deploy.queue is None:
        return ["job"]
    parts = ["service-account", "storage", "job", "queue-job", "keda"]
    if deploy.pull_secret.name is not None:
        parts.append("pull-secret")
    if deploy.ledger.name is not None:
        parts.append("ledger-prune")
    return parts


@pytest.fixture(params=sorted(SCENARIOS))
def rendered(request: pytest.FixtureRequest) -> tuple[Deployment, list[dict[str, Any]]]:
    """(deployment, its objects) for each scenario, through the YAML text and back."""
    deploy = SCENARIOS[request.param]
    docs = list(yaml.safe_load_all(to_yaml(render(deploy, parts_for(deploy)))))
    return deploy, docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod specs inside an object, wherever its kind keeps them."""
    kind = doc["kind"]
    if kind == "Job":
        yield doc["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "ScaledJob":
        yield doc["spec"]["jobTargetRef"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain env values (those from a Secret are left out)."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def secret_env_of(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The container's env values read from Secrets: name -> its secretKeyRef."""
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container.get("env", [])
        if "valueFrom" in item
    }


def is_refresher(doc: dict[str, Any]) -> bool:
    """The pull-secret refresher's CronJob (aws and kubectl, not conveyor)."""
    return doc["kind"] == "CronJob" and doc["metadata"]["name"].endswith("-ecr-refresh")


def worker_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [d for d in by_kind(docs, "Job") if "-worker-" in d["metadata"]["name"]]
    return job


# --- schemas ---------------------------------------------------------------------------


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


# --- Pod Security "restricted" ---------------------------------------------------------


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


# --- Jobs ------------------------------------------------------------------------------


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


# --- storage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("efs", "source"),
    [
        ({}, {"csi": {"driver": "efs.csi.aws.com", "volumeHandle": FS}}),
        (
            {"access_point_id": AP},
            {"csi": {"driver": "efs.csi.aws.com", "volumeHandle": f"{FS}::{AP}"}},
        ),
        ({"mode": "nfs"}, {"nfs": {"server": f"{FS}.efs.{REGION}.amazonaws.com", "path": "/"}}),
        (
            {"mode": "nfs", "server": "files.example.internal"},
            {"nfs": {"server": "files.example.internal", "path": "/"}},
        ),
    ],
)
def test_the_efs_volume_source(efs: dict[str, Any], source: dict[str, Any]) -> None:
    pv = one(render(deployment(efs=efs), ["storage"]), "PersistentVolume")
    assert {key: pv["spec"][key] for key in ("csi", "nfs") if key in pv["spec"]} == source
    assert ("mountOptions" in pv["spec"]) == ("nfs" in source)


# --- ServiceAccount and pull secret -----------------------------------------------------


def test_the_service_account_is_annotated_for_irsa() -> None:
    (derived,) = render(SCENARIOS["csi"], ["service-account"])
    role = f"arn:aws:iam::{ACCOUNT}:role/other"
    (given,) = render(deployment(aws={"role_arn": role}), ["service-account"])
    annotation = "eks.amazonaws.com/role-arn"
    assert derived["metadata"]["annotations"][annotation] == (
        f"arn:aws:iam::{ACCOUNT}:role/conveyor-worker"
    )
    assert given["metadata"]["annotations"][annotation] == role


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


# --- IAM -------------------------------------------------------------------------------


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


# --- configuration errors ---------------------------------------------------------------


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


def test_the_trust_policy_needs_the_oidc_issuer() -> None:
    with pytest.raises(ConfigError, match="--oidc-issuer"):
        render_policy(deployment(aws={"oidc_issuer": None}), "trust")


@pytest.mark.parametrize(
    ("url", "region", "account", "arn"),
    [
        (QUEUE, None, None, QUEUE_ARN),
        (f"https://{REGION}.queue.amazonaws.com/{ACCOUNT}/q", None, None, None),
        (
            f"https://sqs.cn-north-1.amazonaws.com.cn/{ACCOUNT}/q",
            None,
            None,
            f"arn:aws-cn:sqs:cn-north-1:{ACCOUNT}:q",
        ),
        (
            "http://127.0.0.1:4566/000000000000/q",
            "us-east-1",
            None,
            "arn:aws:sqs:us-east-1:000000000000:q",
        ),
    ],
)
def test_queue_arns_come_from_the_url(
    url: str, region: str | None, account: str | None, arn: str | None
) -> None:
    queue = SqsQueue.parse(url, region, account)
    assert queue.arn == (arn or f"arn:aws:sqs:{REGION}:{ACCOUNT}:q")


def test_default_parts_follow_the_options() -> None:
    assert default_parts(SCENARIOS["csi"]) == ["service-account", "storage", "queue-job"]
    assert default_parts(SCENARIOS["pull-secret"])[:2] == ["service-account", "pull-secret"]
    assert default_parts(SCENARIOS["sample-no-efs"]) == ["job"]
    assert set(PARTS) == {*parts_for(SCENARIOS["pull-secret"]), "iam"}


# --- the command line -------------------------------------------------------------------


def run_cli(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["k8s", *args], env=env, catch_exceptions=False)


#: What every command line below renders from: the image, the queue, EFS, the ledger.
BASE_ARGS = ["--image", IMAGE, "--queue", QUEUE, "--efs-id", FS, "--ledger-secret", LEDGER_SECRET]


def test_render_prints_yaml_that_kubectl_can_apply() -> None:
    result = run_cli(["render", *BASE_ARGS])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Job",
    ]


def test_render_reads_its_env_twins() -> None:
    env = {
        "CONVEYOR_K8S_IMAGE": IMAGE,
        "SQS_QUEUE_URL": QUEUE,
        "CONVEYOR_K8S_EFS_ID": FS,
        "CONVEYOR_K8S_PARALLELISM": "4",
        "CONVEYOR_GRACE_S": "50",
        "CONVEYOR_K8S_NAMESPACE": "batch",
        "CONVEYOR_LEDGER_SECRET": "db:dsn",
    }
    result = run_cli(["render", "--only", "queue-job"], env=env)
    assert result.exit_code == 0, result.output
    (job,) = yaml.safe_load_all(result.stdout)
    assert job["metadata"]["namespace"] == "batch"
    assert job["spec"]["parallelism"] == 4
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 65
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert secret_env_of(container) == {"CONVEYOR_LEDGER_URL": {"name": "db", "key": "dsn"}}


def test_render_out_writes_one_file_per_object_and_the_policies(tmp_path: Path) -> None:
    result = run_cli(["render", *BASE_ARGS, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert names[0].startswith("01-serviceaccount-") and len(names) == 4
    policies = {p.stem for p in (tmp_path / "iam").glob("*.json")}
    assert policies == {"worker", "submitter", "admin", "scaler"}
    json.loads((tmp_path / "iam" / "worker.json").read_text())


def test_render_only_iam_prints_json_and_policy_prints_one() -> None:
    result = run_cli(["render", "--only", "iam", "--queue", QUEUE])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"worker", "submitter", "admin", "scaler"}
    one_policy = run_cli(["policy", "scaler", "--queue", QUEUE])
    assert json.loads(one_policy.stdout) == render_policy(SCENARIOS["csi"], "scaler")


def test_a_configuration_error_is_one_line_and_exit_78() -> None:
    result = run_cli(["render", "--only", "queue-job", "--queue", QUEUE, "--image", IMAGE])
    assert result.exit_code == EXIT_CONFIG
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("conveyor: error:") and "--efs-id" in line


def test_the_one_off_job_can_run_another_command_with_the_queue_and_storage() -> None:
    result = run_cli(["render", "--only", "job", *BASE_ARGS, "--run-args", "dlq list --limit 5"])
    assert result.exit_code == 0, result.output
    (job,) = yaml.safe_load_all(result.stdout)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["dlq", "list", "--limit", "5"]
    assert env_of(container)["SQS_QUEUE_URL"] == QUEUE
    assert env_of(container)["CONVEYOR_STORAGE"] == "/efs"
    assert secret_env_of(container)["CONVEYOR_LEDGER_URL"]["name"] == LEDGER_SECRET


# --- the ledger's Secret ------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("conveyor-ledger", LedgerSecret("conveyor-ledger", "url")),
        ("rds.ledger:dsn", LedgerSecret("rds.ledger", "dsn")),
        ("db:DATABASE_URL", LedgerSecret("db", "DATABASE_URL")),
        (None, LedgerSecret()),
        ("", LedgerSecret()),
    ],
)
def test_the_ledger_secret_is_name_and_key(value: str | None, expected: LedgerSecret) -> None:
    assert LedgerSecret.parse(value) == expected


@pytest.mark.parametrize("value", ["Conveyor", "db:", "db:a/b", "-db", "db:url:x", "a" * 254])
def test_a_malformed_ledger_secret_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="--ledger-secret"):
        LedgerSecret.parse(value)


def test_a_malformed_ledger_secret_is_one_line_and_exit_78() -> None:
    result = run_cli(["render", *BASE_ARGS, "--ledger-secret", "Not_A_Name"])
    assert result.exit_code == EXIT_CONFIG
    (line,) = result.stderr.splitlines()
    assert "--ledger-secret" in line


def test_render_refuses_efs_workers_without_the_ledger_secret() -> None:
    args = ["render", "--image", IMAGE, "--queue", QUEUE, "--efs-id", FS]
    result = run_cli(args)
    assert result.exit_code == EXIT_CONFIG
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "--ledger-secret" in line and "SQLite" in line


def test_no_ledger_url_ever_appears_in_rendered_output(tmp_path: Path) -> None:
    # Even with the URL (and its password) in the environment of `conveyor k8s render`.
    env = {"CONVEYOR_LEDGER_URL": LEDGER_URL}
    texts = []
    for only in [*[p for p in PARTS if p != "iam"], None]:
        args = ["render", *BASE_ARGS, "--pull-secret", "regcred", "--metrics-port", "9100"]
        args += ["--only", only] if only else []
        result = run_cli(args, env=env)
        assert result.exit_code == 0, result.output
        texts.append(result.stdout)
    result = run_cli(["render", *BASE_ARGS, "--out", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    texts += [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    texts += [to_yaml(render(d, parts_for(d))) for d in SCENARIOS.values()]
    for text in texts:
        assert "postgresql://" not in text
        assert "postgres://" not in text
        assert "hunter2" not in text
    assert any("CONVEYOR_LEDGER_URL" in text for text in texts)


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


def test_render_ledger_prune_reads_its_options() -> None:
    args = ["render", "--only", "ledger-prune", *BASE_ARGS, "--prune-schedule", "0 2 * * *"]
    result = run_cli(args, env={"CONVEYOR_LEDGER_RETENTION": "90d"})
    assert result.exit_code == 0, result.output
    (cron,) = yaml.safe_load_all(result.stdout)
    assert cron["spec"]["schedule"] == "0 2 * * *"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-1] == "90d"
