"""Test-wide isolation: no hub, no user Prefect state, no stray MLflow stores; and the
fixtures more than one test module shares.

Prefect reads its settings when it is first imported, so they are set here, before any
test module imports it; subprocesses started by tests inherit the same result store.
"""

import os
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="rlmec-test-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = "rlmec_core,tasks"  # as flows/environment.py
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_PREFECT_HOME / "results")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

# `make test` runs two pytest-xdist workers on two cores: each worker, and every process it
# starts, computes on one thread, so the workers do not fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


# The micro bootstrap's data and tokenizer, shared by the bootstrap and early-stopping tests
# (fixtures imported from a module would be shadowed by the tests' parameters: ruff F811).
# rlmec_core is imported inside them: only after the settings above are in place.
@pytest.fixture(scope="module")
def micro_splits():
    from rlmec_core.data.synthetic import synthetic_splits

    return synthetic_splits(seed=0, n_train=64, n_dev=16, n_test=16)


@pytest.fixture(scope="module")
def micro_tokenizer(micro_splits):
    """A 300-token tokenizer trained on micro_splits' prompts and gold solutions."""
    from rlmec_core.policy_prompt import format_policy_prompt
    from rlmec_core.tokenizer import train_tokenizer

    train = micro_splits["train"]
    pairs = zip(train["question"], train["gold_solution"], strict=True)
    return train_tokenizer([format_policy_prompt(q) + s for q, s in pairs], vocab_size=300)
