"""Property-based tests over what a hostile or broken producer can send: message envelopes
through a real worker, CSV inputs through the task, paths through the storage."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conveyor.csvjob import transform_csv
from conveyor.errors import BadInput, UnsafePath
from conveyor.events import Action
from conveyor.jobs import Job, JobState, job_id_of
from conveyor.ledger import default_ledger_url, open_ledger
from conveyor.queues.memory import MemoryQueue
from conveyor.queues.messages import Outgoing
from conveyor.settings import Settings
from conveyor.storage import Storage
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry
from conveyor.worker import Worker

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_counter = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for hypothesis examples (function-scoped tmp_path cannot be used there)."""
    return tmp_path_factory.mktemp("properties")


# --- envelopes through a worker ------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "..", "../x", "/etc/passwd", "a\x00b", "_conveyor/q", "in\\x"])
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


def valid_envelope(job_id: str) -> dict[str, Any]:
    return Job(
        job_id=job_id,
        task="echo",
        input="inputs/in.txt",
        output=f"outputs/{job_id}.txt",
        seed=3,
        submitted_at=1732270000.5,
    ).to_dict()


@st.composite
def message_bodies(draw: st.DrawFn) -> str:
    """A valid envelope with one field replaced, a field added or removed, its text cut or
    spliced, or arbitrary text."""
    data = valid_envelope(f"p{draw(st.integers(0, 10**9))}")
    kinds = ["valid", "replace", "add", "remove", "cut", "splice", "text"]
    kind = draw(st.sampled_from(kinds))
    if kind == "valid":  # still valid, with other values: these must all succeed
        data["seed"] = draw(st.integers(0, 2**63 - 1))
        data["params"] = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3))
        data["output"] = draw(st.sampled_from(["out/x", "a/b/c.txt", "x y", "é", None]))
    elif kind == "replace":
        data[draw(st.sampled_from(sorted(data)))] = draw(json_values)
    elif kind == "add":
        data[draw(st.text(max_size=8))] = draw(json_values)
    elif kind == "remove":
        del data[draw(st.sampled_from(sorted(data)))]
    text = json.dumps(data)
    if kind == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif kind == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=8)) + text[at:]
    elif kind == "text":
        text = draw(st.text(max_size=200))
    return text


@given(body=message_bodies())
@example(body=json.dumps(valid_envelope("p-valid")))
@example(body='{"v":1,"job_id":"p1","task":"echo","input":"inputs/in.txt","output":"../p1"}')
@example(body="[" * 5000)
@EXAMPLES
def test_any_message_ends_published_or_dead_lettered_never_lost(scratch: Path, body: str) -> None:
    root = scratch / f"case{next(_counter)}" / "root"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs/in.txt").write_text("hello\n")
    queue = MemoryQueue(visibility_timeout_s=30, max_receive_count=3)
    registry = TaskRegistry()
    ran: list[str] = []

    @registry.task("echo")
    def echo(ctx: TaskContext) -> None:
        if ctx.input_path is None:
            raise BadInput("echo needs an input")
        ran.append(ctx.job.job_id)
        if ctx.write_path is not None:  # a job may publish nothing
            ctx.write_path.write_bytes(ctx.input_path.read_bytes())

    settings_ = Settings(storage=root, wait_s=0, max_receive_count=3, retry_base_s=1)
    try:
        queue.send(Outgoing(body))
    except Exception as exc:  # the queue's own checks come first: that is a clear refusal too
        assert type(exc).__name__ == "MessageTooLarge"
        return
    # The embedded ledger, fresh per example (a job id may come back in another example):
    # this is about messages, which no ledger backend changes.
    with open_ledger(default_ledger_url(root)) as ledger:
        worker = Worker(queue, settings_, ledger=ledger, registry=registry, observers=[])
        result = worker.run_once()
        job_id = job_id_of(body)
        record = None if job_id is None else ledger.get(job_id)

    # Exactly one outcome, and the message is neither lost nor left in flight
    (outcome,) = result.events
    event(f"outcome: {outcome.action}")
    letters = queue.dead_letters()
    if outcome.action is Action.SUCCEEDED:
        job = Job.from_json(body)
        assert ran == [job.job_id]
        if job.output is not None:
            assert (root / job.output).read_bytes() == b"hello\n"
        assert queue.stats().pending == 0 and not letters
    else:
        assert outcome.action is Action.FAILED, outcome
        assert ran == [] or (ran == [job_id_of(body)] and "returned" in str(outcome.reason))
        (letter,) = letters
        assert letter.body == body
        assert letter.reason and "\n" not in letter.reason and "Traceback" not in letter.reason
        assert queue.stats().pending == 0
        if job_id is not None:
            assert record is not None and record.state is JobState.FAILED
    # Nothing was written outside the storage root
    assert sorted(p.name for p in root.parent.iterdir()) == ["root"]
    shutil.rmtree(root.parent)


