"""``conveyor.client``: ``connect()`` and its configuration; Client.get, cancel, records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import conveyor
from conveyor.client import Client, connect
from conveyor.errors import ConfigError
from conveyor.jobs import JobState
from conveyor.ledger import AmbiguousJobId, JobFinished, JobNotFound, JobRecord
from conveyor.settings import Settings, settings_from_env
from conveyor.settings_table import OPTIONS
from conveyor.task_registry import Task


def test_keywords_win_over_the_environment_which_wins_over_defaults() -> None:
    env = {
        "CONVEYOR_STORAGE": "/data",
        "SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/jobs",
        "CONVEYOR_BATCH_SIZE": "3",
        "CONVEYOR_UNTIL_EMPTY": "yes",
        "CONVEYOR_IMPORT": "a.b c.py",
    }

    settings = settings_from_env(env, visibility_timeout_s=90, batch_size="4")

    assert settings.storage == Path("/data")
    assert settings.queue_url == "https://sqs.eu-west-1.amazonaws.com/1/jobs"
    assert settings.wait_s == 20.0  # SQS's default wait
    assert (settings.visibility_timeout_s, settings.batch_size) == (90, 4)
    assert settings.until_empty is True
    assert settings.imports == ("a.b", "c.py")
    assert settings.grace_s == Settings().grace_s


def test_flag_spellings_and_field_names_are_both_keywords() -> None:
    by_flag = settings_from_env({}, queue="sqlite:///q.db", ledger="sqlite:///l.db", heartbeat_s=2)
    by_field = settings_from_env(
        {}, queue_url="sqlite:///q.db", ledger_url="sqlite:///l.db", heartbeat_every_s=2
    )

    assert by_flag == by_field
    assert by_flag.wait_s == 2.0  # SQLite's default wait
    assert by_flag.heartbeat_every_s == 2


def test_a_list_keyword_given_one_string_takes_it_whole() -> None:
    assert settings_from_env({}, imports="my tasks/a b.py").imports == ("my tasks/a b.py",)
    assert settings_from_env({}, imports=["a", Path("b.py")]).imports == ("a", "b.py")
    assert settings_from_env({"CONVEYOR_IMPORT": "a b"}).imports == ("a", "b")


def test_conveyor_queue_url_wins_over_sqs_queue_url_and_empty_values_are_unset() -> None:
    env = {"CONVEYOR_QUEUE_URL": "", "SQS_QUEUE_URL": "https://sqs.x/1/q", "CONVEYOR_WAIT_S": ""}
    assert settings_from_env(env).queue_url == "https://sqs.x/1/q"
    env["CONVEYOR_QUEUE_URL"] = "sqlite:///q.db"
    assert settings_from_env(env).queue_url == "sqlite:///q.db"


@pytest.mark.parametrize(
    ("env", "keywords", "message"),
    [
        ({"CONVEYOR_BATCH_SIZE": "11"}, {}, "CONVEYOR_BATCH_SIZE (--batch-size)"),
        ({"CONVEYOR_VISIBILITY_TIMEOUT_S": "ten"}, {}, "an integer from 1 to 43200"),
        ({"CONVEYOR_UNTIL_EMPTY": "maybe"}, {}, "a boolean"),
        ({}, {"log_format": "yaml"}, "one of auto, json, text"),
        ({}, {"batch_size": 2.5}, "batch_size="),
        ({}, {"no_such_setting": 1}, "unknown setting 'no_such_setting'"),
        ({}, {"queue": "a", "queue_url": "b"}, "given twice"),
        ({}, {"heartbeat_s": 60, "visibility_timeout_s": 60}, "--heartbeat-s must be shorter"),
    ],
)
def test_bad_settings_are_one_clear_config_error(
    env: dict[str, str], keywords: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from_env(env, **keywords)


def test_the_command_line_and_connect_read_the_environment_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a value in the environment for every option of `conveyor worker`
    import conveyor.cli.worker as cli_worker
    from conveyor.cli import cli

    env = {
        "CONVEYOR_STORAGE": str(tmp_path),
        "CONVEYOR_QUEUE_URL": "sqlite:///q.db",
        "CONVEYOR_ENDPOINT_URL": "http://127.0.0.1:9",
        "CONVEYOR_LEDGER_URL": "sqlite:///l.db",
        "CONVEYOR_VISIBILITY_TIMEOUT_S": "91",
        "CONVEYOR_HEARTBEAT_S": "7.5",
        "CONVEYOR_WAIT_S": "1.5",
        "CONVEYOR_BATCH_SIZE": "3",
        "CONVEYOR_GRACE_S": "12",
        "CONVEYOR_PROCESSES": "1",
        "CONVEYOR_UNTIL_EMPTY": "true",
        "CONVEYOR_EMPTY_POLLS": "4",
        "CONVEYOR_MAX_JOBS": "9",
        "CONVEYOR_MAX_IDLE_S": "30",
        "CONVEYOR_MAX_RECEIVE_COUNT": "6",
        "CONVEYOR_RETRY_BASE_S": "2",
        "CONVEYOR_RETRY_MAX_S": "60",
        "CONVEYOR_IMPORT": "a.b c.py",
        "CONVEYOR_HEALTH_FILE": str(tmp_path / "alive"),
        "CONVEYOR_METRICS_PORT": "9100",
        "CONVEYOR_METRICS_HOST": "0.0.0.0",
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_LOG_LEVEL": "debug",
        "CONVEYOR_DEBUG": "1",
    }
    assert {option.env[0] for option in OPTIONS.values()} == set(env)  # every option
    seen: list[Settings] = []
    monkeypatch.setattr(cli_worker, "run_worker", lambda s: seen.append(s) or 0)
    monkeypatch.setattr(cli_worker, "configure_logging", lambda *a: None)
    # When the command line and the library each build their settings from it
    done = CliRunner().invoke(cli, ["worker"], env=env)
    # Then they are the same settings
    assert done.exit_code == 0, done.output
    assert seen == [settings_from_env(env)]


def test_get_accepts_any_case_and_unique_prefixes(client: Client) -> None:
    job = client.submit(task="noop")

    assert client.get(job.job_id.lower()).job_id == job.job_id
    assert client.get(job.job_id[:20].lower()).job_id == job.job_id
    with pytest.raises(JobNotFound):
        client.get("ZZZZZZ")
    client.submit(task="noop")
    with pytest.raises(AmbiguousJobId):
        client.get(job.job_id[:2])


def test_cancel_a_queued_job_and_refuse_a_finished_one(client: Client) -> None:
    queued_job = client.submit(task="noop")
    finished = client.submit(task="noop")
    client.ledger.record(finished.job_id, JobState.SUCCEEDED, attempt=1)

    record = client.cancel(queued_job.job_id.lower(), reason="changed my mind")

    assert (record.state, record.error) == (JobState.CANCELLED, "changed my mind")
    assert client.cancel(queued_job.job_id).state is JobState.CANCELLED  # idempotent
    with pytest.raises(JobFinished, match="already succeeded"):
        client.cancel(finished.job_id)


def test_job_records_are_json_ready(client: Client) -> None:
    job = client.submit(task="noop", params={"k": "v"})
    data = client.get(job.job_id).to_dict()
    assert json.loads(json.dumps(data))["job_id"] == job.job_id


def test_the_package_exports_the_api() -> None:
    assert conveyor.connect is connect
    assert conveyor.Client is Client
    assert conveyor.JobRecord is JobRecord
    assert conveyor.Task is Task
    assert callable(conveyor.open_queue)
    assert set(conveyor.__all__) <= set(dir(conveyor))
