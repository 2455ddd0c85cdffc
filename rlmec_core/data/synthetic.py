"""Seeded GSM8K-style arithmetic word problems, so the offline pipeline needs no download.

Each problem is a chain of 2-4 integer operations on one running quantity. The gold
solution writes one operation per line with its arithmetic spelled out
(``... 3 * 12 = 36 pencils.``) and ends with ``The answer is N``, the same shape as the
normalised GSM8K solutions, so every later stage treats both sources alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from datasets import Dataset, DatasetDict

from rlmec_core.data.schema import RECORD_FEATURES

# (name, subject pronoun, possessive). Both genders, so pronoun agreement is learnt.
NAMES: tuple[tuple[str, str, str], ...] = (
    ("Tom", "he", "his"),
    ("Anna", "she", "her"),
    ("Liam", "he", "his"),
    ("Maria", "she", "her"),
    ("Omar", "he", "his"),
    ("Sofia", "she", "her"),
    ("Ben", "he", "his"),
    ("Grace", "she", "her"),
    ("Ravi", "he", "his"),
    ("Chloe", "she", "her"),
    ("Jack", "he", "his"),
    ("Emma", "she", "her"),
    ("Kenji", "he", "his"),
    ("Lucy", "she", "her"),
    ("Diego", "he", "his"),
    ("Nora", "she", "her"),
    ("Sam", "he", "his"),
    ("Mia", "she", "her"),
    ("Felix", "he", "his"),
    ("Zara", "she", "her"),
)


@dataclass(frozen=True)
class _Op:
    """One phrasing of one operation.

    ``question`` and ``solution`` are format strings over name/pron/Pron/obj/poss/items/
    a/b/x/y; ``final_question`` replaces the closing question when the operation changes
    what is being counted (only such operations are restricted to the last step).
    """

    question: str
    solution: str
    final_question: str | None = None


@dataclass(frozen=True)
class _Scenario:
    topic: str
    items: tuple[str, ...]
    start_mul: tuple[_Op, ...]  # x = a * b
    start_add: tuple[_Op, ...]  # x = a + b
    add: tuple[_Op, ...]
    sub: tuple[_Op, ...]
    mul: tuple[_Op, ...]
    div: tuple[_Op, ...]
    closing: str  # the question asked when the last operation keeps the unit


_SCENARIOS: tuple[_Scenario, ...] = (
    _Scenario(
        topic="shopping",
        items=("pencils", "apples", "stickers", "marbles", "erasers"),
        start_mul=(
            _Op(
                "{name} buys {a} boxes of {items} with {b} {items} in each box.",
                "{name} buys {a} boxes of {b} {items}, so {pron} has {a} * {b} = {y} {items}.",
            ),
            _Op(
                "{name} buys {a} packs of {items}. Each pack holds {b} {items}.",
                "{name} has {a} packs of {b} {items}, so {pron} has {a} * {b} = {y} {items}.",
            ),
        ),
        start_add=(
            _Op(
                "{name} has {a} {items} and buys {b} more at the shop.",
                "{name} has {a} {items} and buys {b} more, so {pron} has {a} + {b} = {y} {items}.",
            ),
        ),
        add=(
            _Op(
                "Then {pron} buys {b} more {items}.",
                "{Pron} buys {b} more, so {pron} has {x} + {b} = {y} {items}.",
            ),
            _Op(
                "{poss_cap} friend gives {obj} {b} {items}.",
                "{poss_cap} friend gives {obj} {b}, so {pron} has {x} + {b} = {y} {items}.",
            ),
        ),
        sub=(
            _Op(
                "{Pron} gives {b} {items} to {poss} sister.",
                "{Pron} gives away {b}, so {pron} has {x} - {b} = {y} {items}.",
            ),
            _Op(
                "{Pron} loses {b} {items} on the way home.",
                "{Pron} loses {b}, so {pron} has {x} - {b} = {y} {items}.",
            ),
        ),
        mul=(
            _Op(
                "The next week {pron} ends up with {b} times as many {items}.",
                "{Pron} ends up with {b} times as many, so {pron} has {x} * {b} = {y} {items}.",
            ),
        ),
        div=(
            _Op(
                "{Pron} shares the {items} equally among {b} friends.",
                "{Pron} shares them among {b} friends, so each gets {x} / {b} = {y} {items}.",
                "How many {items} does each friend get?",
            ),
            _Op(
                "{Pron} splits the {items} into {b} equal piles and keeps one pile.",
                "{Pron} keeps one of {b} equal piles, so {pron} has {x} / {b} = {y} {items}.",
            ),
        ),
        closing="How many {items} does {name} have now?",
    ),
    _Scenario(
        topic="baking",
        items=("cookies", "muffins", "cupcakes", "rolls", "tarts"),
        start_mul=(
            _Op(
                "{name} bakes {a} trays of {items} with {b} {items} on each tray.",
                "{name} bakes {a} trays of {b} {items}, so {pron} bakes {a} * {b} = {y} {items}.",
            ),
        ),
        start_add=(
            _Op(
                "{name} bakes {a} {items} in the morning and {b} {items} in the afternoon.",
                "{name} bakes {a} and then {b} {items}, so {pron} bakes {a} + {b} = {y} {items}.",
            ),
        ),
        add=(
            _Op(
                "{poss_cap} neighbour brings {b} more {items}.",
                "{poss_cap} neighbour brings {b}, so there are {x} + {b} = {y} {items}.",
            ),
        ),
        sub=(
            _Op(
                "{poss_cap} family eats {b} of the {items}.",
                "{poss_cap} family eats {b}, so there are {x} - {b} = {y} {items} left.",
            ),
            _Op(
                "{Pron} drops {b} {items} on the floor.",
                "{Pron} drops {b}, so there are {x} - {b} = {y} {items} left.",
            ),
        ),
        mul=(
            _Op(
                "For a party {pron} makes {b} times as many {items} as {pron} has.",
                "{Pron} makes {b} times as many, so there are {x} * {b} = {y} {items}.",
            ),
        ),
        div=(
            _Op(
                "{Pron} packs the {items} equally into {b} boxes.",
                "{Pron} packs them into {b} boxes, so each box has {x} / {b} = {y} {items}.",
                "How many {items} are in each box?",
            ),
            _Op(
                "{Pron} sells all but one of {b} equal batches and keeps that batch.",
                "{Pron} keeps one of {b} equal batches, so there are {x} / {b} = {y} {items}.",
            ),
        ),
        closing="How many {items} does {name} have in the end?",
    ),
    _Scenario(
        topic="travel",
        items=("kilometers", "miles"),
        start_mul=(
            _Op(
                "{name} drives for {a} hours at {b} {items} per hour.",
                "{name} drives {a} hours at {b} {items} per hour, so {pron} drives "
                "{a} * {b} = {y} {items}.",
            ),
        ),
        start_add=(
            _Op(
                "{name} cycles {a} {items} to the lake and then {b} {items} to the hill.",
                "{name} cycles {a} and then {b} {items}, so {pron} cycles {a} + {b} = {y} {items}.",
            ),
        ),
        add=(
            _Op(
                "After lunch {pron} travels {b} more {items}.",
                "{Pron} travels {b} more, so the total is {x} + {b} = {y} {items}.",
            ),
        ),
        sub=(
            _Op(
                "{Pron} finds that {b} of those {items} were a wrong turn and do not count.",
                "{b} {items} do not count, so the trip is {x} - {b} = {y} {items}.",
            ),
        ),
        mul=(
            _Op(
                "{Pron} makes the same trip {b} times that month.",
                "{Pron} makes the trip {b} times, so {pron} travels {x} * {b} = {y} {items}.",
            ),
        ),
        div=(
            _Op(
                "{Pron} splits the trip into {b} equal parts.",
                "The trip has {b} equal parts, so each part is {x} / {b} = {y} {items}.",
                "How many {items} long is each part?",
            ),
        ),
        closing="How many {items} does {name} travel in total?",
    ),
    _Scenario(
        topic="savings",
        items=("dollars",),
        start_mul=(
            _Op(
                "{name} saves {b} {items} every week for {a} weeks.",
                "{name} saves {b} {items} for {a} weeks, so {pron} saves {a} * {b} = {y} {items}.",
            ),
        ),
        start_add=(
            _Op(
                "{name} has {a} {items} in a jar and earns {b} {items} washing cars.",
                "{name} has {a} and earns {b} {items}, so {pron} has {a} + {b} = {y} {items}.",
            ),
        ),
        add=(
            _Op(
                "{poss_cap} grandmother gives {obj} {b} {items}.",
                "{poss_cap} grandmother gives {b}, so {pron} has {x} + {b} = {y} {items}.",
            ),
        ),
        sub=(
            _Op(
                "{Pron} spends {b} {items} on a book.",
                "{Pron} spends {b}, so {pron} has {x} - {b} = {y} {items}.",
            ),
            _Op(
                "{Pron} pays {b} {items} for a movie ticket.",
                "{Pron} pays {b}, so {pron} has {x} - {b} = {y} {items}.",
            ),
        ),
        mul=(
            _Op(
                "{Pron} invests it and it grows to {b} times as much.",
                "It grows {b} times, so {pron} has {x} * {b} = {y} {items}.",
            ),
        ),
        div=(
            _Op(
                "{Pron} gives all of it equally to {b} charities.",
                "Each of {b} charities gets {x} / {b} = {y} {items}.",
                "How many {items} does each charity get?",
            ),
        ),
        closing="How many {items} does {name} have now?",
    ),
    _Scenario(
        topic="classroom",
        items=("students",),
        start_mul=(
            _Op(
                "A school has {a} classes with {b} {items} in each class. {name} counts them.",
                "There are {a} classes of {b} {items}, so there are {a} * {b} = {y} {items}.",
            ),
        ),
        start_add=(
            _Op(
                "{name}'s club has {a} {items} and {b} new {items} join.",
                "The club has {a} and {b} join, so there are {a} + {b} = {y} {items}.",
            ),
        ),
        add=(
            _Op(
                "Then {b} more {items} arrive.",
                "{b} more arrive, so there are {x} + {b} = {y} {items}.",
            ),
        ),
        sub=(
            _Op(
                "{b} {items} go home early.",
                "{b} go home, so there are {x} - {b} = {y} {items}.",
            ),
        ),
        mul=(
            _Op(
                "Next year the group will be {b} times as big.",
                "The group will be {b} times as big, so it will have {x} * {b} = {y} {items}.",
            ),
        ),
        div=(
            _Op(
                "{name} splits the {items} into {b} equal teams.",
                "There are {b} equal teams, so each team has {x} / {b} = {y} {items}.",
                "How many {items} are in each team?",
            ),
        ),
        closing="How many {items} are there in the end?",
    ),
    _Scenario(
        topic="farm",
        items=("eggs",),
        start_mul=(
            _Op(
                "{name} has {a} hens and each hen lays {b} {items} this week.",
                "{a} hens lay {b} {items} each, so there are {a} * {b} = {y} {items}.",
            ),
        ),
        start_add=(
            _Op(
                "{name} collects {a} {items} on Monday and {b} {items} on Tuesday.",
                "{name} collects {a} and {b} {items}, so {pron} has {a} + {b} = {y} {items}.",
            ),
        ),
        add=(
            _Op(
                "{Pron} finds {b} more {items} in the barn.",
                "{Pron} finds {b} more, so {pron} has {x} + {b} = {y} {items}.",
            ),
        ),
        sub=(
            _Op(
                "{b} of the {items} break.",
                "{b} break, so {pron} has {x} - {b} = {y} {items}.",
            ),
            _Op(
                "{Pron} uses {b} {items} for breakfast.",
                "{Pron} uses {b}, so {pron} has {x} - {b} = {y} {items}.",
            ),
        ),
        mul=(
            _Op(
                "By the end of the month {pron} has {b} times as many {items}.",
                "{Pron} has {b} times as many, so {pron} has {x} * {b} = {y} {items}.",
            ),
        ),
        div=(
            _Op(
                "{Pron} packs the {items} into cartons of {b}.",
                "Cartons hold {b} {items}, so {pron} fills {x} / {b} = {y} cartons.",
                "How many cartons does {name} fill?",
            ),
        ),
        closing="How many {items} does {name} have now?",
    ),
)


@dataclass(frozen=True)
class SyntheticProblem:
    question: str
    gold_solution: str
    gold_answer: str


def _pick_op(
    rng: random.Random, x: int, allowed: str, max_operand: int, max_value: int
) -> tuple[str, int, int] | None:
    """A feasible (symbol, b, y) for the running value x, or None if none fits."""
    choices: list[tuple[str, int, int]] = []
    b = rng.randint(1, max_operand)
    if "+" in allowed and x + b <= max_value:
        choices.append(("+", b, x + b))
    if "-" in allowed and x > 1:
        b = rng.randint(1, min(max_operand, x - 1))
        choices.append(("-", b, x - b))
    muls = [b for b in range(2, max_operand + 1) if x * b <= max_value]
    if "*" in allowed and muls:
        b = rng.choice(muls)
        choices.append(("*", b, x * b))
    divs = [b for b in range(2, max_operand + 1) if x % b == 0 and x // b >= 1]
    if "/" in allowed and divs:
        b = rng.choice(divs)
        choices.append(("/", b, x // b))
    return rng.choice(choices) if choices else None


def generate_problem(
    rng: random.Random,
    *,
    min_steps: int = 2,
    max_steps: int = 4,
    max_operand: int = 10,
    max_value: int = 100,
) -> SyntheticProblem:
    """One random problem; all randomness comes from ``rng`` so streams are reproducible."""
    scenario = rng.choice(_SCENARIOS)
    name, pron, poss = rng.choice(NAMES)
    items = rng.choice(scenario.items)
    n_steps = rng.randint(min_steps, max_steps)
    slots = {"name": name, "pron": pron, "Pron": pron.capitalize(), "poss": poss}
    slots["poss_cap"] = poss.capitalize()
    slots["obj"] = "him" if pron == "he" else "her"
    slots["items"] = items

    # Step 1 combines two given numbers; the product must stay within max_value.
    if rng.random() < 0.5:
        a = rng.randint(2, max_operand)
        b = rng.randint(2, max(2, min(max_operand, max_value // a)))
        op, x = rng.choice(scenario.start_mul), a * b
    else:
        a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
        op, x = rng.choice(scenario.start_add), a + b
    q_parts = [op.question.format(a=a, b=b, **slots)]
    s_lines = [op.solution.format(a=a, b=b, y=x, **slots)]
    closing = scenario.closing
    pools = {"+": scenario.add, "-": scenario.sub, "*": scenario.mul, "/": scenario.div}

    for step in range(1, n_steps):
        last = step == n_steps - 1
        # Unit-changing phrasings ("each box has ...") only make sense as the last step.
        usable = {
            symbol: [o for o in pool if last or o.final_question is None]
            for symbol, pool in pools.items()
        }
        allowed = "".join(symbol for symbol, ops in usable.items() if ops)
        picked = _pick_op(rng, x, allowed, max_operand, max_value)
        if picked is None:  # unreachable while max_value >= 2 * max_operand (checked below)
            raise ValueError(f"no feasible operation for value {x}; raise max_value")
        symbol, b, y = picked
        op = rng.choice(usable[symbol])
        q_parts.append(op.question.format(b=b, x=x, y=y, **slots))
        s_lines.append(op.solution.format(b=b, x=x, y=y, **slots))
        if last and op.final_question is not None:
            closing = op.final_question
        x = y

    q_parts.append(closing.format(**slots))
    s_lines.append(f"The answer is {x}")
    question = " ".join(part[0].upper() + part[1:] for part in q_parts)
    return SyntheticProblem(question, "\n".join(s_lines), str(x))


def synthetic_splits(
    seed: int,
    n_train: int,
    n_dev: int,
    n_test: int,
    min_steps: int = 2,
    max_steps: int = 4,
    max_operand: int = 10,
    max_value: int = 100,
) -> DatasetDict:
    """Seeded train/dev/test splits with no question shared between splits.

    Problems are drawn from one seeded stream, duplicates dropped, then cut into the
    three splits in order, so a split's content depends only on the seed and settings.
    """
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if max_operand < 2 or max_value < 2 * max_operand:
        raise ValueError(
            f"need max_operand >= 2 and max_value >= 2 * max_operand, "
            f"got max_operand={max_operand}, max_value={max_value}"
        )
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    total = sum(sizes.values())
    rng = random.Random(seed)
    seen: set[str] = set()
    problems: list[SyntheticProblem] = []
    attempts = 0
    while len(problems) < total:
        attempts += 1
        if attempts > 50 * total + 1000:
            raise ValueError(
                f"could only make {len(problems)} distinct problems of {total}; "
                "widen max_operand/max_value or the step range"
            )
        problem = generate_problem(
            rng,
            min_steps=min_steps,
            max_steps=max_steps,
            max_operand=max_operand,
            max_value=max_value,
        )
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)

    out: dict[str, Dataset] = {}
    start = 0
    for split, n in sizes.items():
        chunk = problems[start : start + n]
        start += n
        columns = {
            "id": [f"synthetic-{split}-{i}" for i in range(n)],
            "question": [p.question for p in chunk],
            "gold_solution": [p.gold_solution for p in chunk],
            "gold_answer": [p.gold_answer for p in chunk],
            "source": ["synthetic"] * n,
        }
        # from_dict, not from_list: an empty split must still carry the schema.
        out[split] = Dataset.from_dict(columns, features=RECORD_FEATURES)
    return DatasetDict(out)
