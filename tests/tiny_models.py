"""The tests' tiny Llama: one builder, sized per test by keyword."""

from __future__ import annotations

from rlmec_core.modeling import build_tiny_llama

# Its sizes unless a test says otherwise, named as build_tiny_llama and BootstrapSection
# name them (a micro bootstrap section can build the same architecture).
DEFAULT_SIZES = {
    "hidden_size": 32,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def tiny_llama(
    tokenizer, *, seed=0, layers=2, heads=None, positions=None, hidden=None, intermediate=None
):
    given = {
        "hidden_size": hidden,
        "num_heads": heads,
        "intermediate_size": intermediate,
        "max_position_embeddings": positions,
    }
    sizes = {name: DEFAULT_SIZES[name] if v is None else v for name, v in given.items()}
    return build_tiny_llama(tokenizer, num_layers=layers, seed=seed, **sizes)
