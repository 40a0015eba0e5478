"""``conveyor.submit_plan``: the items of a submit and the checks of every job before
anything is copied or sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.client import Client
from conveyor.errors import BadInput, UnknownTask
from tests.unit.client_helpers import files, input_dirs, queued


def test_submit_many_takes_paths_none_and_mappings(client: Client, tmp_path: Path) -> None:
    a, b = files(tmp_path / "work", 2)
    items: list[Any] = [
        a,
        None,
        {"input": str(b), "params": {"top": 3}, "seed": 7, "output": "out/b.csv"},
    ]

    jobs = client.submit_many(items, task="noop", params={"top": 1, "x": True})

    assert [job.params for job in jobs] == [{"top": 1, "x": True}] * 2 + [{"top": 3, "x": True}]
    assert jobs[1].input is None
    assert (jobs[2].seed, jobs[2].output) == (7, "out/b.csv")
    assert len({job.seed for job in jobs}) == 3
    assert [job.job_id for job in queued(client.queue)] == [job.job_id for job in jobs]


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("{work}/missing.txt", BadInput, "input file not found"),
        ({"input": "{first}", "color": "red"}, BadInput, "unknown key(s) 'color'"),
        ({"params": {"s": {1, 2}}}, BadInput, "is not a JSON value"),
        ({"seed": -1}, BadInput, "seed"),
        ({"output": "../out"}, BadInput, "'..' is not allowed"),
        ({"output": "same.txt"}, BadInput, "both publish to same.txt"),
        (42, BadInput, "not int"),
    ],
)
def test_nothing_is_copied_or_sent_unless_every_item_is_valid(
    client: Client, tmp_path: Path, bad: Any, error: type[Exception], message: str
) -> None:
    good = files(tmp_path / "work", 12)
    if isinstance(bad, str):
        bad = bad.format(work=tmp_path / "work")
    elif isinstance(bad, dict) and "input" in bad:
        bad = {**bad, "input": str(good[0])}
    items: list[Any] = [*good, {"output": "same.txt"}, bad]

    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        client.submit_many(items, task="noop")

    assert "13" in str(caught.value)  # the bad item is named
    assert input_dirs(client) == set()
    assert queued(client.queue) == []


def test_an_unknown_task_is_refused_before_anything(client: Client, tmp_path: Path) -> None:
    with pytest.raises(UnknownTask, match="unknown task 'nope'"):
        client.submit_many(files(tmp_path / "work", 2), task="nope")
    assert input_dirs(client) == set()


def test_submit_refuses_an_output_that_is_its_input(client: Client) -> None:
    (client.storage.root / "data").mkdir(parents=True)
    (client.storage.root / "data" / "a.csv").write_text("x\n")
    (client.storage.root / "data" / "link.csv").symlink_to("a.csv")

    with pytest.raises(BadInput, match="would overwrite its own input"):
        client.submit("data/a.csv", task="noop", in_storage=True, output="data/a.csv")
    with pytest.raises(BadInput, match="would overwrite its own input"):
        client.submit("data/a.csv", task="noop", in_storage=True, output="data/link.csv")

    job = client.submit(client.storage.root / "data" / "a.csv", task="noop", in_storage=True)
    assert job.input == "data/a.csv"  # an absolute path under the root is taken as relative
