"""First-error-step verdicts as a model writes them, and the step each names (-1: correct,
None: unreadable). Two parsers read them: a chat teacher's (``parse_first_error_step``) and
the GRM's (``parse_error_step``); these are the replies both read the same way."""

from __future__ import annotations

READ_ALIKE = [
    ("The first error step is [2]", 2),
    ("Let me check.\n**The first error step is [3].**", 3),
    ("I think the first error step is [3].", 3),
    ("The first error step: Step 4", 4),
    ("The first error step is 4", 4),
    ("First error step: [1]\nbecause 3 + 2 is not 6", 1),
    ("the first error step is step 2", 2),
    ("Step [1] is wrong.", 1),
    ("Step [5] is where it goes wrong", 5),
    ("The prediction is correct.", -1),
    ("After checking, the solution is correct and has no errors.", -1),
    ("The prediction is incorrect.", None),
    ("The prediction is incorrect", None),
    ("This is not correct", None),
    ("lorem ipsum", None),
    ("no idea", None),
    ("", None),
]
