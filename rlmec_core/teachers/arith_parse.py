"""Reading and editing the arithmetic written in solution steps.

A step such as ``She makes 9 * 2 = $18 every day`` holds numbers (with their character
spans, so a correction rewrites only the digits) and equations (``9 * 2 = 18``: expressions
joined by ``=``). Values are exact ``Fraction``s; ``25%`` counts as 1/4 in arithmetic.
GSM8K calculator annotations ``<<9*2=18>>`` are read as equations of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_TOKEN = re.compile(
    r"""
    (?P<mixed>\d+\ \d+/\d+(?![\d.]))
    |(?P<spaced>\$\s*\d{1,3}(?:\ \d{3})+(?!\d|[.,]\d))
    |(?P<num>(?:\$\s*)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:\s?%)?|(?:\$\s*)?\.\d+(?:\s?%)?)
    |(?P<op>\\times|\\cdot|\\div|[+\-*/×÷−–])
    |(?P<eq>=)
    |(?P<paren>[()])
    |(?P<word>[A-Za-z][A-Za-z'’]*)
    |(?P<other>\S)
    """,
    re.VERBOSE,
)
_DIGITS = re.compile(r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+")
_OP_NAMES = {"×": "*", "\\times": "*", "\\cdot": "*", "x": "*", "X": "*", "of": "*"}
_OP_NAMES |= {"÷": "/", "\\div": "/", "−": "-", "–": "-"}
_WORD_OPS = {"x", "X", "of"}  # multiplication only when written between two numbers
_MAX_UNIT_WORDS = 3  # "20 sheep + 160 sheep": words after a number before an operator

_NUMBER_WORDS = {
    "one": (1,),
    "two": (2,),
    "three": (3,),
    "four": (4,),
    "five": (5,),
    "six": (6,),
    "seven": (7,),
    "eight": (8,),
    "nine": (9,),
    "ten": (10,),
    "eleven": (11,),
    "twelve": (12,),
    "fifteen": (15,),
    "twenty": (20,),
    "thirty": (30,),
    "forty": (40,),
    "fifty": (50,),
    "hundred": (100,),
    "thousand": (1000,),
    "million": (1000000,),
    "half": (2, Fraction(1, 2)),
    "twice": (2,),
    "double": (2,),
    "triple": (3,),
    "thrice": (3,),
    "third": (3, Fraction(1, 3)),
    "quarter": (4, Fraction(1, 4)),
    "dozen": (12,),
}


@dataclass(frozen=True, eq=False)
class Number:
    """One number as written: ``start:end`` spans its digits only (no ``$`` or ``%``)."""

    start: int
    end: int
    value: Fraction  # the value arithmetic uses: 25% -> 1/4
    percent: bool
    decimals: int
    separator: str  # thousands separator as written: "", "," or " "
    # Written style: "75.00" keeps its decimals whatever the value; ".25" has no "0".
    fixed_point: bool = False
    bare_point: bool = False

    @property
    def shown(self) -> Fraction:
        """The value as written: 25% -> 25."""
        return self.value * 100 if self.percent else self.value


Term = Number | str  # a number, or an operator "+-*/" or a parenthesis


@dataclass(frozen=True, eq=False)
class Equation:
    """Expressions joined by ``=``; at least one of them has an operator."""

    segments: tuple[tuple[Term, ...], ...]

    @property
    def result(self) -> Number | None:
        """The single number the equation computes: its last side, else its first."""
        for side in (self.segments[-1], self.segments[0]):
            if len(side) == 1 and isinstance(side[0], Number):
                return side[0]
        return None

    @property
    def operands(self) -> list[Number]:
        result = self.result
        return [
            t for side in self.segments for t in side if isinstance(t, Number) and t is not result
        ]

    @property
    def numbers(self) -> list[Number]:
        return [t for side in self.segments for t in side if isinstance(t, Number)]

    def computed(self, values: Mapping[Number, Fraction] | None = None) -> Fraction | None:
        """What the equation's operator sides evaluate to (numbers overridden by ``values``)."""
        for side in self.segments:
            if any(isinstance(t, str) and t in "+-*/" for t in side):
                return evaluate(side, values)
        return None

    def holds(self) -> bool:
        """Whether the sides agree (a result may be rounded as written).

        A percent may be read as a fraction (``25% * 80 = 20``) or literally
        (``100 - 60 = 40%``): either reading that makes the equation true is accepted.
        """
        percents = [n for n in self.numbers if n.percent]
        for literal in (False, True) if percents else (False,):
            values = {n: n.shown for n in percents} if literal else None
            reference = self.computed(values)
            if reference is None:
                return True  # e.g. division by zero: nothing we can call wrong
            if all(
                close_as_written(reference, side[0])
                if len(side) == 1 and isinstance(side[0], Number)
                else evaluate(side, values) == reference
                for side in self.segments
            ):
                return True
        return False


@dataclass(frozen=True)
class Step:
    """One line of a solution with its numbers and equations."""

    text: str
    numbers: tuple[Number, ...] = ()
    equations: tuple[Equation, ...] = ()

    @property
    def prose_numbers(self) -> list[Number]:
        """Numbers outside every equation (``9 duck eggs``, ``He makes $10.5``)."""
        in_equations = {id(n) for eq in self.equations for n in eq.numbers}
        return [n for n in self.numbers if id(n) not in in_equations]


def close_as_written(value: Fraction, written: Number) -> bool:
    """``written`` states ``value``, allowing rounding to the decimals it shows.

    A percent states either reading: ``40%`` states 0.4 and 40.
    """
    readings = [(written.value, Fraction(1, 10**written.decimals) / 100)] if written.percent else []
    readings.append((written.shown, Fraction(1, 10**written.decimals)))
    for target, unit in readings:
        if value == target:
            return True
        representable = (value / unit).denominator == 1
        if not representable and abs(value - target) < unit:
            return True
    return False


@lru_cache(maxsize=8192)
def read_step(text: str) -> Step:
    """The numbers and equations of one step (cached: the same text gives the same objects)."""
    outer = _ANNOTATION.sub(lambda m: " " * len(m.group(0)), text)
    tokens = _tokenise(outer, 0)
    equations = _equations(tokens)
    for m in _ANNOTATION.finditer(text):
        inner = _tokenise(m.group(0)[2:-2], m.start() + 2)
        tokens += inner
        equations += _equations(inner)
    numbers = sorted((t for t in tokens if isinstance(t, Number)), key=lambda n: n.start)
    equations.sort(key=lambda eq: eq.numbers[0].start)
    return Step(text, tuple(numbers), tuple(equations))


def values_in(text: str) -> set[Fraction]:
    """Every value a text states, in digits or as a number word; percents both ways."""
    values: set[Fraction] = set()
    for number in read_step(text).numbers:
        values |= {number.value, number.shown}
    for word in re.findall(r"[a-z]+", text.lower()):
        values |= {Fraction(v) for v in _NUMBER_WORDS.get(word, ())}
    return values


def evaluate(
    side: Iterable[Term], values: Mapping[Number, Fraction] | None = None
) -> Fraction | None:
    """Value of an expression with the usual precedence; None when it divides by zero."""
    terms = list(side)
    values = values or {}
    pos = 0

    def atom() -> Fraction:
        nonlocal pos
        term = terms[pos]
        pos += 1
        if term == "-":
            return -atom()
        if term == "(":
            inner = expression()
            pos += 1  # the closing parenthesis
            return inner
        assert isinstance(term, Number)
        return values.get(term, term.value)

    def product() -> Fraction:
        nonlocal pos
        acc = atom()
        while pos < len(terms) and terms[pos] in ("*", "/"):
            op = terms[pos]
            pos += 1
            rhs = atom()
            acc = acc * rhs if op == "*" else acc / rhs
        return acc

    def expression() -> Fraction:
        nonlocal pos
        acc = product()
        while pos < len(terms) and terms[pos] in ("+", "-"):
            op = terms[pos]
            pos += 1
            rhs = product()
            acc = acc + rhs if op == "+" else acc - rhs
        return acc

    try:
        return expression()
    except ZeroDivisionError:
        return None


def format_like(number: Number, value: Fraction) -> str:
    """``value`` written in the style of ``number`` (separators, fixed decimals, percent).

    Decimals are the number's own when it wrote a fixed number of them ("$75.00"), else
    the fewest that state the value exactly, else two (GSM8K rounds to cents).
    """
    shown = value * 100 if number.percent else value
    wanted = number.decimals if number.fixed_point else 0
    exact = (d for d in range(wanted, 5) if (shown * 10**d).denominator == 1)
    decimals = next(exact, max(wanted, 2))
    scaled = round(abs(shown) * 10**decimals)
    whole, frac = divmod(scaled, 10**decimals)
    sign = "-" if shown < 0 and scaled else ""
    head = f"{whole:,}".replace(",", number.separator) if number.separator else str(whole)
    if number.bare_point and whole == 0 and decimals:
        head = ""
    return f"{sign}{head}.{frac:0{decimals}d}" if decimals else f"{sign}{head}"


def replace_numbers(text: str, new_values: Mapping[Number, Fraction]) -> str:
    """``text`` with each given number's digits rewritten to its new value."""
    for number in sorted(new_values, key=lambda n: n.start, reverse=True):
        written = format_like(number, new_values[number])
        text = text[: number.start] + written + text[number.end :]
    return text


def carry_forward(
    steps: list[str],
    start: int,
    fixes: dict[Fraction, Fraction],
    correct_false: bool,
    start_edits: Mapping[Number, Fraction] | None = None,
    keep_in_prose: frozenset[Fraction] = frozenset(),
) -> list[str]:
    """Steps ``start..`` rewritten so they use corrected values, as a careful writer would.

    ``fixes`` maps a wrong value to the value that replaces it (updated in place). Operands
    equal to a wrong value take the new one and their equation is recomputed, whose old
    result then maps to the new result; numbers in prose follow the same map, except
    values in ``keep_in_prose`` (say, the question's own numbers) outside the last step.
    With ``correct_false`` an equation that was already false is also recomputed.
    ``start_edits`` are changes already decided for numbers of ``read_step(steps[start])``:
    they are kept as given, and an equation with a changed operand gets a new result.
    """
    out = list(steps[:start])
    for k, text in enumerate(steps[start:]):
        step = read_step(text)
        # Matched by span, not identity: the caller's Step may come from another read.
        spans = {(n.start, n.end): v for n, v in (start_edits or {}).items()} if k == 0 else {}
        edits = {n: spans[(n.start, n.end)] for n in step.numbers if (n.start, n.end) in spans}
        # A wrong result in this step only reaches the numbers written after it.
        made_here = {n.value: n.start for n in edits if n.value in fixes and _is_result(n, step)}
        keep = keep_in_prose if start + k < len(steps) - 1 else frozenset()
        out.append(_carry_step(step, fixes, correct_false, edits, made_here, keep))
    return out


def _is_result(number: Number, step: Step) -> bool:
    return any(eq.result is number for eq in step.equations)


def _carry_step(
    step: Step,
    fixes: dict[Fraction, Fraction],
    correct_false: bool,
    edits: dict[Number, Fraction],
    made_here: dict[Fraction, int],
    keep: frozenset[Fraction],
) -> str:
    protected = set(edits)
    for eq in step.equations:
        for n in eq.operands:
            if n in protected or n.value not in fixes:
                continue
            if n.value not in made_here or made_here[n.value] < n.start:
                edits[n] = fixes[n.value]
        result = eq.result
        changed = any(n in edits for n in eq.operands)
        if result is None or result in protected:
            continue
        if not (changed or (correct_false and not eq.holds())):
            continue
        new = eq.computed(edits)
        if new is None or close_as_written(new, result):
            continue
        # "100 - 60 = 40%" states its result literally: keep writing it that way.
        old = eq.computed()
        literal = result.percent and old is not None and old == result.shown
        edits[result] = new / 100 if literal else new
        fixes[result.value] = edits[result]
        made_here[result.value] = result.start
    # Prose restates values: "He has 5 sets left because 16 - 11 = 5". A kept value (the
    # question's own numbers) is only restated where this step made it wrong, and is
    # not also an operand here ("if there are 60 girls, there are 1*60 = 60 boys").
    operand_values = {n.value for eq in step.equations for n in eq.operands}
    for number in step.prose_numbers:
        value = number.value
        if number in protected or value not in fixes:
            continue
        if value in keep and (value not in made_here or value in operand_values):
            continue
        edits[number] = fixes[value]
    return replace_numbers(step.text, edits) if edits else step.text


def _tokenise(text: str, offset: int) -> list[Term]:
    """Numbers (as ``Number``) and operator/parenthesis/``=``/word markers, in order."""
    tokens: list[Term] = []
    for m in _TOKEN.finditer(text):
        kind, raw = m.lastgroup, m.group(0)
        if kind in ("mixed", "spaced"):
            # "1 1/2" (a mixed number), "$350 000" (spaces as thousands separators).
            digits = re.search(r"\d.*", raw)
            assert digits is not None
            whole, _, rest = digits.group(0).partition(" ")
            value = (
                Fraction(whole) + Fraction(rest)
                if kind == "mixed"
                else Fraction(raw[digits.start() :].replace(" ", ""))
            )
            start = offset + m.start() + digits.start()
            separator = " " if kind == "spaced" else ""
            tokens.append(Number(start, offset + m.end(), value, False, 0, separator))
        elif kind == "num":
            after = text[m.end() : m.end() + 2]
            if after[:1].isalpha() and not (after[:1] in "xX" and after[1:2].isdigit()):
                tokens.append("w")  # "2x", "4th", "5km": not a plain number
                continue
            digits = _DIGITS.search(raw)
            assert digits is not None
            percent = raw.endswith("%")
            plain = digits.group(0).replace(",", "")
            value = Fraction(plain) / (100 if percent else 1)
            decimals = len(plain.split(".")[1]) if "." in plain else 0
            start = offset + m.start() + digits.start()
            end = start + len(digits.group(0))
            if _negative_sign(tokens, text, m.start()) and digits.start() == 0:
                tokens.pop()  # "= -430", "(-3)": the minus belongs to the number
                start, value = start - 1, -value
            fixed = decimals > 0 and plain.endswith("0")
            bare = plain.startswith(".")
            separator = "," if "," in raw else ""
            tokens.append(Number(start, end, value, percent, decimals, separator, fixed, bare))
        elif kind == "op":
            tokens.append(_OP_NAMES.get(raw, raw))
        elif kind == "eq":
            tokens.append("=")
        elif kind == "paren":
            tokens.append(raw)
        elif kind == "word":
            tokens.append(f"w:{raw}")
        else:
            tokens.append("?")
    # "7 x 1.5", "20% of 50": a word between two numbers that means "times".
    for i in range(1, len(tokens) - 1):
        word = tokens[i]
        if isinstance(word, str) and word[2:] in _WORD_OPS and word.startswith("w:"):
            before, after = tokens[i - 1], tokens[i + 1]
            if (isinstance(before, Number) or before == ")") and (
                isinstance(after, Number) or after == "("
            ):
                tokens[i] = "*"
    # "27(1/3)", "2(40+9)", "(1/2) 278": a number next to a bracket multiplies it.
    for i in range(len(tokens) - 1, 0, -1):
        before, token = tokens[i - 1], tokens[i]
        if (token == "(" and (isinstance(before, Number) or before == ")")) or (
            before == ")" and isinstance(token, Number)
        ):
            tokens.insert(i, "*")
    return tokens


def _negative_sign(tokens: list[Term], text: str, at: int) -> bool:
    """Whether the ``-`` just before ``text[at]`` is a sign rather than a subtraction."""
    if not tokens or tokens[-1] != "-" or at == 0 or text[at - 1] not in "-−–":
        return False
    before = tokens[-2] if len(tokens) > 1 else None
    return not (isinstance(before, Number) or before == ")")


def _is_word(token: Term) -> bool:
    return isinstance(token, str) and (token == "w" or token.startswith("w:"))


def _is_unit(token: Term) -> bool:
    """A word that may follow a number inside an expression; a lone letter is a variable."""
    if not (isinstance(token, str) and token.startswith("w:")):
        return False
    return len(token) > 3 or token[2:] in ("a", "A", "I")


def _operand(tokens: list[Term], i: int) -> int | None:
    """End of the operand starting at ``i`` (unary minus, number or parenthesised), or None."""
    if i < len(tokens) and tokens[i] == "-" and i + 1 < len(tokens) and tokens[i + 1] != "-":
        return _operand(tokens, i + 1)
    if i >= len(tokens):
        return None
    if isinstance(tokens[i], Number):
        return i + 1
    if tokens[i] == "(":
        end = _expression(tokens, i + 1)
        if end is not None and end < len(tokens) and tokens[end] == ")":
            return end + 1
    return None


def _expression(tokens: list[Term], i: int) -> int | None:
    """End of the longest expression ``operand (op operand)*`` from ``i``; unit words allowed."""
    end = _operand(tokens, i)
    if end is None:
        return None
    while True:
        j = end
        while j < len(tokens) and j - end < _MAX_UNIT_WORDS and _is_unit(tokens[j]):
            j += 1
        if j < len(tokens) and tokens[j] in ("+", "-", "*", "/"):
            nxt = _operand(tokens, j + 1)
            if nxt is None:
                return end
            end = nxt
        else:
            return end


def _side(tokens: list[Term], start: int, end: int) -> tuple[Term, ...]:
    return tuple(t for t in tokens[start:end] if not _is_word(t))


def _may_start(tokens: list[Term], i: int) -> bool:
    """Whether an equation may begin at ``i``: not mid-way through an expression we lost."""
    token = tokens[i]
    before = next((t for t in reversed(tokens[:i]) if not _is_unit(t)), None)
    if before in ("+", "-", "*", "/") or (before is not None and _is_word(before)):
        return False
    if token == "-":  # "-48 + 21 = -27": a leading minus only where no number precedes
        return (
            before in (None, "=", "(", "?")
            and i + 1 < len(tokens)
            and isinstance(tokens[i + 1], Number)
        )
    return isinstance(token, Number) or token == "("


def _equations(tokens: list[Term]) -> list[Equation]:
    """Equations ``expr = expr (= expr)*`` with an operator somewhere, left to right."""
    found: list[Equation] = []
    i = 0
    while i < len(tokens):
        if not _may_start(tokens, i):
            i += 1
            continue
        sides: list[tuple[Term, ...]] = []
        start, end, last_end = i, _expression(tokens, i), i + 1
        while end is not None:
            sides.append(_side(tokens, start, end))
            last_end = end
            j = end
            while j < len(tokens) and j - end < _MAX_UNIT_WORDS and _is_unit(tokens[j]):
                j += 1
            if j < len(tokens) and tokens[j] == "=":
                start, end = j + 1, _expression(tokens, j + 1)
            else:
                break
        # "(7/2)x = 105", "9 = (3/4)*number": a side that runs on into something we
        # cannot read (a variable, a dangling operator) is not an equation we can check.
        after = tokens[last_end] if last_end < len(tokens) else None
        runs_on = after in ("+", "-", "*", "/") or (_is_word(after) and not _is_unit(after))
        chain = [] if runs_on or len(sides) < 2 else _split_chain(sides)
        if chain:
            found.extend(chain)
            i = last_end
        else:
            i += 1
    return found


def _split_chain(sides: list[tuple[Term, ...]]) -> list[Equation]:
    """Pairs of sides an author meant as equations, from ``a = b = c`` chains.

    ``4 students drank 1.5 quarts = 4 * 1.5 = 6``: the leading single number is a label;
    ``3/2 = 1.50 + 3.00 = 4.50``: a side that starts from the previous value is a running
    total. Every operator side pairs with the side after it, else the one before it.
    """
    equations = []
    for k, side in enumerate(sides):
        if not _has_operator(side):
            continue
        nxt = sides[k + 1] if k + 1 < len(sides) else None
        if nxt is None:
            if k == 1 and not _has_operator(sides[0]):
                equations.append(Equation((sides[0], side)))
            continue
        if _has_operator(nxt):
            first = nxt[0] if isinstance(nxt[0], Number) else None
            value = evaluate(side)
            if first is not None and value is not None and close_as_written(value, first):
                continue  # a running total: the next side starts from this value
        equations.append(Equation((side, nxt)))
    return equations


def _has_operator(side: tuple[Term, ...]) -> bool:
    return len(side) > 1
