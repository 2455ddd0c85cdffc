"""Reshape the token rewards of RL rows (a probe of the token-level RL term, §3 of
docs/results.md). usage: reward_shape.py IN OUT POLICY_DIR SHAPE[,SHAPE...]
SHAPE: first_error   penalties of a wrong sample only on the line of its first penalised
                     token (the later lines' penalties punish consequences: copying a wrong
                     intermediate result into the next step and the answer line);
       all_tokens    every response token counts in N_r (rewards 0 -> 1e-12), as with
                     instance-level rewards;
       no_penalty    negative rewards set to 0; no_bonus: positive rewards set to 0;
       zero          every reward 0 (L_RL = 0: the imitation term alone)."""

import sys

from common import *
from datasets import Dataset

from rlmec_core.data.io import load_parquet, save_parquet
from rlmec_core.data.schema import RL_FEATURES
from rlmec_core.modeling import load_policy

src, dst, policy_dir, shapes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
_, tok = load_policy(policy_dir)
newline = {i for t, i in tok.get_vocab().items() if "Ċ" in t or "\n" in t}
rows = list(load_parquet(Path(src)))
dropped = 0
for r in rows:
    rewards = list(r["rewards"])
    if "first_error" in shapes and not r["correct"]:
        first = next((i for i, x in enumerate(rewards) if x < 0), None)
        if first is not None:
            end = next(
                (i for i in range(first, len(rewards)) if r["response_ids"][i] in newline),
                len(rewards),
            )
            dropped += sum(1 for x in rewards[end:] if x < 0)
            rewards = rewards[:end] + [0.0] * (len(rewards) - end)
    if "no_penalty" in shapes:
        rewards = [max(x, 0.0) for x in rewards]
    if "no_bonus" in shapes:
        rewards = [min(x, 0.0) for x in rewards]
    if "zero" in shapes:
        rewards = [0.0] * len(rewards)
    if "all_tokens" in shapes:
        rewards = [x if x != 0 else 1e-12 for x in rewards]
    r["rewards"] = rewards
save_parquet(Dataset.from_list(rows, features=RL_FEATURES), Path(dst))
log("rows", len(rows), "penalties dropped", dropped)
