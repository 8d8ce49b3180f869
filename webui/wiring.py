"""Gradio inputs wired to handler parameters by name, so that reordering either cannot mis-wire them."""

from __future__ import annotations

import inspect
from typing import Callable

from gradio.components import Component

# Filled in by Gradio itself, never by a component.
INJECTED = ("request", "progress")


def inputs_for(handler: Callable, components: dict[str, Component]) -> list[Component]:
    """The components for `handler`'s parameters, in its order; every parameter must have one."""
    names = [name for name in inspect.signature(handler).parameters if name not in INJECTED]
    missing = [name for name in names if name not in components]
    unused = sorted(set(components) - set(names))
    if missing or unused:
        raise TypeError(f"{handler.__name__}: no component for {missing}; components for no parameter: {unused}")
    return [components[name] for name in names]
