"""Plain and chat-template prompts: resolution, token ids, end of turn, cache keys."""

from __future__ import annotations

import pytest

from rlmec_core.annotate import _prepare
from rlmec_core.config import STAGES, PipelineConfig
from rlmec_core.grm_data import (
    ERROR_STEP_RESPONSE_PREFIX,
    REWRITE_RESPONSE_PREFIX,
    error_step_prompt,
    rewrite_prompt,
)
from rlmec_core.modeling import load_policy
from rlmec_core.policy_prompt import CHAT_TEMPLATE, format_policy_prompt
from rlmec_core.prompt_format import PLAIN, prompt_style
from rlmec_core.tokenizer import train_tokenizer
from rlmec_core.trainers.rlmec_trainer import gold_sft_rows
from rlmec_core.trainers.sft import IGNORE_INDEX, tokenize_example
from tasks.config_reads import stage_hash
from tests.chat_model import IM_END, chat_tokenizer, save_chat_model

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
GOLD = "Tom has 3 apples.\n3 + 2 = 5\nThe answer is 5"
WRONG = "Tom has 3 apples.\n3 + 2 = 6\nThe answer is 6"
CORPUS = [format_policy_prompt(QUESTION) + GOLD, rewrite_prompt(QUESTION, GOLD, WRONG) + GOLD] * 4


def _ids(encoded) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@pytest.fixture(scope="module", params=[False, True], ids=["template-bos", "encoder-bos"])
def chat(request):
    return chat_tokenizer(CORPUS, adds_bos=request.param)


def test_auto_is_chat_exactly_when_the_tokenizer_has_a_template(chat):
    plain = train_tokenizer(CORPUS, vocab_size=300)
    assert prompt_style(plain, "auto") is PLAIN
    assert prompt_style(chat, "auto").chat
    assert prompt_style(chat, "plain") is PLAIN
    with pytest.raises(ValueError, match="no chat_template"):
        prompt_style(plain, "chat")
    with pytest.raises(ValueError, match="prompts.format"):
        prompt_style(chat, "markdown")


def test_chat_prompt_ids_are_the_templates_ids_with_one_bos(chat):
    style = prompt_style(chat, "chat")
    prompt = format_policy_prompt(QUESTION, style)
    expected = _ids(
        chat.apply_chat_template(
            [{"role": "user", "content": CHAT_TEMPLATE.format(question=QUESTION)}],
            add_generation_prompt=True,
            tokenize=True,
        )
    )
    ids = chat(prompt)["input_ids"]  # what generation and SFT do with a prompt
    assert ids == expected
    assert ids[0] == chat.bos_token_id and ids.count(chat.bos_token_id) == 1
    assert prompt.endswith("<|im_start|>assistant\n")


def test_grm_prompts_put_the_response_prefix_at_the_start_of_the_assistant_turn(chat):
    style = prompt_style(chat, "chat")
    rewrite = rewrite_prompt(QUESTION, GOLD, WRONG, style)
    judge = error_step_prompt(QUESTION, GOLD, WRONG, style)
    assert rewrite.endswith(f"<|im_start|>assistant\n{REWRITE_RESPONSE_PREFIX}")
    assert judge.endswith(f"<|im_start|>assistant\n{ERROR_STEP_RESPONSE_PREFIX}")
    assert "Problem:\n" + QUESTION in rewrite and "[1] 3 + 2 = 6" in judge
    # The plain style is the text prompt, unchanged.
    assert rewrite_prompt(QUESTION, GOLD, WRONG, PLAIN) == rewrite_prompt(QUESTION, GOLD, WRONG)


def test_chat_responses_end_with_the_end_of_turn_token(chat):
    style = prompt_style(chat, "chat")
    end = chat.convert_tokens_to_ids(IM_END)
    assert style.end_id == end != chat.eos_token_id
    assert style.response_end(chat) == end
    assert PLAIN.response_end(chat) == chat.eos_token_id


def test_response_ids_are_the_same_in_annotate_training_and_gold_sft(chat):
    style = prompt_style(chat, "chat")
    end = style.response_end(chat)
    row = {
        "sample_id": "p1/0",
        "problem_id": "p1",
        "question": QUESTION,
        "gold_solution": GOLD,
        "prediction": WRONG,
    }
    pending = _prepare(chat, row, GOLD, 1, style)
    response = [*chat(WRONG, add_special_tokens=False)["input_ids"], end]
    assert pending.response_ids == response
    # Training on the same prompt and response: its labels are exactly those ids.
    example = tokenize_example(
        chat, format_policy_prompt(QUESTION, style), WRONG, max_length=10_000, eos_id=end
    )
    assert [t for t in example["labels"] if t != IGNORE_INDEX] == response
    assert pending.prompt_ids == chat(format_policy_prompt(QUESTION, style))["input_ids"]
    assert pending.grm_prompt_ids == chat(rewrite_prompt(QUESTION, GOLD, WRONG, style))["input_ids"]
    assert pending.target_ids == [*chat(GOLD, add_special_tokens=False)["input_ids"], end]
    gold = gold_sft_rows(chat, [{"id": "p1", **row}], ["p1"], style)[0]
    assert gold["prompt_ids"] == pending.prompt_ids and gold["target_ids"][-1] == end


def test_load_policy_also_stops_generation_at_the_end_of_turn(tmp_path):
    folder = save_chat_model(tmp_path / "chat", CORPUS)
    model, tokenizer = load_policy(folder)
    stops = model.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids(IM_END) in stops
    assert tokenizer.eos_token_id in stops


def test_prompts_section_is_in_the_cache_key_of_every_stage_whose_prompts_it_changes():
    plain, chat = PipelineConfig(), PipelineConfig.model_validate({"prompts": {"format": "chat"}})
    changed = {s for s in STAGES if stage_hash(plain, s) != stage_hash(chat, s)}
    assert changed == {"bootstrap", "collect", "train_grm", "annotate", "train_policy", "evaluate"}
