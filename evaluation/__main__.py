"""python -m evaluation generate|score: the paper's evaluation (evaluation/harness.py)."""

import sys

from portrait.exits import run

from .harness import PROG, main

sys.exit(run(main, prog=PROG))
