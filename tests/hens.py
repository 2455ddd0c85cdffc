"""One synthetic farm problem (rlmec_core.data.synthetic's template, written out so tests
do not depend on the generator's random stream), its gold solution, and a "lucky" wrong
solution: 10 misread as 1 and a made-up number, every equation holds, gold answer."""

HENS_Q = (
    "Anna has 6 hens and each hen lays 10 eggs this week. She uses 10 eggs for breakfast. "
    "She finds 4 more eggs in the barn. How many eggs does Anna have now?"
)
HENS_GOLD = (
    "6 hens lay 10 eggs each, so there are 6 * 10 = 60 eggs.\n"
    "She uses 10, so she has 60 - 10 = 50 eggs.\n"
    "She finds 4 more, so she has 50 + 4 = 54 eggs.\n"
    "The answer is 54"
)
HENS_LUCKY = (
    "6 hens lay 10 eggs each, so there are 6 * 10 = 60 eggs.\n"
    "She uses 1, so she has 60 - 1 = 59 eggs.\n"
    "She finds 4 more and loses 9, so she has 59 + 4 - 9 = 54 eggs.\n"
    "The answer is 54"
)
QA_Q = "Predators eat\nOptions:\nlions\nhumans\nbunnies\ngrass"
