"""An ECR image pull secret that stays valid: a CronJob rewrites it every few hours.

ECR's docker credentials expire after 12 hours and nothing in Kubernetes renews a
docker-registry secret, so a secret created once by hand (the tutorial's Step 9) breaks
every pull after half a day. On EKS the node role pulls from ECR and no secret is needed.
"""

from __future__ import annotations

from conveyor.errors import ConfigError
from conveyor.k8s.aws import EcrImage
from conveyor.k8s.config import Deployment
from conveyor.k8s.iam import refresher_service_account
from conveyor.k8s.objects import (
    Manifest,
    cron_job,
    irsa_service_account,
    labels,
    metadata,
    restricted_container_security,
    restricted_pod_security,
)

#: The refresher's init container writes the secret here; the kubectl container applies it.
MANIFEST_FILE = "/work/secret.json"
FIELD_MANAGER = "conveyor-ecr-refresh"

# The secret is built in a shell (the aws-cli image has one; the kubectl image does not):
# the token is base64 characters only, and every name is a checked DNS label, so plain
# printf builds valid JSON. umask keeps the credentials file private to the pod's user.
_SCRIPT = """\
set -eu
umask 077
password="$(aws ecr get-login-password --region "$AWS_REGION")"
auth="$(printf 'AWS:%s' "$password" | base64 | tr -d '\\n')"
config="$(printf '{"auths":{"%s":{"username":"AWS","password":"%s","auth":"%s"}}}' \\
  "$REGISTRY" "$password" "$auth" | base64 | tr -d '\\n')"
printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"%s","namespace":"%s"},\
"type":"kubernetes.io/dockerconfigjson","data":{".dockerconfigjson":"%s"}}' \\
  "$SECRET_NAME" "$NAMESPACE" "$config" > "$SECRET_FILE"
"""


def _small_resources() -> Manifest:
    return {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"cpu": "200m", "memory": "256Mi"},
    }


def _ecr(deploy: Deployment) -> EcrImage:
    ecr = deploy.ecr_image
    if ecr is None:
        raise ConfigError(
            "--pull-secret refreshes an ECR token: --image must be in a private ECR "
            "registry (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG)"
        )
    return ecr


def _cronjob(deploy: Deployment, secret: str, account: str) -> Manifest:
    ecr = _ecr(deploy)
    pull = deploy.pull_secret
    namespace = deploy.workload.namespace
    env = [
        {"name": "AWS_REGION", "value": ecr.region},
        {"name": "REGISTRY", "value": ecr.registry},
        {"name": "SECRET_NAME", "value": secret},
        {"name": "NAMESPACE", "value": namespace},
        {"name": "SECRET_FILE", "value": MANIFEST_FILE},
        {"name": "HOME", "value": "/tmp"},
    ]
    mounts = [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}]
    token = {
        "name": "ecr-token",
        "image": pull.aws_cli_image,
        "command": ["/bin/sh", "-c", _SCRIPT],
        "env": env,
        "resources": _small_resources(),
        "securityContext": restricted_container_security(),
        "volumeMounts": mounts,
    }
    apply = {
        "name": "apply",
        "image": pull.kubectl_image,
        "command": ["kubectl"],
        "args": [
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "--force-conflicts",
            "-f",
            MANIFEST_FILE,
        ],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": _small_resources(),
        "securityContext": restricted_container_security(),
        "volumeMounts": mounts,
    }
    pod = {
        "metadata": {"labels": labels(deploy, "pull-secret")},
        "spec": {
            "serviceAccountName": account,
            # kubectl needs the API token; this pod does nothing else.
            "automountServiceAccountToken": True,
            "restartPolicy": "Never",
            "securityContext": restricted_pod_security(),
            "initContainers": [token],
            "containers": [apply],
            "volumes": [
                {"name": "work", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        },
    }
    job_spec = {"backoffLimit": 3, "activeDeadlineSeconds": 600, "template": pod}
    return cron_job(deploy, account, "pull-secret", pull.schedule, job_spec)


def _admission_policy(deploy: Deployment, secret: str, account: str) -> list[Manifest]:
    """Pin the refresher's one unscoped verb, ``create``, to its own secret.

    RBAC cannot restrict ``create`` by name (the name is not in the URL), so without this
    the refresher could create any secret in the namespace, including a token secret of
    another ServiceAccount. A ValidatingAdmissionPolicy (GA in Kubernetes 1.30) can.
    """
    namespace = deploy.workload.namespace
    name = f"{account}-{namespace}"[:63].rstrip("-")
    user = f"system:serviceaccount:{namespace}:{account}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata(deploy, name, "pull-secret", namespaced=False),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["secrets"],
                    }
                ]
            },
            "matchConditions": [
                {"name": "refresher-only", "expression": f"request.userInfo.username == '{user}'"}
            ],
            "validations": [
                {
                    "expression": (
                        f"object.metadata.name == '{secret}' && "
                        "object.type == 'kubernetes.io/dockerconfigjson'"
                    ),
                    "message": f"the ECR refresher may only write the pull secret {secret}",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": metadata(deploy, name, "pull-secret", namespaced=False),
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    return [policy, binding]


def pull_secret_objects(deploy: Deployment) -> list[Manifest]:
    """The refresher: its ServiceAccount (IRSA), Role, RoleBinding, admission policy, CronJob.

    Raises:
        ConfigError: no ``--pull-secret`` name, or the image is not in ECR.
    """
    secret = deploy.pull_secret.name
    if secret is None:
        raise ConfigError("give --pull-secret NAME to render the pull-secret refresher")
    _ecr(deploy)
    account = refresher_service_account(deploy)
    role_arn = deploy.role_arn(deploy.pull_secret.role_arn, "ecr-refresh")
    service_account = irsa_service_account(deploy, account, "pull-secret", role_arn)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(deploy, account, "pull-secret"),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [secret],
                "verbs": ["get", "patch", "update"],
            },
            # The first run creates the secret; see _admission_policy for its limit.
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(deploy, account, "pull-secret"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [
            {"kind": "ServiceAccount", "name": account, "namespace": deploy.workload.namespace}
        ],
    }
    return [
        service_account,
        role,
        binding,
        *_admission_policy(deploy, secret, account),
        _cronjob(deploy, secret, account),
    ]
