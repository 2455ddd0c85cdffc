"""Train one policy variant from an initial policy on RL rows; greedy accuracy on an eval split.
usage: policy_exp.py NAME RL_PARQUET POLICY_DIR DATA_DIR VARIANT LR EPOCHS SEED [split] [bs] [extra json]
VARIANT: rlmec | no_imitation | no_token_reward | rft | gold_sft | initial."""

import json
import sys

from common import *

from rlmec_core.config import TrainPolicySection
from rlmec_core.data.io import load_parquet
from rlmec_core.evaluation import greedy_accuracy
from rlmec_core.modeling import load_policy
from rlmec_core.trainers.rlmec_trainer import gold_sft_rows, train_policy

if os.environ.get("SURROGATE") == "ppo":
    # Probe: PPO's clipped surrogate, the ratio carrying the gradient, instead of the spec's
    # detached advantage times log π (a clipped token then gets no gradient at all).
    import rlmec_core.losses as losses

    def _ppo_terms(logp, ref_logp, rewards, epsilon):
        active = rewards != 0
        n_r = active.sum().clamp(min=1)
        ratio = torch.exp(logp.float() - ref_logp.detach().float())
        ratio = torch.where(active, ratio, torch.ones_like(ratio))
        r = rewards.detach().float()
        surrogate = torch.minimum(ratio * r, ratio.clamp(1 - epsilon, 1 + epsilon) * r)
        with torch.no_grad():
            clipped = active & ((ratio < 1 - epsilon) | (ratio > 1 + epsilon))
            mean_ratio = torch.where(active, ratio, torch.zeros_like(ratio)).sum() / n_r
        per_token = torch.where(active, -surrogate, torch.zeros_like(surrogate))
        return {
            "l_rl": per_token.sum() / n_r,
            "clip_fraction": clipped.sum() / n_r,
            "mean_ratio": mean_ratio,
            "n_reward_tokens": active.sum(),
        }

    losses._rl_terms = _ppo_terms

name, rl_path, policy_dir, data_dir, variant, lr, epochs, seed = sys.argv[1:9]
split = sys.argv[9] if len(sys.argv) > 9 else "dev"
bs = int(sys.argv[10]) if len(sys.argv) > 10 else 16
extra = json.loads(sys.argv[11]) if len(sys.argv) > 11 else {}
out = LAB / "policy" / name
if (out / "result.json").exists():
    r = json.loads((out / "result.json").read_text())
    log(name, "cached acc", r["accuracy"])
    sys.exit()
rows = load_parquet(Path(rl_path))
model, tok = load_policy(policy_dir)
t = time.time()
res = {"steps": 0}
if variant != "initial":
    cfg = TrainPolicySection(
        variant=variant,
        learning_rate=float(lr),
        epochs=float(epochs),
        seed=int(seed),
        batch_size=bs,
        save_steps=10**6,
        logging_steps=10,
        **extra,
    )
    gold = None
    if variant == "gold_sft":
        gold = gold_sft_rows(
            tok, load_parquet(Path(data_dir) / "train.parquet"), rows["problem_id"]
        )
    res = train_policy(model, tok, rows, out / "ckpt", cfg, gold=gold, resume=False)
train_s = time.time() - t
evalset = list(load_parquet(Path(data_dir) / f"{split}.parquet"))
acc = greedy_accuracy(model, tok, evalset, batch_size=250, max_new_tokens=160)
r = {
    "name": name,
    "variant": variant,
    "lr": float(lr),
    "epochs": float(epochs),
    "seed": int(seed),
    "bs": bs,
    "extra": extra,
    "steps": res["steps"],
    "train_s": train_s,
    "split": split,
    "n": acc["n"],
    "accuracy": acc["accuracy"],
    "outcomes": [p["correct"] for p in acc["predictions"]],
    "final_mean_ratio": (res.get("term_histories", {}).get("mean_ratio") or [(0, None)])[-1][1],
}
save_json(out / "result.json", r)
log(
    name,
    variant,
    lr,
    epochs,
    seed,
    "steps",
    res["steps"],
    f"train {train_s:.0f}s",
    "acc",
    round(r["accuracy"], 4),
)
