"""``conveyor worker``'s command line: its settings (flags, env twins, child processes) and
its refusals (exit 78, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import conveyor.cli.worker as cli_worker
import conveyor.worker.placement as placement
from conveyor import supervisor
from conveyor.cli import cli
from conveyor.ledger import default_ledger_url
from conveyor.settings import Settings
from tests.unit.worker.test_placement import EFS_MOUNTINFO


def test_worker_processes_get_the_same_settings_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr(cli_worker, "run_worker", lambda s: seen.append(s) or 0)
    monkeypatch.setattr(cli_worker, "configure_logging", lambda *a: None)
    args = [
        "worker", f"--storage={tmp_path}", "--queue=sqlite:///q.db", "--visibility-timeout-s=90",
        "--heartbeat-s=7", "--wait-s=1.5", "--batch-size=3", "--grace-s=12", "--until-empty",
        "--empty-polls=4", "--max-jobs=9", "--max-idle-s=30", "--max-receive-count=6",
        "--retry-base-s=2", "--retry-max-s=60", "--import=a.b", "--import=my tasks/c d.py",
        f"--health-file={tmp_path / 'alive'}", "--log-format=json", "--log-level=debug",
        "--ledger=postgresql://u:pw@db.example:5432/jobs",
    ]  # fmt: skip
    assert CliRunner().invoke(cli, args).exit_code == 0
    from_flags = seen.pop()
    parent = from_flags.with_(processes=4)
    env = supervisor.child_environment(parent)
    command = supervisor.child_command(parent)

    assert command[1:4] == ["-m", "conveyor", "worker"]
    result = CliRunner().invoke(cli, command[3:], env=env)

    assert result.exit_code == 0, result.output
    assert seen.pop() == from_flags
    assert from_flags.wait_s == 1.5
    assert from_flags.imports == ("a.b", "my tasks/c d.py")  # a path with spaces, intact
    assert from_flags.ledger_url == "postgresql://u:pw@db.example:5432/jobs"
    assert "CONVEYOR_IMPORT" not in env


def test_the_ledger_url_comes_from_the_flag_or_its_env_twin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr(cli_worker, "run_worker", lambda s: seen.append(s) or 0)
    monkeypatch.setattr(cli_worker, "configure_logging", lambda *a: None)
    url = "postgresql://conveyor:hunter2@db.example/jobs"

    CliRunner().invoke(cli, ["worker", f"--storage={tmp_path}"])
    CliRunner().invoke(cli, ["worker", f"--storage={tmp_path}"], env={"CONVEYOR_LEDGER_URL": url})
    CliRunner().invoke(cli, ["worker", f"--storage={tmp_path}", "--ledger", "sqlite:///x.db"])
    shown = CliRunner().invoke(cli, ["worker", "--help"], env={"CONVEYOR_LEDGER_URL": url})

    assert [s.ledger_url for s in seen] == [None, url, "sqlite:///x.db"]
    assert seen[0].resolved_ledger_url == default_ledger_url(tmp_path)
    assert "CONVEYOR_LEDGER_URL" in shown.output
    assert "hunter2" not in shown.output


def test_sqlite_gets_a_short_default_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr(cli_worker, "run_worker", lambda s: seen.append(s) or 0)
    monkeypatch.setattr(cli_worker, "configure_logging", lambda *a: None)

    CliRunner().invoke(cli, ["worker", f"--storage={tmp_path}"])
    CliRunner().invoke(cli, ["worker", "--queue=https://sqs.us-east-1.amazonaws.com/1/q"])

    assert [s.wait_s for s in seen] == [2.0, 20.0]


def test_a_worker_on_shared_storage_without_a_ledger_url_exits_78_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    efs = tmp_path / "efs"
    efs.mkdir()  # the mount point
    real = placement.network_filesystem_of
    mountinfo = EFS_MOUNTINFO.format(root=efs)
    monkeypatch.setattr(
        placement, "network_filesystem_of", lambda path, _=None: real(path, mountinfo)
    )
    monkeypatch.setattr("conveyor.cli.worker.configure_logging", lambda *a: None)

    done = CliRunner().invoke(cli, ["worker", f"--storage={efs / 'conveyor'}", "--until-empty"])

    assert done.exit_code == 78, done.output
    (line,) = done.output.strip().splitlines()
    assert line.startswith("conveyor: error: storage ")
    assert "set CONVEYOR_LEDGER_URL" in line
    assert list(efs.iterdir()) == []  # refused before creating anything
