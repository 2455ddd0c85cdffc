"""Stage `annotate`: GRM rewrites, token rewards, reference log-probs, imitation weights."""

from __future__ import annotations

from rlmec_core.annotate import annotate_samples
from rlmec_core.data.io import load_parquet, save_parquet
from rlmec_core.modeling import load_policy
from rlmec_core.verification import Verifier
from tasks.context import RunContext
from tasks.models import model_dir
from tasks.stage import StageIO, StageResult, stage_task


@stage_task("annotate")
def annotate_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.annotate
    grm, tokenizer = load_policy(model_dir(io.inputs["grm"]))
    reference, _ = load_policy(model_dir(io.inputs["policy"]))
    rows, metrics = annotate_samples(
        load_parquet(io.inputs["rewrites"] / "distilled.parquet"),
        grm,
        reference,
        tokenizer,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        verifier=Verifier(ctx.config.verification),
    )
    if len(rows) == 0:
        raise ValueError("annotate kept no sample: every incorrect sample's GRM rewrite missed")
    save_parquet(rows, io.out / "rl_data.parquet")
    # Reward quality, stated in the summary as well as logged: do rewards separate right
    # from wrong, and does the most penalised token sit in the teacher's first error step?
    quality = {
        k: metrics.get(k)
        for k in (
            "mean_reward_correct_token",
            "mean_reward_incorrect_token",
            "reward_quality",
            "reward_quality_n",
        )
    }
    return StageResult(
        kind="rl_data", metrics=metrics, summary={"n_rows": len(rows), "reward_quality": quality}
    )
