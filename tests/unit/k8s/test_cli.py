"""`conveyor k8s render` and `policy`: options and their env twins, output, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml
from click.testing import CliRunner

from conveyor.cli import cli
from conveyor.k8s import PARTS, render, render_policy, to_yaml
from conveyor.settings import EXIT_CONFIG
from tests.unit.k8s.cases import (
    FS,
    IMAGE,
    LEDGER_SECRET,
    LEDGER_URL,
    QUEUE,
    SCENARIOS,
    env_of,
    parts_for,
    secret_env_of,
)


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


def test_render_ledger_prune_reads_its_options() -> None:
    args = ["render", "--only", "ledger-prune", *BASE_ARGS, "--prune-schedule", "0 2 * * *"]
    result = run_cli(args, env={"CONVEYOR_LEDGER_RETENTION": "90d"})
    assert result.exit_code == 0, result.output
    (cron,) = yaml.safe_load_all(result.stdout)
    assert cron["spec"]["schedule"] == "0 2 * * *"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-1] == "90d"


def k8s_commands() -> list[click.Command]:
    group = cli.get_command(click.Context(cli), "k8s")
    assert isinstance(group, click.Group)
    return [group, *group.commands.values()]


def test_every_option_has_an_env_twin_and_help_without_markup() -> None:
    options = [
        param
        for command in k8s_commands()
        for param in command.params
        if isinstance(param, click.Option)
    ]
    assert len(options) > 40
    for option in options:
        assert option.show_envvar and option.envvar, option.name
        envvars = [option.envvar] if isinstance(option.envvar, str) else option.envvar
        assert envvars[0].startswith("CONVEYOR_"), option.name
        assert option.help and "`" not in option.help, option.name
    for command in k8s_commands():
        assert "`" not in (command.help or ""), command.name


def test_policy_help_lists_only_the_options_policies_are_made_of() -> None:
    policy_help = run_cli(["policy", "--help"]).stdout
    render_help = run_cli(["render", "--help"]).stdout
    for flag in ("--image", "--queue", "--dlq", "--region", "--oidc-issuer", "--kms-key-arn"):
        assert flag in policy_help and flag in render_help
    for flag in ("--efs-id", "--parallelism", "--keda-max-replicas", "--ledger-secret", "--only"):
        assert flag not in policy_help and flag in render_help
    assert policy_help.count("--") < 20
    for title in ("Names and AWS:", "Worker pods:", "EFS storage:", "KEDA:", "Pull secret:"):
        assert title in render_help


def test_policy_is_not_stopped_by_render_only_settings() -> None:
    # A shell set up for `render` (a bad CPU limit, say) still prints policies.
    result = run_cli(["policy", "worker", "--queue", QUEUE], env={"CONVEYOR_K8S_CPU_LIMIT": "lots"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == render_policy(SCENARIOS["csi"], "worker")
    refused = run_cli(["render", *BASE_ARGS], env={"CONVEYOR_K8S_CPU_LIMIT": "lots"})
    assert refused.exit_code == EXIT_CONFIG and "--cpu-limit" in refused.stderr


def test_run_args_with_an_unbalanced_quote_is_a_usage_error_not_a_traceback() -> None:
    result = run_cli(["render", "--only", "job", *BASE_ARGS, "--run-args", "dlq list 'x"])
    assert result.exit_code == 2
    assert "--run-args" in result.stderr and "quotation" in result.stderr
    assert "Traceback" not in result.output
