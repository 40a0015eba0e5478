"""A user task that declares split= and merge=: the README's example, run as printed
against real worker processes, gives the unsplit job's word count."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import workers
from tests.e2e.test_readme_api import example_project, readme_example, run_script

HEADING = "#### Your own task, split"

UNSPLIT = """\
import conveyor
from examples.wordcount_task import wordcount

with conveyor.connect() as client:
    (record,) = client.wait([wordcount.submit("notes.txt", client=client).job_id], 120)
    print(record.state, record.result)
"""


def test_the_readme_split_example_sums_the_pieces_like_the_unsplit_job(
    queue_env: QueueEnv, tmp_path: Path
) -> None:
    # Given the example task, a five-line text file, the README's split example and a
    # script submitting the same file unsplit
    project = example_project(
        tmp_path,
        {
            "notes.txt": (
                "The quick brown fox\njumps over the lazy dog.\nThe END\n\nthe fox, the dog\n"
            ),
            "split.py": readme_example(HEADING),
            "unsplit.py": UNSPLIT,
        },
    )
    with workers(queue_env.env, queue_env.work) as start:
        # And two worker processes
        for _ in range(2):
            start("--import", str(project / "examples" / "wordcount_task.py"))
        # When both scripts run
        outputs = {
            script: run_script(project, queue_env, script) for script in ("split.py", "unsplit.py")
        }
    # Then the file was counted in three pieces, merged to the unsplit job's totals
    totals = "{'words': 15, 'distinct': 9, 'rows': 9}"
    assert outputs["split.py"] == [f"3 pieces succeeded {totals}"]
    assert outputs["unsplit.py"] == [f"succeeded {totals}"]
    # And no part files are left beside the outputs
    assert not list(queue_env.storage.rglob("*.parts-*"))
