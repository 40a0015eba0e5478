"""Poison jobs (one raises, one kills its worker, one blows the memory limit) end in the
dead-letter queue with their reason in the ledger, while the other jobs finish."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import QueueEnv
from tests.faults.checker import account, assert_clean
from tests.faults.conftest import FaultReport
from tests.faults.expect import fault_copy_output, input_bytes
from tests.faults.harness import dead_letter_ids, submit, worker_env, worker_pool

#: The workers' address-space limit, and what the memory hog asks for.
MEMORY_LIMIT_BYTES = 1 << 30
HOG_BYTES = 4 << 30
CRASH_HINT = "(the worker died or its lease expired on every attempt)"


@pytest.mark.slow
def test_poison_jobs_are_dead_lettered_with_their_reason_and_the_rest_finish(
    queue_env: QueueEnv, fault_report: FaultReport
) -> None:
    # Given good jobs between three kinds of poison (max_receive_count is 3)
    never = lambda data, seed: None  # noqa: E731 - these jobs must publish nothing
    expects = submit(queue_env, "fault-copy", [input_bytes(0)], fault_copy_output)
    raising = submit(
        queue_env,
        "poison-raise",
        [b"x"],
        never,
        reason="gave up after 3 attempts: RuntimeError: poison: this job always fails",
    )
    expects += submit(queue_env, "fault-copy", [input_bytes(1)], fault_copy_output)
    exiting = submit(
        queue_env,
        "poison-exit",
        [b"x"],
        never,
        reason="dead-lettered after 3 receives; last error: attempt 2 did not finish",
    )
    expects += submit(queue_env, "fault-copy", [input_bytes(2)], fault_copy_output)
    hogging = submit(
        queue_env,
        "poison-memory",
        [b"x"],
        never,
        params={"bytes": HOG_BYTES},
        reason="gave up after 3 attempts: MemoryError",
    )
    expects += submit(queue_env, "fault-copy", [input_bytes(3)], fault_copy_output)
    env = worker_env(queue_env, CONVEYOR_VISIBILITY_TIMEOUT_S="1")

    # When workers (each under a 1 GiB address-space limit) run until the queue is empty,
    # a new one started whenever the poison kills the last
    codes = []
    with worker_pool(env, queue_env.work) as start:
        for _ in range(8):
            worker = start(
                "--until-empty", "--batch-size=1", address_space_bytes=MEMORY_LIMIT_BYTES
            )
            codes.append(worker.wait(90))
            if codes[-1] == 0:
                break

    # Then: three crashes (one per allowed receive), then a clean drain
    assert codes == [13, 13, 13, 0], codes
    poison = raising + exiting + hogging
    summary = account(
        "poison jobs (raise, os._exit, memory limit)",
        expects + poison,
        queue_env,
        dead_letters=dead_letter_ids(queue_env),
    )
    fault_report.add(summary)
    assert_clean(summary)
    assert summary["failed_as_expected"] == 3
    assert dead_letter_ids(queue_env) == {p.job_id for p in poison}
    assert CRASH_HINT in queue_env.record(exiting[0].job_id)["error"]
    assert queue_env.stats().pending == 0
