"""KEDA: a TriggerAuthentication and a ScaledJob starting worker Jobs from the queue depth."""

from __future__ import annotations

from conveyor.k8s.config import Deployment
from conveyor.k8s.objects import Manifest, metadata
from conveyor.k8s.pods import pod_failure_policy, pod_spec, pod_template
from conveyor.k8s.workloads import require_storage, template_hash
from conveyor.settings import EXIT_CONFIG


def keda_objects(deploy: Deployment) -> list[Manifest]:
    """A TriggerAuthentication and a ScaledJob starting worker Jobs from the queue depth.

    Each Job KEDA starts runs one ``worker --until-empty``. The trigger counts in-flight
    messages too (``scaleOnInFlight``), so jobs already working are not started again.
    """
    queue = deploy.require_queue("the KEDA ScaledJob")
    require_storage(deploy, "the KEDA ScaledJob")
    work, keda = deploy.workload, deploy.keda
    auth_name = f"{work.name}-sqs"
    identity: Manifest = {"provider": "aws"}
    if keda.role_arn:
        identity["roleArn"] = keda.role_arn
    else:
        identity["identityOwner"] = "keda"
    auth = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": metadata(deploy, auth_name, "scaler"),
        "spec": {"podIdentity": identity},
    }
    spec = pod_spec(deploy, worker=True)
    version = work.version or template_hash("scaledjob", spec, work.backoff_limit)
    job_target: Manifest = {
        "parallelism": 1,
        "backoffLimit": work.backoff_limit,
        "podFailurePolicy": pod_failure_policy([EXIT_CONFIG]),
        "template": pod_template(deploy, "worker", version, spec),
    }
    if work.deadline_s is not None:
        job_target["activeDeadlineSeconds"] = work.deadline_s
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": metadata(deploy, f"{work.name}-worker", "worker", version=version),
        "spec": {
            "jobTargetRef": job_target,
            "pollingInterval": keda.polling_interval_s,
            "minReplicaCount": 0,
            "maxReplicaCount": keda.max_replicas,
            "successfulJobsHistoryLimit": keda.successful_history,
            "failedJobsHistoryLimit": keda.failed_history,
            "rollout": {"strategy": "gradual"},
            "scalingStrategy": {"strategy": "default"},
            "triggers": [
                {
                    "type": "aws-sqs-queue",
                    "authenticationRef": {"name": auth_name},
                    "metadata": {
                        "queueURL": queue.url,
                        "queueLength": str(keda.queue_length),
                        "awsRegion": queue.region,
                        "scaleOnInFlight": "true",
                    },
                }
            ],
        },
    }
    return [auth, scaled]
