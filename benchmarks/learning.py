"""Alias kept for old commands: `python -m benchmarks.learning` runs experiments/drawn_people (its runner.py)."""

import sys

from experiments.drawn_people.runner import PROG, main
from portrait.exits import run as run_command

if __name__ == "__main__":
    sys.exit(run_command(main, prog=PROG))
