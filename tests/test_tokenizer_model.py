"""The local tokenizer and tiny Llama: exact round trips, Auto-class save/load."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlmec_core.data.synthetic import synthetic_splits
from rlmec_core.modeling import build_tiny_llama, load_policy
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.tokenizer import train_tokenizer

SIZES = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


def _texts() -> list[str]:
    train = synthetic_splits(seed=0, n_train=200, n_dev=0, n_test=0)["train"]
    pairs = zip(train["question"], train["gold_solution"], strict=True)
    return [format_policy_prompt(q) + s for q, s in pairs]


@pytest.fixture(scope="module")
def tokenizer():
    texts = _texts()
    return train_tokenizer(texts, vocab_size=400)


@pytest.mark.parametrize(
    "text",
    [
        "Question: Tom buys 3 boxes of 12 pencils.\nAnswer:\n",
        "He has 3 * 12 = 36 pencils.\nThe answer is 36",
        "  leading and trailing spaces  \n\n\tand a tab",
        "unseen words: zygote, Ünïcödé ü 漢字 and émoji 🙂",
        "12345678901234567890 -7.25 1,000",
        "",
    ],
)
def test_decode_encode_round_trips_exactly(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_digits_are_single_tokens_and_no_special_tokens_are_added(tokenizer):
    ids = tokenizer("9876543210")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == list("9876543210")
    ids = tokenizer("The answer is 5")["input_ids"]
    assert not set(ids) & set(tokenizer.all_special_ids)
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3


def test_training_is_deterministic(tokenizer):
    texts = _texts()
    again = train_tokenizer(texts, vocab_size=400)
    assert again.get_vocab() == tokenizer.get_vocab()


def test_tokenizer_saves_and_loads_with_auto_class(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "Question: Anna has 7 apples.\nAnswer:\nShe has 7 + 2 = 9 apples.\nThe answer is 9"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == (
        tokenizer.bos_token,
        tokenizer.eos_token,
        tokenizer.pad_token,
    )


def test_too_small_vocab_is_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], vocab_size=100)


def test_tiny_llama_forward_and_seeded_init(tokenizer):
    model = build_tiny_llama(tokenizer, max_position_embeddings=128, seed=3, **SIZES)
    ids = torch.tensor([tokenizer("Tom has 3 apples.")["input_ids"]])
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    same = build_tiny_llama(tokenizer, max_position_embeddings=128, seed=3, **SIZES)
    other = build_tiny_llama(tokenizer, max_position_embeddings=128, seed=4, **SIZES)
    assert torch.equal(same(input_ids=ids).logits, logits)
    assert not torch.equal(other(input_ids=ids).logits, logits)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    odd = dict(hidden_size=30, num_layers=1, num_heads=4, intermediate_size=8)
    with pytest.raises(ValueError, match="divisible"):
        build_tiny_llama(tokenizer, max_position_embeddings=16, seed=0, **odd)


def test_model_saves_as_safetensors_and_loads_back(tokenizer, tmp_path):
    model = build_tiny_llama(tokenizer, max_position_embeddings=128, seed=0, **SIZES)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ids = torch.tensor([tokenizer("Anna bakes 4 trays of 6 cookies.")["input_ids"]])
    expected = model(input_ids=ids).logits
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    assert torch.allclose(loaded(input_ids=ids).logits, expected)

    policy, policy_tokenizer = load_policy(tmp_path)
    assert torch.allclose(policy(input_ids=ids).logits, expected)
    assert policy_tokenizer.padding_side == "left"
    assert policy_tokenizer.pad_token_id == tokenizer.pad_token_id


def test_load_policy_uses_eos_as_pad_when_missing(tokenizer, tmp_path):
    model = build_tiny_llama(tokenizer, max_position_embeddings=64, seed=0, **SIZES)
    model.save_pretrained(tmp_path)
    tokenizer.pad_token = None  # module fixture: restore below
    try:
        tokenizer.save_pretrained(tmp_path)
    finally:
        tokenizer.pad_token = "<|pad|>"
    _, loaded = load_policy(tmp_path)
    assert loaded.pad_token_id == loaded.eos_token_id


def test_load_policy_names_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_policy(tmp_path / "nothing")
