"""Synthetic splits (train 4000 / dev 500 / test 1200) and k samples per train problem.
usage: make_data.py OUT POLICY_DIR N_PROBLEMS K"""

import sys

from common import *

from rlmec_core.collect import collect_samples
from rlmec_core.config import CollectSection
from rlmec_core.data.io import load_parquet, save_parquet
from rlmec_core.data.synthetic import synthetic_splits
from rlmec_core.modeling import load_policy

out = Path(sys.argv[1])
policy_dir = sys.argv[2]
n = int(sys.argv[3])
k = int(sys.argv[4])
out.mkdir(parents=True, exist_ok=True)
if not (out / "train.parquet").exists():
    # tiny.yaml's task (the defaults: 2-4 steps, operands to 10, values to 100)
    splits = synthetic_splits(seed=0, n_train=4000, n_dev=500, n_test=1200)
    for name, ds in splits.items():
        save_parquet(ds, out / f"{name}.parquet")
problems = load_parquet(out / "train.parquet").select(range(n))
model, tok = load_policy(policy_dir)
sampling = CollectSection(k=k, temperature=0.7, top_p=0.95, max_new_tokens=160, batch_size=64)
samples, metrics = collect_samples(model, tok, problems, sampling, seed=0, progress=False)
save_parquet(samples, out / f"samples_{n}x{k}.parquet")
log(metrics)
