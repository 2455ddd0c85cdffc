"""The tests' tiny Llama: one builder, sized per test by keyword."""

from __future__ import annotations

from rlmec_core.modeling import build_tiny_llama


def tiny_llama(tokenizer, *, seed=0, layers=2, heads=2, positions=512, hidden=32, intermediate=64):
    sizes = {"hidden_size": hidden, "num_layers": layers, "num_heads": heads}
    return build_tiny_llama(
        tokenizer,
        intermediate_size=intermediate,
        max_position_embeddings=positions,
        seed=seed,
        **sizes,
    )
