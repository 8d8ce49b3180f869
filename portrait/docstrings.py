"""A function's `Args:` (diffusers' docstring style) as {parameter: description}.

Why: the CLI's help for an option that is a pipeline parameter is the pipeline's own description, so the two
cannot drift apart; the docstring stays the one place that says what a parameter does.
"""

from __future__ import annotations

import inspect
import re
from typing import Callable

_NAMES = re.compile(r"(?:^|\),\s*)\**(\w+)\s*[(:]")


def documented_args(function: Callable) -> dict[str, str]:
    """Each parameter of the `Args:` section with its description on one line; an entry naming several
    parameters ("height (...), width (...):") gives each of them the same description."""
    lines = (inspect.getdoc(function) or "").splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "Args:"), len(lines))
    described: dict[str, str] = {}
    names: list[str] = []
    entry_indent = None
    for line in lines[start:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        entry_indent = indent if entry_indent is None else entry_indent
        if indent < entry_indent:
            break  # the next section (Returns:, Examples:)
        if indent == entry_indent:
            names = _NAMES.findall(line.strip())
            for name in names:
                described[name] = ""
        else:
            for name in names:
                described[name] = f"{described[name]} {line.strip()}".strip()
    return described
