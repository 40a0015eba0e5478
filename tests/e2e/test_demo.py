"""`make demo` and `make demo-sqs` as a new user runs them: the scripts themselves, their
printed next steps run as printed, and proof that the SQS demo really went through SQS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Bounds on the scripts (each takes a few seconds here).
DEMO_TIMEOUT_S = 180
COMMAND_TIMEOUT_S = 60
#: A printed command: two spaces, then the command (prose lines are indented further).
COMMAND_LINE = re.compile(r"^  (?! )(?P<command>\S.*)$")


def script_env(demo_dir: Path) -> dict[str, str]:
    """The environment `make` gives the scripts: the venv's bin first on PATH, the demo
    directory in the test's scratch space, and nothing of the developer's settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CONVEYOR_", "AWS_", "SQS_"))
    }
    venv = Path(sys.prefix)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["DEMO_DIR"] = str(demo_dir)
    if venv.resolve() != (REPO / ".venv").resolve():
        env["VENV"] = str(venv)  # tests run from another virtualenv than make's
    return env


def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", f"scripts/{name}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done


def status_json(storage: Path, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "status", "--json", "--storage", str(storage)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=True,
    )
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def next_commands(stdout: str) -> list[str]:
    """The commands the demo prints after its ``== next`` heading."""
    _, heading, rest = stdout.partition("== next:")
    assert heading, f"the demo printed no next steps:\n{stdout}"
    return [m.group("command") for line in rest.splitlines() if (m := COMMAND_LINE.match(line))]


@pytest.mark.slow
def test_the_demo_ends_with_next_commands_that_run_as_printed(tmp_path: Path) -> None:
    # Given `make demo` just finished
    env = script_env(tmp_path / "demo")
    demo = run_script("demo.sh", env)
    commands = next_commands(demo.stdout)
    # Then it says how to reach `conveyor` without an activated virtualenv
    assert "source " in demo.stdout and "bin/activate" in demo.stdout
    assert len(commands) >= 5
    assert all(re.match(r"\S*bin/conveyor ", command) for command in commands), commands
    # And each command runs as printed, from where `make demo` ran, with no activated venv
    plain = {**env, "PATH": "/usr/bin:/bin"}
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            env=plain,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n--- stdout\n{done.stdout}\n{done.stderr}"
    # And what they did shows: the job submitted again ran, the sample was processed
    counts = status_json(tmp_path / "demo" / "storage", env)["counts"]
    assert counts == {**counts, "succeeded": 6, "queued": 0, "failed": 0}  # type: ignore[dict-item]
    assert (tmp_path / "demo" / "sample-output.csv").read_text().count("\n") == 11


@pytest.mark.slow
def test_the_sqs_demo_really_goes_through_sqs(tmp_path: Path) -> None:
    # When `make demo-sqs` runs
    env = script_env(tmp_path / "demo")
    demo = run_script("demo_sqs.sh", env)
    output = demo.stdout + demo.stderr
    # Then its workers name the SQS queue it created, not a SQLite file
    queue = re.search(r"== queue: (http://127\.0\.0\.1:\d+/\S+/demo-jobs) ", output)
    assert queue is not None, output
    started = re.findall(r"worker \S+ started on (\S+),", output)
    assert started and set(started) == {queue.group(1)}, output
    # And the ledger's request counts are SQS API calls: sends, receives and deletes
    storage = tmp_path / "demo" / "storage"
    requests = status_json(storage, env)["queue_requests"]
    assert isinstance(requests, dict)
    for action in ("SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch"):
        assert requests.get(action, 0) > 0, requests
    assert not {"send", "receive", "ack"} & set(requests), requests  # the SQLite queue's
    assert not (storage / "_conveyor" / "queue.db").exists()
    assert len(list((storage / "outputs").glob("*/*.csv"))) == 5
