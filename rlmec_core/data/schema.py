"""The one record schema every data source is normalised into."""

from __future__ import annotations

from datasets import Features, Sequence, Value

# id: stable within its source; question: the problem text (QA options included);
# gold_solution: one step per line, last line "The answer is <answer>";
# gold_answer: the bare answer; source: e.g. "synthetic", "gsm8k", "svamp", "qa".
RECORD_FIELDS = ("id", "question", "gold_solution", "gold_answer", "source")
RECORD_FEATURES = Features({name: Value("string") for name in RECORD_FIELDS})

# One collected solution y of the policy (stage 1). sample_id = f"{problem_id}/{j}".
SAMPLE_FEATURES = Features(
    {
        "sample_id": Value("string"),
        "problem_id": Value("string"),
        "question": Value("string"),
        "gold_solution": Value("string"),
        "gold_answer": Value("string"),
        "source": Value("string"),
        "prediction": Value("string"),  # y, the generated solution text (no EOS token)
        "predicted_answer": Value("string"),  # "" when none could be extracted
        "correct": Value("bool"),
    }
)

# Stage 2 adds, per sample: the teacher's verdict and the minimum-edit rewrite.
# correct: the label every later stage uses (the gold answer and, where the step checker
# applies, every step right); answer_correct: collect's label, by the final answer alone.
# teacher_status: "correct" (error_step -1, rewrite = y), "kept" (the rewrite reaches the
# gold answer and checks), "abstained", "wrong_answer" or "unverified" (see distill.py).
DISTILLED_FEATURES = Features(
    {
        **SAMPLE_FEATURES,
        "answer_correct": Value("bool"),
        "error_step": Value("int32"),
        "rewrite": Value("string"),
        "teacher_status": Value("string"),
    }
)

# Stage 4's output, one row per kept sample: what policy training reads. Prompt and
# response are tokenised separately and concatenated, so response_ids are exactly the
# tokens rewards, reference log-probs and training refer to. Per-token lists line up
# one-to-one: len(rewards) == len(ref_logprobs) == len(response_ids), and
# len(target_weights) == len(target_ids). Responses end with the EOS token.
RL_FEATURES = Features(
    {
        "sample_id": Value("string"),
        "problem_id": Value("string"),
        "correct": Value("bool"),
        "prediction": Value("string"),  # y
        "rewrite": Value("string"),  # ŷ: the GRM's minimally-edited rewrite (y when correct)
        "grm_error_step": Value("int32"),  # the GRM's first error step (-1: correct)
        "teacher_error_step": Value("int32"),  # the teacher's, for measuring reward quality
        "prompt_ids": Sequence(Value("int32")),
        "response_ids": Sequence(Value("int32")),  # y + EOS
        "rewards": Sequence(Value("float32")),
        "ref_logprobs": Sequence(Value("float32")),
        "target_ids": Sequence(Value("int32")),  # ŷ + EOS
        "target_weights": Sequence(Value("float32")),
    }
)
