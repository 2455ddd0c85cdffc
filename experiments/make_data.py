"""Synthetic splits (train 4000 / dev 500 / test 1200) and k samples per train problem.
usage: make_data.py OUT POLICY_DIR N_PROBLEMS K"""

import sys

from common import *

from rlmec_core.collect import collect_samples
from rlmec_core.data.io import load_parquet, save_parquet
from rlmec_core.data.synthetic import synthetic_splits
from rlmec_core.modeling import load_policy

out = Path(sys.argv[1])
policy_dir = sys.argv[2]
n = int(sys.argv[3])
k = int(sys.argv[4])
out.mkdir(parents=True, exist_ok=True)
if not (out / "train.parquet").exists():
    splits = synthetic_splits(
        seed=0,
        n_train=4000,
        n_dev=500,
        n_test=1200,
        min_steps=2,
        max_steps=4,
        max_operand=10,
        max_value=100,
    )
    for name, ds in splits.items():
        save_parquet(ds, out / f"{name}.parquet")
problems = load_parquet(out / "train.parquet").select(range(n))
model, tok = load_policy(policy_dir)
samples, metrics = collect_samples(
    model,
    tok,
    problems,
    k=k,
    temperature=0.7,
    top_p=0.95,
    max_new_tokens=160,
    batch_size=64,
    seed=0,
    progress=False,
)
save_parquet(samples, out / f"samples_{n}x{k}.parquet")
log(metrics)
