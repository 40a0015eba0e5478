"""Job groups end to end: a CSV split into shards run by real worker processes, merged by
the group's completion into output byte-identical to ``conveyor run`` on the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.client import Client, Group
from conveyor.jobs import JobState
from conveyor.ledger import GroupState
from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import run, workers

SEED = 4242


def reference(env: QueueEnv, source: Path) -> bytes:
    """What ``conveyor run`` writes for the whole file with the seed."""
    out = env.work / f"{source.stem}.reference.csv"
    run("run", source, "--output", out, "--seed", str(SEED), env=env.env, cwd=env.work)
    return out.read_bytes()


def submit_split(env: QueueEnv, source: Path, split_rows: int, **options: object) -> Group:
    with Client(env.settings) as client:
        group = client.submit(source, split_rows=split_rows, seed=SEED, **options)  # type: ignore[call-overload]
    assert isinstance(group, Group)
    return group


def leftovers(storage: Path) -> list[str]:
    """Part files, part directories and temporary files left in the outputs."""
    found = []
    for path in (storage / "outputs").rglob("*"):
        if ".parts-" in path.name or ".parts-" in str(path.parent) or ".tmp" in path.name:
            found.append(str(path.relative_to(storage)))
    return found


def merged_output(env: QueueEnv, group: Group) -> Path:
    with env.open_ledger(create=False) as ledger:
        record = ledger.get(group.completion_job_id or "")
    assert record is not None
    assert record.state is JobState.SUCCEEDED, record
    with Client(env.settings) as client:
        job = client.get(group.completion_job_id or "")
    assert job.state is JobState.SUCCEEDED
    return next((env.storage / "outputs" / group.group_id).glob("*.csv"))


@pytest.mark.parametrize("split_rows", [1, 7, 1000])
def test_a_split_csv_merges_byte_identical_to_conveyor_run(
    local_env: QueueEnv, split_rows: int
) -> None:
    # Given a small CSV, and its output from `conveyor run` with a seed
    source = _write_rows(local_env.work / "big.csv", 60)
    expected = reference(local_env, source)
    # When it is submitted split in shards of N rows and two workers drain the queue
    group = submit_split(local_env, source, split_rows)
    assert len(group.jobs) == -(-60 // split_rows)
    with workers(local_env.env, local_env.work) as start:
        running = [start("--until-empty") for _ in range(2)]
        for worker in running:
            assert worker.wait() == 0, worker.log()
    # Then the group succeeded, the merged output is byte-identical, and no part is left
    with Client(local_env.settings) as client:
        record = client.wait_group(group.group_id, timeout_s=30)
    assert record.state is GroupState.SUCCEEDED, record
    assert record.counts[JobState.SUCCEEDED] == len(group.jobs)
    final = merged_output(local_env, group)
    assert final.read_bytes() == expected
    assert leftovers(local_env.storage) == []


def _write_rows(path: Path, rows: int, *, bad_row: int | None = None) -> Path:
    lines = ["ID,Value"]
    for i in range(rows):
        lines.append(f"{i},not-a-number" if i == bad_row else f"{i},{i * 1.5 + 0.25}")
    path.write_text("\n".join(lines) + "\n")
    return path
