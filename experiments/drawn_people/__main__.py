"""python -m experiments.drawn_people: see runner.py."""

import sys

from portrait.exits import run as run_command

from .runner import PROG, main

if __name__ == "__main__":
    sys.exit(run_command(main, prog=PROG))
