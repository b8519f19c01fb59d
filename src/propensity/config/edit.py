"""Editing ``propensity.yaml`` from a program (the console's targeting page) without losing the user's comments.

:func:`edit_spec_text` parses the text with ruamel.yaml's round-trip loader (comments, key order and layout
survive), lets the caller change the data, and validates the result with the same models that load the spec
(:func:`~propensity.config.spec.parse_spec`), so a change that would not load is refused with the key path and
nothing is written.

>>> text = "project: demo  # ours\\nactions:\\n  - template: buy\\n"
>>> new, spec = edit_spec_text(text, lambda d: d.setdefault("targets", []).append(
...     {"name": "buyers", "action": "buy_7d", "threshold": 0.3}))
>>> "# ours" in new, spec.targets[0].rule()
(True, 'score >= 0.3')
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from propensity.config.spec import SPEC_FILENAME, ProjectSpec, parse_spec


def _round_trip() -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 110
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def edit_spec_text(
    text: str, mutate: Callable[[Any], None], *, root: Path | None = None, source: str = SPEC_FILENAME
) -> tuple[str, ProjectSpec]:
    """``text`` changed by ``mutate`` (called with the round-trip mapping; change it in place), and the spec it
    now describes. Raises :class:`~propensity.config.errors.SpecError` when the result does not validate."""
    rt = _round_trip()
    data = rt.load(text) if text.strip() else None
    if data is None:
        from ruamel.yaml.comments import CommentedMap

        data = CommentedMap()
    mutate(data)
    out = io.StringIO()
    rt.dump(data, out)
    new_text = out.getvalue()
    spec = parse_spec(yaml.safe_load(new_text), source=source, root=root)
    return new_text, spec


def plain(value: Any) -> Any:
    """A value for the round-trip document: floats kept short, mappings and lists copied."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
