"""Storage faults: a full disk (a real 1 MiB tmpfs) and an output directory root cannot
write to (a read-only bind mount; a file where the directory should be)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import run
from tests.faults.checker import Expect, account, assert_clean
from tests.faults.conftest import FaultReport
from tests.faults.expect import fault_copy_output, input_bytes
from tests.faults.harness import (
    EX_INTERRUPTED,
    dead_letter_ids,
    prepare,
    remount_writable,
    send_raw,
    submit,
    wait_for,
    with_max_receive_count,
    worker_env,
    worker_pool,
)

#: Big enough not to fit in what is left of the full disk.
INPUT_BYTES = 200_000


def fill(directory: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system holding ``directory`` until ``leave_bytes`` or less are free."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
    return filler


def error_of(queue_env: QueueEnv, job_id: str) -> str | None:
    record = queue_env.record(job_id)
    return str(record["error"]) if record["state"] == "retrying" and record["error"] else None


def no_temp_files(storage: Path) -> bool:
    return not list(storage.rglob(".conveyor-tmp-*"))


@pytest.mark.slow
@pytest.mark.parametrize("full", ["outputs", "whole storage"])
def test_a_full_disk_holds_the_job_back_until_space_is_freed(
    queue_env: QueueEnv, fault_report: FaultReport, mounts: Callable[..., Path], full: str
) -> None:
    # Given a job whose output cannot fit on the disk: the outputs directory, or the whole
    # storage (the embedded ledger too), on a full 1 MiB tmpfs
    env_ = with_max_receive_count(queue_env, 8)
    storage = env_.storage
    disk = mounts("tmpfs", storage / "outputs" if full == "outputs" else storage)
    expects, bodies = prepare(env_, "fault-copy", [input_bytes(0, INPUT_BYTES)], fault_copy_output)
    (expect,) = expects
    env = worker_env(env_, CONVEYOR_VISIBILITY_TIMEOUT_S="2", CONVEYOR_RETRY_BASE_S="1")
    with worker_pool(env, env_.work) as start:
        # The disk fills under a running worker (whose embedded ledger is open by then),
        # then the job comes
        worker = start()
        wait_for(lambda: "start" in worker.actions(), what="the worker to start")
        filler = fill(disk, leave_bytes=50_000) if full == "outputs" else fill(storage)
        send_raw(env_, bodies)
        # When it fails for lack of space
        if full == "outputs" or env_.ledger_backend != "sqlite":
            reason = wait_for(lambda: error_of(env_, expect.job_id), what="a retry")
            assert "storage is full" in reason, reason
        else:  # the embedded ledger cannot record the failure either: the lease runs out
            wait_for(lambda: "lease_lost" in worker.actions(), what="an unsettled attempt")
        # Then nothing is published, nothing left over, and the message is not acked
        assert not (storage / expect.output).exists()
        assert no_temp_files(storage)
        assert env_.stats().pending == 1

        # And once space is freed, a retry succeeds
        filler.unlink()
        wait_for(lambda: env_.stats().pending == 0, timeout_s=60, what="the retry")
        worker.kill(signal.SIGTERM)
        assert worker.wait() == EX_INTERRUPTED

    summary = account(f"disk full ({full})", [expect], env_)
    fault_report.add(summary)
    assert_clean(summary)
    assert disk.is_mount()


@pytest.mark.slow
def test_a_disk_that_stays_full_fails_the_job_then_a_redrive_completes_it(
    queue_env: QueueEnv, fault_report: FaultReport, mounts: Callable[..., Path]
) -> None:
    disk = mounts("tmpfs", queue_env.storage / "outputs")
    (expect,) = submit(queue_env, "fault-copy", [input_bytes(0, INPUT_BYTES)], fault_copy_output)
    filler = fill(disk, leave_bytes=50_000)
    env = worker_env(queue_env, CONVEYOR_RETRY_BASE_S="0.1")

    # When every attempt finds the disk full
    with worker_pool(env, queue_env.work) as start:
        assert start("--until-empty").wait() == 0

    # Then the job failed with the reason, nothing was published, the message is kept
    record = queue_env.record(expect.job_id)
    assert record["state"] == "failed"
    assert "gave up after 3 attempts" in record["error"]
    assert "storage is full" in record["error"]
    assert dead_letter_ids(queue_env) == {expect.job_id}
    assert not (queue_env.storage / expect.output).exists()
    assert no_temp_files(queue_env.storage)

    # And after space is freed, a redrive runs it to the end
    filler.unlink()
    run("dlq", "redrive", env=env)
    with worker_pool(env, queue_env.work) as start:
        assert start("--until-empty").wait() == 0
    summary = account(
        "disk stays full: failed, redriven",
        [expect],
        queue_env,
    )
    fault_report.add(summary)
    assert_clean(summary)


@pytest.mark.slow
def test_a_read_only_output_directory_holds_the_job_back_until_it_is_writable(
    queue_env: QueueEnv, fault_report: FaultReport, mounts: Callable[..., Path]
) -> None:
    env_ = with_max_receive_count(queue_env, 8)
    outputs = mounts("readonly", env_.storage / "outputs")
    with pytest.raises(OSError) as denied:  # root included: chmod would not stop root
        (outputs / "probe").write_bytes(b"")
    assert denied.value.errno == errno.EROFS
    (expect,) = submit(env_, "fault-copy", [input_bytes(0)], fault_copy_output)
    env = worker_env(env_, CONVEYOR_VISIBILITY_TIMEOUT_S="2", CONVEYOR_RETRY_BASE_S="1")
    with worker_pool(env, env_.work) as start:
        worker = start()
        reason = wait_for(lambda: error_of(env_, expect.job_id), what="a retry")
        assert "Read-only file system" in reason, reason
        assert env_.stats().pending == 1

        remount_writable(outputs)
        wait_for(lambda: env_.stats().pending == 0, timeout_s=60, what="the retry")
        worker.kill(signal.SIGTERM)
        assert worker.wait() == EX_INTERRUPTED

    summary = account(
        "read-only output directory",
        [expect],
        env_,
    )
    fault_report.add(summary)
    assert_clean(summary)


def test_a_file_where_the_output_directory_should_be_fails_the_job(
    queue_env: QueueEnv, fault_report: FaultReport
) -> None:
    (expect,) = submit(queue_env, "fault-copy", [input_bytes(0)], fault_copy_output)
    blocker = queue_env.storage / Path(expect.output).parent
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a directory")
    env = worker_env(queue_env, CONVEYOR_RETRY_BASE_S="0.1")

    with worker_pool(env, queue_env.work) as start:
        assert start("--until-empty").wait() == 0

    summary = account(
        "output directory is a file",
        [Expect(expect.job_id, expect.output, None, reason="cannot create")],
        queue_env,
        dead_letters=dead_letter_ids(queue_env),
    )
    fault_report.add(summary)
    assert_clean(summary)
    assert blocker.read_bytes() == b"not a directory"
    assert dead_letter_ids(queue_env) == {expect.job_id}
