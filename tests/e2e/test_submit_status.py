"""``submit``, ``status``, ``queue``, ``dlq`` and ``health`` as a user runs them."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from conveyor.jobs import Job
from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import run, run_json, write_csv
from tests.fixtures.sqs import fake_aws_env

EXAMPLE_TASK = Path(__file__).parents[2] / "examples" / "wordcount_task.py"


def test_submit_prints_one_job_id_per_file_and_records_them_queued(queue_env: QueueEnv) -> None:
    inputs = [write_csv(queue_env.work / f"in-{i}.csv", 5) for i in range(12)]

    done = run("submit", *inputs, env=queue_env.env)

    job_ids = done.stdout.split()
    assert len(job_ids) == len(set(job_ids)) == 12
    summary = run_json("status", env=queue_env.env)
    assert summary["counts"]["queued"] == 12
    assert summary["queue"]["visible"] == 12
    record = run_json("status", job_ids[3], env=queue_env.env)
    assert record["state"] == "queued"
    assert record["input"] == f"inputs/{job_ids[3]}/in-3.csv"
    copied = queue_env.storage / record["input"]
    assert copied.read_bytes() == inputs[3].read_bytes()


def test_submit_params_seed_and_output_reach_the_message(queue_env: QueueEnv) -> None:
    source = write_csv(queue_env.work / "in.csv", 3)

    (job,) = run_json(
        "submit",
        "--task=csv-process",
        "--param=n=5",
        "--param=name=abc",
        '--param=tags=["a", "b"]',
        "--seed=42",
        "--output=results/out.csv",
        source,
        env=queue_env.env,
    )

    with queue_env.open_queue() as queue:
        (received,) = queue.receive(1, 1)
    sent = Job.from_json(received.body)
    assert sent.job_id == job["job_id"]
    assert sent.params == {"n": 5, "name": "abc", "tags": ["a", "b"]}
    assert sent.seed == 42
    assert sent.output == "results/out.csv"
    assert run_json("status", sent.job_id, env=queue_env.env)["seed"] == 42


def test_submit_gives_a_new_seed_per_job_by_default(local_env: QueueEnv) -> None:
    inputs = [write_csv(local_env.work / f"in-{i}.csv", 1) for i in range(3)]

    jobs = run_json("submit", *inputs, env=local_env.env)

    assert len({job["seed"] for job in jobs}) == 3


def test_submit_in_storage_names_files_already_there(local_env: QueueEnv) -> None:
    write_csv(local_env.storage / "incoming" / "a.csv", 2)
    listing = local_env.work / "list.txt"
    listing.write_text("incoming/a.csv\n")

    (job,) = run_json("submit", "--in-storage", "--files-from", listing, env=local_env.env)

    assert job["input"] == "incoming/a.csv"
    assert job["output"] == f"outputs/{job['job_id']}/a.csv"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--task=no-such-task", "{csv}"], 65, "unknown task 'no-such-task'"),
        (["{work}/missing.csv"], 65, "input file not found"),
        (["--in-storage", "../outside.csv"], 65, "'..' is not allowed"),
        (["--output=o.csv", "{csv}", "{csv}"], 2, "--output names one output"),
        (["--param=novalue", "{csv}"], 2, "expected KEY=VALUE"),
        ([], 2, "give at least one file"),
    ],
)
def test_submit_rejects_bad_requests_with_one_clear_line(
    local_env: QueueEnv, args: list[str], code: int, message: str
) -> None:
    csv = write_csv(local_env.work / "ok.csv", 1)
    filled = [arg.format(csv=csv, work=local_env.work) for arg in args]

    done = run("submit", *filled, env=local_env.env, check=False)

    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_wordcount_example_runs_as_the_readme_says(local_env: QueueEnv, tmp_path: Path) -> None:
    cwd = tmp_path / "project"
    (cwd / "examples").mkdir(parents=True)
    shutil.copy(EXAMPLE_TASK, cwd / "examples" / "wordcount_task.py")
    (cwd / "notes.txt").write_text("The cat and the hat.\nThe END\n")
    # The defaults, as in the README: ./conveyor-data holding the SQLite queue too.
    env = {
        k: v
        for k, v in local_env.env.items()
        if k not in ("CONVEYOR_STORAGE", "CONVEYOR_QUEUE_URL")
    }

    submitted = run(
        "submit",
        "--task",
        "wordcount",
        "--import",
        "examples/wordcount_task.py",
        "notes.txt",
        env=env,
        cwd=cwd,
    )
    worked = run(
        "worker", "--import", "examples/wordcount_task.py", "--until-empty", env=env, cwd=cwd
    )

    assert worked.returncode == 0
    (job_id,) = submitted.stdout.split()
    output = cwd / "conveyor-data" / "outputs" / job_id / "notes.txt"
    assert output.read_text() == "word,count\nthe,3\nand,1\ncat,1\nend,1\nhat,1\n"
    record = run_json("status", job_id, env=env, cwd=cwd)
    assert record["result"] == {"words": 7, "distinct": 5, "rows": 5}


def test_status_lists_failures_and_dlq_redrive_reopens_them(queue_env: QueueEnv) -> None:
    bad = queue_env.work / "bad.csv"
    bad.write_text("ID,Value\n1,oops\n")
    (job,) = run_json("submit", bad, env=queue_env.env)
    run("worker", "--until-empty", env=queue_env.env)
    summary = run("status", env=queue_env.env).stdout
    assert "failed 1" in summary
    assert job["job_id"] in summary  # listed under failures, with its reason
    (listed,) = run_json("dlq", "list", env=queue_env.env)
    assert listed["job_id"] == job["job_id"]
    # The user fixes the input, then redrives.
    write_csv(queue_env.storage / job["input"], 2)

    redriven = run("dlq", "redrive", env=queue_env.env)

    assert "redrove 1 message(s); reopened 1 job(s) as queued" in redriven.stdout
    assert run_json("status", job["job_id"], env=queue_env.env)["state"] == "queued"
    run("worker", "--until-empty", env=queue_env.env)
    assert run_json("status", job["job_id"], env=queue_env.env)["state"] == "succeeded"
    assert run_json("dlq", "list", env=queue_env.env) == []


def test_queue_purge_asks_first(queue_env: QueueEnv) -> None:
    run("submit", write_csv(queue_env.work / "a.csv", 1), env=queue_env.env)

    refused = run("queue", "purge", env=queue_env.env, input_text="n\n", check=False)
    assert refused.returncode == 1
    assert run_json("queue", "stats", env=queue_env.env)["visible"] == 1

    run("queue", "purge", "--yes", env=queue_env.env)
    stats = run_json("queue", "stats", env=queue_env.env)
    assert stats["visible"] + stats["in_flight"] + stats["delayed"] == 0


def test_queue_create_and_delete_an_embedded_queue(tmp_path: Path, local_env: QueueEnv) -> None:
    path = tmp_path / "made" / "jobs.db"

    created = run("queue", "create", path, env=local_env.env)

    url = created.stdout.strip()
    assert url == f"sqlite:///{path}"
    assert path.exists()
    stats = run_json("queue", "stats", "--queue", url, env=local_env.env)
    assert stats["visible"] == 0
    run("queue", "delete", "--queue", url, "--yes", env=local_env.env)
    assert not path.exists()


def test_health_checks_the_age_of_the_file(tmp_path: Path, local_env: QueueEnv) -> None:
    health = tmp_path / "alive"
    run("worker", "--max-jobs=1", "--max-idle-s=0.3", f"--health-file={health}", env=local_env.env)

    assert run("health", "--file", health, "--max-age-s", "60", env=local_env.env).returncode == 0
    old = time.time() - 300
    os.utime(health, (old, old))
    stale = run("health", "--file", health, "--max-age-s", "60", env=local_env.env, check=False)
    assert stale.returncode == 1
    assert "unhealthy" in stale.stderr
    missing = run("health", "--file", tmp_path / "nope", env=local_env.env, check=False)
    assert missing.returncode == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"CONVEYOR_IMPORT": "no_such_module_anywhere"}, "cannot import task module"),
        ({"CONVEYOR_QUEUE_URL": "ftp://nowhere/queue"}, "unknown queue URL"),
        ({"CONVEYOR_STORAGE": "{work}/a-file/storage"}, "cannot create the storage root"),
        ({"CONVEYOR_LEDGER_URL": "mysql://nowhere/ledger"}, "unknown ledger URL"),
    ],
)
def test_worker_with_broken_configuration_exits_78(
    local_env: QueueEnv, extra: dict[str, str], message: str
) -> None:
    (local_env.work / "a-file").write_text("a file where a directory should be")
    filled = {key: value.format(work=local_env.work) for key, value in extra.items()}

    done = run("worker", "--until-empty", env=local_env.with_env(**filled), check=False)

    assert done.returncode == 78, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_queue_create_and_delete_an_sqs_queue(sqs_endpoint: str, local_env: QueueEnv) -> None:
    env = {k: v for k, v in local_env.env.items() if k != "CONVEYOR_QUEUE_URL"}
    env.update(fake_aws_env(sqs_endpoint, local_env.work))

    created = run("queue", "create", "jobs", "--max-receive-count=4", env=env)

    url = created.stdout.strip()
    assert url.endswith("/jobs")
    assert run_json("queue", "stats", "--queue", url, env=env)["dead_lettered"] == 0
    deleted = run("queue", "delete", "--queue", url, "--yes", env=env)
    assert deleted.stdout.split() == ["deleted", url, "deleted", f"{url}-dlq"]


# --- the ledger through status and submit ---------------------------------------------------


def test_status_before_anything_was_submitted_says_so_and_creates_nothing(
    local_env: QueueEnv, tmp_path: Path
) -> None:
    for storage in (tmp_path / "never-made", local_env.storage):
        env = local_env.with_env(CONVEYOR_STORAGE=str(storage))
        env.pop("CONVEYOR_QUEUE_URL")  # the embedded queue, in the storage root

        shown = run("status", env=env)
        as_json = run_json("status", env=env)
        listed = run_json("status", "--state", "failed", env=env)

        assert shown.stdout.strip() == f"nothing submitted yet under {storage}"
        assert (as_json["total"], as_json["counts"]["queued"]) == (0, 0)
        assert listed == []
        missing = run("status", "J1", env=env, check=False)
        assert missing.returncode == 1
        assert "nothing submitted yet" in missing.stderr
    assert not (tmp_path / "never-made").exists()
    assert list(local_env.storage.iterdir()) == []


def test_status_with_a_mistyped_ledger_url_is_a_config_error(
    local_env: QueueEnv, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/mistyped/ledger.db"

    done = run("status", "--ledger", url, env=local_env.env, check=False)

    assert done.returncode == 78, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mistyped").exists()


def test_status_finds_a_job_by_a_unique_prefix_in_any_case(ledger_env: QueueEnv) -> None:
    inputs = [write_csv(ledger_env.work / f"in-{i}.csv", 1) for i in range(3)]
    jobs = run_json("submit", *inputs, env=ledger_env.env)
    ids = [job["job_id"] for job in jobs]
    # The longest prefix ids[1] shares with another id (ids of one submit share their time
    # part): one more character makes it unique.
    common = max(_shared_length(ids[1], other) for other in (ids[0], ids[2]))
    assert common >= 1

    record = run_json("status", ids[1][: common + 1].lower(), env=ledger_env.env)
    shared = run("status", ids[1][:common], env=ledger_env.env, check=False)

    assert record["job_id"] == ids[1]
    assert record["source"].endswith("in-1.csv")
    assert [step["state"] for step in record["history"]] == ["queued"]
    assert shared.returncode == 65, shared.stderr
    assert "matches several jobs" in shared.stderr
    assert len(shared.stderr.strip().splitlines()) == 1


def test_status_pages_jobs_by_state_and_task_and_counts_by_task(
    ledger_env: QueueEnv,
) -> None:
    csvs = [write_csv(ledger_env.work / f"part-{i}.csv", 1) for i in range(5)]
    texts = []
    for i in range(2):
        texts.append(ledger_env.work / f"note-{i}.txt")
        texts[-1].write_text("a word\n")
    run("submit", *csvs, env=ledger_env.env)
    run("submit", "--task=wordcount", f"--import={EXAMPLE_TASK}", *texts, env=ledger_env.env)

    pages: list[list[str]] = []
    before: list[str] = []
    while True:
        shown = run(
            "status", "--state=queued", "--limit=3", *before, env=ledger_env.env
        ).stdout.splitlines()
        rows = [line for line in shown if not line.startswith("next page: ")]
        pages.append(rows)
        if len(rows) < 3:
            assert len(rows) == len(shown)  # no cursor after the last page
            break
        assert shown[-1].startswith("next page: --before ")
        before = ["--before", shown[-1].removeprefix("next page: --before ")]

    assert [len(rows) for rows in pages] == [3, 3, 1]
    listed = [row.split()[0] for rows in pages for row in rows]
    assert len(set(listed)) == 7
    words = run_json("status", "--task=wordcount", "--state=queued", env=ledger_env.env)
    assert sorted(Path(job["source"]).name for job in words) == ["note-0.txt", "note-1.txt"]
    assert all(job["cursor"] for job in words)
    assert "note-0.txt" in run("status", "--task=wordcount", env=ledger_env.env).stdout
    summary = run("status", env=ledger_env.env).stdout
    assert "csv-process:  5 total  queued 5" in summary
    assert "wordcount:  2 total  queued 2" in summary
    bad = run("status", "--state=queued", "--before=nonsense", env=ledger_env.env, check=False)
    assert bad.returncode == 65
    assert "bad cursor" in bad.stderr


def test_submit_refuses_an_output_that_is_its_own_input(local_env: QueueEnv) -> None:
    write_csv(local_env.storage / "incoming" / "a.csv", 2)
    (local_env.storage / "incoming" / "link.csv").symlink_to("a.csv")

    for output in ("incoming/a.csv", "incoming/./a.csv", "incoming/link.csv"):
        done = run(
            "submit", "--in-storage", f"--output={output}", "incoming/a.csv",
            env=local_env.env, check=False,
        )  # fmt: skip

        assert done.returncode == 65, done.stderr
        assert "would overwrite its own input" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    # Refused before the queue was even opened: nothing was created
    stats = run("queue", "stats", env=local_env.env, check=False)
    assert stats.returncode == 78 and "nothing submitted yet" in stats.stderr
    assert run_json("status", env=local_env.env)["total"] == 0


def test_the_ledger_password_never_shows(ledger_env: QueueEnv) -> None:
    secret = "s3cret-Pa55"
    url = ledger_env.ledger_url
    if ledger_env.ledger_backend == "postgresql":
        # The test server trusts loopback, so a password in the URL is accepted and unused.
        scheme, _, rest = url.partition("://")
        user, _, host = rest.partition("@")
        url = f"{scheme}://{user.partition(':')[0]}:{secret}@{host}"
    env = ledger_env.with_env(CONVEYOR_LEDGER_URL=url)

    helps = [run(command, "--help", env=env).stdout for command in ("worker", "status", "submit")]
    worked = run("worker", "--until-empty", "--log-format=text", env=env)

    for text in [*helps, worked.stdout, worked.stderr]:
        assert secret not in text
    assert all("CONVEYOR_LEDGER_URL" in text for text in helps)
    assert f"ledger {url.split('://')[0]}://" in worked.stderr


def _shared_length(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` have in common."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
