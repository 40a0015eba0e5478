"""The bad-input corpus (tests/corpus/) through one real worker: each case ends as its index
says, nothing runs that should not, and the worker goes on to a valid job sent after them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conveyor.csvjob import transform_csv
from conveyor.errors import MessageTooLarge
from conveyor.jobs import Job, job_id_of
from conveyor.queues.messages import Outgoing
from tests.e2e.conftest import QueueEnv
from tests.faults.checker import Expect, account, assert_clean
from tests.faults.conftest import FaultReport
from tests.faults.harness import send_raw, worker_pool

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
CASES: list[dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())["cases"]
SECRET = b"ID,Value\nsecret,1\n"


def test_the_corpus_index_is_complete() -> None:
    listed = {case.get("message") or case.get("input") for case in CASES}
    on_disk = {
        str(path.relative_to(CORPUS))
        for path in CORPUS.rglob("*")
        if path.is_file() and path.name != "expected.json"
    }
    assert on_disk - listed == {"inputs/valid.csv"}  # the one good input the cases use
    assert listed <= on_disk
    assert {case["expect"] for case in CASES} == {"failed", "dead_lettered", "rejected_on_send"}
    assert all(case["reason"] for case in CASES)


def body_of(case: dict[str, Any], marker: Path, storage: Path) -> str:
    """The message a case sends: its file (a message case), or a csv-process job of its
    input copied into the storage (an input case)."""
    if "message" in case:
        body = (CORPUS / case["message"]).read_text().replace("@MARKER@", str(marker))
        if "pad_to_bytes" in case:
            data = json.loads(body)
            data["params"]["pad"] = "x" * int(case["pad_to_bytes"])
            body = json.dumps(data)
        return body
    job_id = f"corpus-{case['case']}"
    source = CORPUS / case["input"]
    target = storage / "inputs" / job_id / source.name
    target.parent.mkdir(parents=True)
    target.write_bytes(source.read_bytes().replace(b"@MARKER@", str(marker).encode()))
    job = Job(
        job_id=job_id,
        task="csv-process",
        input=str(target.relative_to(storage)),
        output=f"outputs/{job_id}.csv",
        seed=7,
    )
    return job.to_json()


@pytest.mark.slow
def test_every_bad_input_ends_as_expected_and_the_worker_goes_on(
    queue_env: QueueEnv, fault_report: FaultReport, tmp_path: Path
) -> None:
    storage = queue_env.storage
    marker = tmp_path / "unpickled"  # created only if something ever unpickles a payload
    # Given a valid input, and things outside the storage that paths try to reach
    (storage / "inputs").mkdir()
    shutil.copy(CORPUS / "inputs/valid.csv", storage / "inputs/valid.csv")
    outside, sibling = tmp_path / "outside", tmp_path / "storage-evil"  # "storage" + "-evil"
    for directory in (outside, sibling):
        directory.mkdir()
        (directory / "secret.csv").write_bytes(SECRET)
    (storage / "inputs/escape").symlink_to(outside)
    (storage / "inputs/sibling").symlink_to(sibling)
    # When every case is sent (those the queue refuses are refused at once)...
    sent: list[tuple[dict[str, Any], str]] = []
    with queue_env.open_queue() as queue:
        for case in CASES:
            body = body_of(case, marker, storage)
            if case["expect"] == "rejected_on_send":
                with pytest.raises(MessageTooLarge, match=case["reason"]):
                    queue.send(Outgoing(body))
            else:
                sent.append((case, body))
    # ...then one valid job, and one worker runs until the queue is empty
    valid = Job(task="csv-process", input="inputs/valid.csv", output="outputs/valid.csv", seed=7)
    send_raw(queue_env, [body for _, body in sent] + [valid.to_json()])
    with worker_pool(queue_env.env, queue_env.work) as start:
        worker = start("--until-empty")
        assert worker.wait(120) == 0, worker.log()

    # Then each case ended as its index says, with its reason
    letters = {letter.body: letter for letter in _dead_letters(queue_env)}
    expects = []
    for case, body in sent:
        assert body in letters, f"{case['case']}: not in the dead-letter queue"
        assert case["reason"] in (letters[body].reason or ""), (case, letters[body].reason)
        job_id = job_id_of(body)
        if case["expect"] == "failed":
            assert job_id is not None, case["case"]
            output = json.loads(body).get("output")  # even a hostile one must not exist
            output = output if isinstance(output, str) else "-"
            expects.append(Expect(job_id, output, None, reason=case["reason"]))
        else:
            assert job_id is None, case["case"]
    reference = tmp_path / "reference.csv"
    transform_csv(storage / "inputs/valid.csv", reference, 7)
    expects.append(Expect(valid.job_id, "outputs/valid.csv", reference.read_bytes()))
    summary = account("bad-input corpus, one worker", expects, queue_env)
    summary["jobs"] = len(CASES) + 1
    summary["rejected_on_send"] = sum(c["expect"] == "rejected_on_send" for c in CASES)
    summary["dead_lettered_without_id"] = sum(c["expect"] == "dead_lettered" for c, _ in sent)
    fault_report.add(summary)
    assert_clean(summary)
    # And nothing ran that should not have: no pickle was loaded, nothing escaped
    assert not marker.exists()
    for directory in (outside, sibling):
        assert (directory / "secret.csv").read_bytes() == SECRET
        assert sorted(p.name for p in directory.iterdir()) == ["secret.csv"]
    assert not list(tmp_path.rglob("pwned.csv"))
    assert sorted(p.name for p in (storage / "outputs").iterdir()) == ["valid.csv"]
    assert "Traceback" not in worker.log()  # every case had a clear, one-line reason


def _dead_letters(queue_env: QueueEnv) -> list[Any]:
    with queue_env.open_queue() as queue:
        return queue.dead_letters(1000)
