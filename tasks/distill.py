"""Stage `distill`: the teacher's minimum-edit rewrites of the collected samples."""

from __future__ import annotations

from datasets import Dataset

from rlmec_core.config import ArithmeticTeacherSection, ChatTeacherSection
from rlmec_core.data.schema import DISTILLED_FEATURES
from rlmec_core.distill import distill_metrics, distill_rewrites
from rlmec_core.teachers.base import Teacher
from storage import catalog
from tasks.context import RunContext
from tasks.models import load_tokenizer
from tasks.stage import StageIO, StageResult, stage_task


def make_teacher(section: ArithmeticTeacherSection | ChatTeacherSection) -> tuple[Teacher, int]:
    """The configured teacher and how many examples it may judge at once."""
    if isinstance(section, ChatTeacherSection):
        from rlmec_core.teachers.chat import ChatTeacher

        return ChatTeacher(section), section.concurrency
    from rlmec_core.teachers.arithmetic import ArithmeticTeacher

    return ArithmeticTeacher(), 1


@stage_task("distill")
def distill_task(ctx: RunContext, io: StageIO) -> StageResult:
    teacher, concurrency = make_teacher(ctx.config.distill.teacher)
    samples = catalog.SAMPLES.read(io.inputs["samples"])
    # Finished examples are appended to shards in scratch: a rerun continues from them.
    rows = distill_rewrites(
        samples,
        teacher,
        io.scratch / "shards",
        concurrency=concurrency,
        verification=ctx.config.verification,
        max_failed_fraction=getattr(ctx.config.distill.teacher, "max_failed_fraction", 0.0),
    )
    tokenizer = load_tokenizer(io.inputs["policy"])
    metrics = distill_metrics(
        rows, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    # The GRM's training set is built (and saved) by train_grm, after its held-out split.
    catalog.DISTILLED.write(io.out, Dataset.from_list(rows, features=DISTILLED_FEATURES))
    # The teacher's config as lineage; a chat teacher's key is only ever named, never read here.
    teacher_config = ctx.config.distill.teacher.model_dump(mode="json")
    return StageResult(kind="rewrites", metrics=metrics, summary={"teacher": teacher_config})
