"""The answer check used everywhere: extract a final answer, compare it with the gold one.

Math answers are compared as numbers first (cheap, exact: commas, ``$``, ``%``, units,
fractions, decimals), then with ``math_verify`` for LaTeX/symbolic answers. Answers that
are words (QA option text) are compared as text: case, punctuation and spacing ignored.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

from math_verify import parse, verify

_ANSWER_IS = re.compile(r"the answer is[:\s]*(.*)", re.IGNORECASE)
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")

# A plain number, optionally signed, with thousands separators ("1,234" or LaTeX "1{,}234").
_NUM = r"[-+−]?(?:\d{1,3}(?:(?:,|\{,\})\d{3})+|\d+)(?:\.\d+)?|[-+−]?\.\d+"
_NUMBER_RE = re.compile(rf"^(?:{_NUM})$")
_FRACTION_RE = re.compile(rf"^({_NUM})\s*/\s*({_NUM})$")
_LATEX_FRAC_RE = re.compile(
    r"^([-+−]?)\\[dt]?frac\{\s*(" + _NUM + r")\s*\}\{\s*(" + _NUM + r")\s*\}$"
)
# Words after a number ("18 dollars", "5 apples per day") are units, not part of it.
_UNITS_RE = re.compile(r"^(.*?\d)\s*(?:[A-Za-z][A-Za-z'’.\- ]*)$")
_OPTION_LABEL_RE = re.compile(r"^(?:\(\s*[A-Ea-e]\s*\)|[A-E][.):])\s+")
_PUNCT_RE = re.compile(r"[^\w\s]")
# A word of 3+ letters not introduced by a backslash: prose, not a formula.
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_MATH_WORDS = {"sin", "cos", "tan", "log", "exp", "sqrt", "infty", "inf", "pi", "cot", "sec"}
# Longer answers are not worth a symbolic check, and could stall an un-timed sympy call.
_MAX_SYMBOLIC_CHARS = 200
_TOLERANCE = 1e-6


def extract_answer(text: str) -> str | None:
    """The final answer a solution states, or ``None`` when it states none.

    Order of preference: the last ``The answer is ...`` (to the end of its line, trailing
    full stop removed), the last ``\\boxed{...}``, GSM8K's ``#### N``.
    """
    matches = [m.group(1).strip() for m in _ANSWER_IS.finditer(text)]
    matches = [_strip_full_stop(m) for m in matches if m.strip(" .")]
    if matches:
        return matches[-1]
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    hashes = _HASHES.findall(text)
    if hashes:
        return _strip_full_stop(hashes[-1])
    return None


def answers_match(predicted: str, gold: str) -> bool:
    """Whether ``predicted`` states the answer ``gold``.

    ``predicted`` is a whole solution (its answer is extracted first; a multi-line
    solution with no extractable answer never matches) or a bare answer. ``gold`` is a
    bare answer. Math answers are compared numerically or symbolically; word answers
    (QA option text) are compared as text, ignoring case, punctuation and spacing, with
    a leading option label like ``(A)`` on the prediction allowed. An option letter on its
    own is not matched against option text: the options are not known here.
    """
    answer = extract_answer(predicted)
    if answer is None:
        if "\n" in predicted.strip():
            return False
        answer = predicted
    answer, gold = answer.strip(), gold.strip()
    if not answer or not gold:
        return False
    gold_number, answer_numbers = _as_number(gold), _as_numbers(answer)
    if gold_number is not None and answer_numbers:
        return any(_close(value, gold_number) for value in answer_numbers)
    if _is_prose(gold) or _is_prose(answer):
        key = _text_key(gold)
        return bool(key) and key in (_text_key(answer), _text_key(_OPTION_LABEL_RE.sub("", answer)))
    if "".join(answer.split()) == "".join(gold.split()):
        return True
    return _symbolic_match(answer, gold)


def _strip_full_stop(answer: str) -> str:
    answer = answer.strip()
    while answer.endswith("."):
        answer = answer[:-1].rstrip()
    return answer


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces balanced."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def _text_key(text: str) -> str:
    return " ".join(_PUNCT_RE.sub(" ", text.lower()).split())


def _is_prose(text: str) -> bool:
    cleaned = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{[^}]*\}", "", text)
    return any(w.lower() not in _MATH_WORDS for w in _PROSE_WORD_RE.findall(cleaned))


def _clean_number_text(text: str) -> str:
    text = _strip_full_stop(text)
    text = re.sub(r"\\text\{\s*([^}]*)\}", r" \1", text)  # "\text{ dollars}" -> units
    # Currency and LaTeX spacing say nothing about the value.
    for noise in ("\\$", "$", "\\!", "\\,", "\\ "):
        text = text.replace(noise, "")
    return re.sub(r"^([-+−])\s+", r"\1", text.strip())


def _to_fraction(number: str) -> Fraction:
    return Fraction(number.replace("−", "-").replace("{,}", "").replace(",", ""))


def _as_number(text: str) -> Fraction | None:
    """The value of a plain numeric answer, or ``None`` if it is not one."""
    values = _as_numbers(text)
    return values[0] if values else None


def _as_numbers(text: str) -> list[Fraction]:
    """Readings of a plain numeric answer; a percentage reads both as N and N/100."""
    text = _clean_number_text(text)
    if len(text) > 60:
        return []
    units = _UNITS_RE.match(text)
    if units and not _NUMBER_RE.match(text):
        text = units.group(1).strip()
    percent = text.endswith("%")
    if percent:
        text = text.rstrip("%").rstrip("\\").strip()
    value: Fraction | None = None
    if _NUMBER_RE.match(text):
        value = _to_fraction(text)
    elif m := _FRACTION_RE.match(text):
        denominator = _to_fraction(m.group(2))
        value = _to_fraction(m.group(1)) / denominator if denominator else None
    elif m := _LATEX_FRAC_RE.match(text):
        denominator = _to_fraction(m.group(3))
        if denominator:
            value = _to_fraction(m.group(2)) / denominator
            value = -value if m.group(1) in ("-", "−") else value
    if value is None:
        return []
    return [value, value / 100] if percent else [value]


def _close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= _TOLERANCE * max(1, abs(b))


def _symbolic_match(answer: str, gold: str) -> bool:
    """math_verify comparison; its signal-based timeout only works in the main thread."""
    if len(answer) > _MAX_SYMBOLIC_CHARS or len(gold) > _MAX_SYMBOLIC_CHARS:
        return False
    in_main = threading.current_thread() is threading.main_thread()
    seconds = 5 if in_main else None
    try:
        gold_parsed = parse(_as_latex(gold), parsing_timeout=seconds)
        answer_parsed = parse(_as_latex(answer), parsing_timeout=seconds)
        if not gold_parsed or not answer_parsed:
            return False
        return bool(verify(gold_parsed, answer_parsed, timeout_seconds=seconds))
    except Exception:  # math_verify failures mean "could not show equal"
        return False


def _as_latex(answer: str) -> str:
    answer = answer.strip()
    return answer if answer.startswith("$") or "\\boxed" in answer else f"${answer}$"
