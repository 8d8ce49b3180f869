"""API callers may send anything; the handlers see what the UI would send, so every caller hears the UI's sentences.

The rules follow each handler parameter's annotation: text that is missing (null) is the empty text an
untouched box sends, so a null custom word hears "Type the custom identity word" as in the browser; a
number that is not a number is NaN, which every range check refuses with the sentence the UI shows for a
value out of range; a missing switch is its default. A value of another type altogether is refused
with one sentence naming the field.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from typing import Any, Callable

import gradio as gr

from .wiring import INJECTED

NOT_A_NUMBER = math.nan


def as_the_ui_sends(handler: Callable) -> Callable:
    """Call `handler` with each argument made into the type its annotation names (see the module's rules)."""
    signature = inspect.signature(handler)
    hints = typing.get_type_hints(handler)

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            if name != "self" and name not in INJECTED and name in hints:
                bound.arguments[name] = as_expected(name, value, hints[name], signature.parameters[name].default)
        return handler(*bound.args, **bound.kwargs)

    return wrapped


def as_expected(name: str, value: Any, hint: Any, default: Any) -> Any:
    """`value` as the UI would have sent it for a parameter annotated `hint`."""
    allowed = (
        set(typing.get_args(hint))
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else {hint}
    )
    if allowed - {bool, int, float, str, type(None)}:
        return value  # uploads: checked by their own reader
    if value is None and type(None) in allowed:
        return None
    if bool in allowed:
        if isinstance(value, bool):
            return value
        if value is None and isinstance(default, bool):
            return default
        raise gr.Error(f"{label(name)} must be true or false.")
    if allowed & {int, float}:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        return NOT_A_NUMBER  # refused by the range check with the UI's own sentence
    if str in allowed:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        raise gr.Error(f"{label(name)} must be text.")
    return value


def label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Slider(gr.Slider):
    """gr.Slider that passes what is not a number on as NaN, for the handler's range check to refuse in the
    UI's words (Gradio's own check would fail with a TypeError listing the event's components)."""

    is_template = True  # same browser component as gr.Slider

    def preprocess(self, payload: Any) -> float:
        return super().preprocess(payload) if is_number(payload) else NOT_A_NUMBER


class Number(gr.Number):
    """gr.Number with the same rule as `Slider`."""

    is_template = True  # same browser component as gr.Number

    def preprocess(self, payload: Any) -> float:
        return super().preprocess(payload) if is_number(payload) else NOT_A_NUMBER
