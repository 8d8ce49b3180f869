"""Settings dataclasses checked against their own annotations, so every field (one added tomorrow too) is
refused with one line that names it when a recipe gives it the wrong type or a value out of range.

Values are also brought to their annotated type where YAML leaves them short of it: YAML 1.1 (PyYAML)
reads `1e-5` as text (it wants `1.0e-5`), a whole `2.0` may stand for an int, a list for a tuple.
Without a range of their own, whole numbers must be ≥ 0 (counts, steps, seeds) and numbers finite.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from .errors import OptionError


@dataclass(frozen=True)
class Limit:
    """Where a setting's value may lie: [low, high] (an end excluded when its `_open` is set), or one of `choices`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None

    def check(self, name: str, value: Any) -> None:
        if self.choices is not None:
            if value not in self.choices:
                raise OptionError(f"{name} must be one of {', '.join(map(str, self.choices))}; got {shown(value)}")
            return
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if below or above:
            low = "" if self.low is None else f"{'>' if self.low_open else '≥'} {self.low:g}"
            high = "" if self.high is None else f"{'<' if self.high_open else '≤'} {self.high:g}"
            raise OptionError(
                f"{name} must be {' and '.join(part for part in (low, high) if part)}; got {shown(value)}"
            )


FRACTION = Limit(0.0, 1.0)
POSITIVE = Limit(0.0, low_open=True)
AT_LEAST_ONE = Limit(1)
WHOLE = Limit(0)  # the default range of an int


def check_fields(settings: Any, limits: dict[str, Limit]) -> None:
    """Bring each field of the dataclass instance `settings` to its annotated type and check its range;
    the first field that fails raises OptionError naming it."""
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        value = as_annotated(field.name, getattr(settings, field.name), hints[field.name])
        object.__setattr__(settings, field.name, value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
            raise OptionError(f"{field.name} must be a finite number; got {shown(value)}")
        limit = limits.get(field.name, WHOLE if type(value) is int else None)
        if limit is not None and value is not None:
            limit.check(field.name, value)


def as_annotated(name: str, value: Any, hint: Any) -> Any:
    """`value` as the type `hint` names, or OptionError naming `name`."""
    options = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    if value is None and type(None) in options:
        return None
    kinds = [option for option in options if option is not type(None)]
    if len(kinds) != 1:
        return value  # unions of several kinds: left to the code that reads them
    (kind,) = kinds
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise OptionError(f"{name} must be true or false; got {shown(value)}")
    if kind in (int, float):
        number = _number(value)
        if number is None:
            raise OptionError(f"{name} must be a {'whole ' if kind is int else ''}number; got {shown(value)}")
        if kind is int:
            if not (math.isfinite(number) and float(number).is_integer()):
                raise OptionError(f"{name} must be a whole number; got {shown(value)}")
            return int(number)
        return float(number)
    if kind is str:
        if isinstance(value, str):
            return value
        raise OptionError(f"{name} must be text; got {shown(value)}")
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)):
            raise OptionError(f"{name} must be a list; got {shown(value)}")
        (item, *_) = typing.get_args(kind) or (Any,)
        return tuple(as_annotated(name, element, item) for element in value) if item is not Any else tuple(value)
    return value


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())  # YAML 1.1 leaves 1e-5 as text
        except ValueError:
            return None
    return None


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
