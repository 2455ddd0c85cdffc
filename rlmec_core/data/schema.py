"""The one record schema every data source is normalised into."""

from __future__ import annotations

from datasets import Features, Value

# id: stable within its source; question: the problem text (QA options included);
# gold_solution: one step per line, last line "The answer is <answer>";
# gold_answer: the bare answer; source: e.g. "synthetic", "gsm8k", "svamp", "qa".
RECORD_FIELDS = ("id", "question", "gold_solution", "gold_answer", "source")
RECORD_FEATURES = Features({name: Value("string") for name in RECORD_FIELDS})
