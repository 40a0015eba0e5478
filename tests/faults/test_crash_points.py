"""A worker crashes (os._exit) at each step of a job; a restarted worker converges."""

from __future__ import annotations

import pytest

from conveyor.faults import CRASH_ENV
from tests.e2e.conftest import QueueEnv
from tests.faults.checker import account, assert_clean
from tests.faults.conftest import FaultReport
from tests.faults.expect import fault_copy_output, input_bytes
from tests.faults.harness import CRASHED, submit, worker_env, worker_pool

#: What the restarted worker must do with the crashed job: run it again, or see from the
#: ledger that it succeeded and only ack it.
RERUN, SKIP = "succeeded", "skipped"
POINTS = {
    "after_receive": RERUN,
    "mid_write": RERUN,
    "after_fsync": RERUN,
    "after_rename": RERUN,  # published, but the ledger does not know: published again
    "after_ledger": SKIP,
    "before_ack": SKIP,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_a_crash_at_each_step_converges_to_one_published_output(
    queue_env: QueueEnv, fault_report: FaultReport, point: str
) -> None:
    # Given two jobs, and a worker that will crash at `point` of the first one
    expects = submit(
        queue_env, "fault-copy", [input_bytes(i, 20_000) for i in range(2)], fault_copy_output
    )
    target = expects[0].job_id
    env = worker_env(queue_env, CONVEYOR_VISIBILITY_TIMEOUT_S="2")
    with worker_pool(env, queue_env.work) as start:
        crashing = start(**{CRASH_ENV: f"{point}:{target}"})
        assert crashing.wait() == CRASHED, crashing.log()
        assert f"crashing at {point} (job {target})" in crashing.log()

        # When a worker without the fault takes over (after the lease expires)
        restarted = start("--until-empty")
        assert restarted.wait() == 0, restarted.log()

    # Then each job is published once, byte for byte, with no leftovers
    summary = account(
        f"crash at {point}",
        expects,
        queue_env,
    )
    fault_report.add(summary)
    assert_clean(summary)
    assert queue_env.stats().pending == 0
    first_action = next(
        line["action"]
        for line in _log_lines(restarted.log())
        if line.get("job_id") == target and line.get("action") in (RERUN, SKIP)
    )
    assert first_action == POINTS[point]


def _log_lines(text: str) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
