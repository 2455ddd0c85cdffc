"""RL rows from the teacher's verdicts instead of a GRM (an oracle GRM): rewrite = teacher's,
rewards: correct y -> +0.5 per token; wrong y -> -0.1 on the tokens of y the minimum-edit
alignment to ŷ deletes or substitutes, 0 elsewhere. Reference log-probs from the policy.
usage: oracle_rl.py SAMPLES POLICY_DIR OUT"""

import sys

from common import *
from datasets import Dataset
from rapidfuzz.distance import Levenshtein

from rlmec_core.annotate import dedup_correct
from rlmec_core.data.io import load_parquet, save_parquet
from rlmec_core.data.schema import RL_FEATURES
from rlmec_core.editing import minimum_edit_weights
from rlmec_core.modeling import load_policy
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.response_logprobs import batched_response_logprobs
from rlmec_core.response_tokens import split_tokenize

samples = list(load_parquet(Path(sys.argv[1])))
if len(sys.argv) > 4:
    problems = sorted({s["problem_id"] for s in samples}, key=lambda p: int(p.rsplit("-", 1)[1]))
    keep = set(problems[: int(sys.argv[4])])
    samples = [s for s in samples if s["problem_id"] in keep]
rows, caught = redistill(samples)
rows, _ = dedup_correct(rows)
model, tok = load_policy(sys.argv[2])
pend = []
for r in rows:
    if not r["correct"] and r["teacher_status"] != "kept":
        continue
    p_ids, y_ids = split_tokenize(tok, format_policy_prompt(r["question"]), r["prediction"])
    target = r["prediction"] if r["correct"] else r["rewrite"]
    _, t_ids = split_tokenize(tok, format_policy_prompt(r["question"]), target)
    if r["correct"]:
        rewards = [0.5] * len(y_ids)
        weights = [0.5] * len(t_ids)
    else:
        rewards = [0.0] * len(y_ids)
        for op in Levenshtein.editops(y_ids, t_ids):
            if op.tag in ("delete", "replace"):
                rewards[op.src_pos] = -0.1
        weights = minimum_edit_weights(y_ids, t_ids)
    pend.append((r, p_ids, y_ids, t_ids, rewards, weights))
ref = batched_response_logprobs(
    model, [p[1] for p in pend], [p[2] for p in pend], pad_id=tok.pad_token_id, batch_size=64
)
out_rows = []
for (r, p_ids, y_ids, t_ids, rewards, weights), lp in zip(pend, ref, strict=True):
    out_rows.append(
        {
            "sample_id": r["sample_id"],
            "problem_id": r["problem_id"],
            "correct": bool(r["correct"]),
            "prediction": r["prediction"],
            "rewrite": r["prediction"] if r["correct"] else r["rewrite"],
            "grm_error_step": int(r["error_step"]),
            "teacher_error_step": int(r["error_step"]),
            "prompt_ids": p_ids,
            "response_ids": y_ids,
            "rewards": rewards,
            "ref_logprobs": lp,
            "target_ids": t_ids,
            "target_weights": weights,
        }
    )
save_parquet(Dataset.from_list(out_rows, features=RL_FEATURES), Path(sys.argv[3]))
import collections

log("rows", len(out_rows), collections.Counter(r["correct"] for r in out_rows), "caught", caught)
