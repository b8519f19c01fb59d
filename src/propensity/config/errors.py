"""Errors a user can hit in their project spec, phrased with the exact key path and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from propensity.core.errors import PropensityError


class SpecError(PropensityError):
    """The project spec is wrong. ``problems`` lists ``key.path: message`` lines, one per mistake."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} problem(s):\n{lines}")


def key_path(loc: Sequence[int | str]) -> str:
    """``('features', 3, 'window')`` → ``features[3].window``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(error: Any) -> str:
    kind = error["type"]
    msg: str = error["msg"]
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return "is not a known key (check its spelling, or see `propensity init` for a commented example)"
    if kind == "missing":
        return "is required but missing"
    if kind == "literal_error":
        return f"{error.get('input')!r} is not allowed; {msg[0].lower() + msg[1:]}"
    given = error.get("input")
    if given is not None and not isinstance(given, dict | list):
        return f"{given!r}: {msg[0].lower() + msg[1:]}"
    return msg[0].lower() + msg[1:]


def _visible_loc(loc: Sequence[int | str]) -> list[int | str]:
    # Pydantic adds union and function names to the location ('function-after[...]', 'str', a tag name);
    # a user only knows the keys they wrote, so keep ints and identifiers that look like keys.
    return [p for p in loc if isinstance(p, int) or ("[" not in p and "-" not in p)]


def from_validation_error(source: str, exc: ValidationError) -> SpecError:
    problems = []
    for error in exc.errors():
        problems.append(f"{key_path(_visible_loc(error['loc']))}: {_describe(error)}")
    return SpecError(source, problems)
