"""A stage that only logs, for the stage-log tests (imported by the spawned child too).

It is registered as `data` because a stage's section comes from the config; the test
that runs it puts the real `data` function back afterwards.
"""

import logging

from tasks.stage import StageResult, stage_task

MESSAGE = "a line from the library during the stage"


def say_something(ctx, io):
    logging.getLogger("rlmec_core.chatty").warning(MESSAGE)
    (io.out / "said.txt").write_text(MESSAGE)
    return StageResult(kind="test")


chatty_task = stage_task("data")(say_something)
stage_task("chatty")(say_something)  # for run_with_time_limit("chatty", ...) on its own