# --- CSV inputs through the task -------------------------------------------------------------

ids = st.text(st.characters(blacklist_categories=["Cs"]), max_size=8)
good_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**20), 10**20).map(str),
)
bad_values = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e999", "", " 1", "1,5", "0x10", "1_0", "--1"]),
    st.text(max_size=6),
)
headers = st.sampled_from(["id,value", "ID", "ID,Value,X", "", "Value,ID"])


@st.composite
def csv_documents(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A CSV document, valid (half of them) or not; also whether it was built valid."""
    clean = draw(st.booleans())
    header = "ID,Value" if clean or draw(st.booleans()) else draw(headers)
    values = good_values if clean else st.one_of(good_values, bad_values)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    for ident, value in draw(st.lists(st.tuples(ids, values), max_size=12)):
        writer.writerow([ident, value])
    text = (header + "\n" if header else "") + buffer.getvalue()
    data = text.encode("utf-8", "surrogatepass")
    if not clean and draw(st.booleans()):  # now and then, damage some bytes
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=4)) + data[at:]
    return data, header == "ID,Value"


_LOCATED = re.compile(r":(\d+): \S")


@given(document=csv_documents(), seed=st.integers(0, 2**63 - 1))
@example(document=(b'ID,Value\n"a\nb",1.5\n', True), seed=1)
@example(document=(b"ID,Value\nx,1e999\n", True), seed=1)
@EXAMPLES
def test_any_csv_is_processed_exactly_or_rejected_with_its_line(
    scratch: Path, document: tuple[bytes, bool], seed: int
) -> None:
    data, _ = document
    source = scratch / f"in{next(_counter)}.csv"
    target = source.with_suffix(".out")
    source.write_bytes(data)
    try:
        transform_csv(source, target, seed)
    except BadInput as exc:  # a clear refusal: which file, which line, what is wrong
        event("rejected")
        message = exc.message
        assert message.startswith(f"{source}:") or message.startswith(f"{source}: "), message
        rest = message[len(str(source)) :]
        if rest != ": empty file":
            located = _LOCATED.match(rest)
            assert located, message
            assert 1 <= int(located.group(1)) <= data.count(b"\n") + data.count(b"\r") + 1
        assert "\n" not in message
        return
    # Processed: every ID and Value copied exactly, a finite ProcessedValue added
    event("processed")
    text = data.decode("utf-8-sig")
    rows_in = list(csv.reader(io.StringIO(text, newline="")))
    rows_out = list(csv.reader(io.StringIO(target.read_bytes().decode(), newline="")))
    assert rows_out[0] == ["ID", "Value", "ProcessedValue"]
    assert rows_in[0] == ["ID", "Value"]
    assert [row[:2] for row in rows_out[1:]] == [row for row in rows_in[1:] if row]
    for row in rows_out[1:]:
        assert float(row[2]) == float(row[2])  # a number, not nan
        assert abs(float(row[2])) <= abs(float(row[1])) * 1.2 + 1e-300


# --- paths through the storage ---------------------------------------------------------------

path_parts = st.sampled_from(
    ["..", ".", "", "inputs", "out", "escape", "sibling", "_conveyor", "a\x00b", "x" * 300]
) | st.text(max_size=10)


@given(parts=st.lists(path_parts, min_size=1, max_size=5), absolute=st.booleans())
@example(parts=["inputs", "escape", "secret"], absolute=False)
@example(parts=["inputs", "sibling", "secret"], absolute=False)
@EXAMPLES
def test_any_path_resolves_inside_the_root_or_is_refused(
    scratch: Path, parts: list[str], absolute: bool
) -> None:
    base = scratch / "paths"
    root = base / "storage"
    if not root.exists():
        (root / "inputs").mkdir(parents=True)
        (base / "outside").mkdir()
        (base / "storage-evil").mkdir()  # the root's name is a prefix of it
        (root / "inputs/escape").symlink_to(base / "outside")
        (root / "inputs/sibling").symlink_to(base / "storage-evil")
    rel = ("/" if absolute else "") + "/".join(parts)
    try:
        resolved = Storage(root).resolve(rel)
    except UnsafePath as exc:
        assert exc.message.startswith("unsafe path ")
        return
    inside = resolved.relative_to(root)  # ValueError (a failure) if it escaped
    assert inside.parts and inside.parts[0].casefold() != "_conveyor"
