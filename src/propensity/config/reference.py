"""The reference of every ``propensity.yaml`` key, and a JSON Schema for editors, both from the spec's models.

:func:`reference_markdown` walks :class:`~propensity.config.spec.ProjectSpec` and every section model under it
(lists, maps and tagged unions included) and writes one table per section: each key's type, default, an
example and what it means (the field's ``description``, else the comment written above the field in its
class). Examples come from the bundled projects (``propensity init --example ...``) where they set the key, else
from the type. ``docs/configuration.md`` is this text; a test fails when it is out of date, so whoever adds a key
regenerates it with ``propensity schema --docs docs/configuration.md``.

:func:`json_schema` is ``ProjectSpec``'s JSON Schema, adjusted where validation is more forgiving than the
generated schema (an action written from a ``template:`` needs no other key).
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from importlib import resources
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from propensity.config.calendar import Slide
from propensity.config.durations import Duration

_DURATION_TYPES = (Duration, Slide)
SCHEMA_URL = "https://propensity.dev/schema/propensity.schema.json"
_EXAMPLE_FILES = ("projects/synthetic.yaml", "projects/completejourney.yaml")
_TYPE_EXAMPLES = {
    "duration": "7d",
    "integer": "10",
    "number": "0.5",
    "boolean": "true",
    "time": "2026-03-02T00:00:00Z",
}


@dataclass(frozen=True)
class Key:
    """One documented key: its path, type, default, example and meaning."""

    path: str
    type: str
    default: str
    example: str
    meaning: str


@dataclass(frozen=True)
class Section:
    path: str
    title: str
    doc: str
    keys: list[Key]


# ------------------------------------------------------------------------------------------------ types
def _strip(annotation: Any) -> Any:
    """Drop ``Annotated`` wrappers; a duration-like type (a duration, a calendar slide) reads as Duration."""
    while get_origin(annotation) is Annotated:
        args = get_args(annotation)
        if args[0] in _DURATION_TYPES:
            return Duration
        annotation = args[0]
    return Duration if annotation in _DURATION_TYPES else annotation


def _union_args(annotation: Any) -> tuple[Any, ...] | None:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return None


def _tag_of(model: type[BaseModel]) -> tuple[str, str] | None:
    """The discriminating key and value of a tagged-union variant (``type: file``, ``kind: aggregate``)."""
    for key in ("type", "kind"):
        info = model.model_fields.get(key)
        if info is not None and get_origin(_strip(info.annotation)) is Literal:
            values = get_args(_strip(info.annotation))
            if len(values) == 1:
                return key, str(values[0])
    return None


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The section models an annotation holds (itself, a list's item, a map's value, a union's variants)."""
    a = _strip(annotation)
    union = _union_args(a)
    if union is not None:
        return [m for arg in union for m in _models(arg)]
    origin = get_origin(a)
    if origin in (list, tuple, set):
        return [m for arg in get_args(a) for m in _models(arg)]
    if origin is dict:
        return _models(get_args(a)[1])
    if isinstance(a, type) and issubclass(a, BaseModel):
        return [a]
    return []


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: ``duration``, ``list of text``, ``one of: live, data``, a section."""
    a = _strip(annotation)
    if a is Duration:
        return "duration"
    union = _union_args(a)
    if union is not None:
        parts = [type_name(x) for x in union if x is not type(None)]
        name = " or ".join(dict.fromkeys(parts))
        return f"{name} (optional)" if type(None) in union else name
    origin = get_origin(a)
    if origin is Literal:
        return "one of: " + ", ".join(str(v) for v in get_args(a))
    if origin in (list, tuple, set):
        (item, *_) = get_args(a) or (Any,)
        return f"list of {type_name(item)}"
    if origin is dict:
        key, value = get_args(a)
        return f"map of {type_name(key)} → {type_name(value)}"
    if isinstance(a, type):
        if issubclass(a, BaseModel):
            tag = _tag_of(a)
            return f"section ({tag[0]}: {tag[1]})" if tag else "section"
        if issubclass(a, bool):
            return "boolean"
        if issubclass(a, int):
            return "integer"
        if issubclass(a, float):
            return "number"
        if issubclass(a, str):
            return "text"
        if issubclass(a, datetime):
            return "time"
        if issubclass(a, Enum):
            return "one of: " + ", ".join(str(m.value) for m in a)
    if a is Any:
        return "any"
    return str(getattr(a, "__name__", a))


# ------------------------------------------------------------------------------------------------ values
def _yaml_inline(value: Any) -> str:
    if isinstance(value, _DURATION_TYPES):
        return str(value)
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, str):
        return value if value and re.match(r"^[\w./*@:+-]+$", value) else json.dumps(value)
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()


def _plain(value: Any) -> Any:
    if isinstance(value, _DURATION_TYPES):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # a spec type of its own (written as text in propensity.yaml)


def _default(info: FieldInfo) -> tuple[str, Any]:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        return "required", PydanticUndefined
    if value is None:
        return "none", None
    if isinstance(value, BaseModel):
        return "(section defaults)", value
    if isinstance(value, list | dict) and not value:
        return "empty", value
    return _yaml_inline(value), value


def _bundled_examples() -> dict[str, Any]:
    """Every key path the bundled projects set → the first value they give it (list indexes as ``[]``)."""
    found: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                p = f"{path}.{k}" if path else str(k)
                found.setdefault(p, v)
                walk(v, p)
        elif isinstance(node, list):
            for item in node:
                walk(item, f"{path}[]")

    for name in _EXAMPLE_FILES:
        text = resources.files("propensity.datasets").joinpath(name).read_text(encoding="utf-8")
        walk(yaml.safe_load(text), "")
    return found


def _is_plain(value: Any) -> bool:
    """A value worth quoting inline as an example: a scalar, or a non-empty list of scalars."""
    if isinstance(value, list):
        return bool(value) and not isinstance(value[0], dict | list)
    return not isinstance(value, dict)


def _example(path: str, annotation: Any, default: Any, info: FieldInfo, bundled: dict[str, Any]) -> str:
    """An example value: the bundled projects' own, a declared example, the default, else one by type."""
    if path in bundled and _is_plain(bundled[path]):
        return _yaml_inline(bundled[path])
    extra: Any = info.examples
    if not extra and isinstance(info.json_schema_extra, dict):
        extra = info.json_schema_extra.get("examples")
    if isinstance(extra, list) and extra:
        return _yaml_inline(extra[0])
    name = type_name(annotation)
    if _models(annotation):
        return "(see below)"
    if default is not PydanticUndefined and default not in (None, [], {}):
        return _yaml_inline(default)
    a = _strip(annotation)
    union = _union_args(a)
    if union is not None:
        a = next(x for x in union if x is not type(None))
        name = type_name(a)
    if get_origin(a) is Literal:
        return str(get_args(a)[0])
    for kind, sample in _TYPE_EXAMPLES.items():
        if name.startswith(kind):
            return sample
    if name.startswith("list of "):
        inner = name.removeprefix("list of ")
        return f"[{_TYPE_EXAMPLES.get(inner, 'x')}]"
    if name.startswith("map of"):
        return "{key: value}"
    return "…"


# ------------------------------------------------------------------------------------------------ meaning
def _comments_above(model: type[BaseModel]) -> dict[str, str]:
    """Per field, the ``#`` comment lines written just above it in its class body (for fields without a
    ``description``)."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#"):
                pending.append(stripped.lstrip("#").strip())
                continue
            m = re.match(r"^\s{4}(\w+)\s*:", line)
            if m and pending:
                out[m.group(1)] = " ".join(pending)
            pending = [] if not stripped.startswith("#") else pending
    return out


def _doc(model: type[BaseModel]) -> str:
    """The first paragraph of the model's own docstring (not one inherited from pydantic's BaseModel)."""
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def _clean(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# ------------------------------------------------------------------------------------------------ walk
def sections() -> list[Section]:
    """Every section of the spec, depth first, each with its keys."""
    from propensity.config.spec import ProjectSpec

    bundled = _bundled_examples()
    out: list[Section] = []
    seen: set[str] = set()

    def visit(model: type[BaseModel], path: str, title: str) -> None:
        if path in seen:
            return
        seen.add(path)
        comments = _comments_above(model)
        keys: list[Key] = []
        children: list[tuple[type[BaseModel], str, str]] = []
        for name, info in model.model_fields.items():
            if info.exclude:
                continue
            key = info.alias or name
            full = f"{path}.{key}" if path else key
            annotation = info.annotation
            default_text, default = _default(info)
            models = _models(annotation)
            meaning = info.description or comments.get(name, "")
            if not meaning and models and len(models) == 1:  # a section: its own docstring says what it is
                meaning = _doc(models[0])
            if not meaning and name in ("kind", "type") and _tag_of(model):
                tag = _tag_of(model)
                assert tag is not None
                meaning = f"Selects this kind of entry: `{tag[0]}: {tag[1]}`."
            a = _strip(annotation)
            origin = get_origin(a)
            inner = _strip(get_args(a)[0]) if _union_args(a) and len(get_args(a)) == 2 else a
            is_list = origin in (list, tuple) or get_origin(inner) in (list, tuple)
            is_map = origin is dict or get_origin(inner) is dict
            suffix = "[]" if is_list else (".<name>" if is_map else "")
            kind = type_name(annotation)
            if models:
                tag = _tag_of(models[0]) if len(models) > 1 else None
                what = f"sections told apart by `{tag[0]}`" if tag else "section"
                kind = f"list of {what}" if is_list else (f"map of name → {what}" if is_map else what)
                if _union_args(a) and type(None) in get_args(a):
                    kind += " (optional)"
            keys.append(
                Key(full, kind, default_text, _example(full, annotation, default, info, bundled), meaning)
            )
            for m in models:
                tag = _tag_of(m) if len(models) > 1 else None
                child = f"{full}{suffix}" + (f" ({tag[0]}: {tag[1]})" if tag else "")
                children.append((m, child, child))
        out.append(Section(path, title, _doc(model), keys))
        for m, child, child_title in children:
            visit(m, child, child_title)

    visit(ProjectSpec, "", "top level")
    return out


def reference_markdown() -> str:
    """docs/configuration.md: every key of propensity.yaml, generated."""
    parts = [
        "# propensity.yaml: every key",
        "",
        "<!-- Generated from the spec's models by `propensity schema --docs docs/configuration.md`; do not edit "
        "by hand. -->",
        "",
        "This page is generated from the project spec's models (`src/propensity/config/`); "
        "`tests/config/test_reference.py` fails when it is out of date, so whoever adds or changes a key "
        "regenerates it with `propensity schema --docs docs/configuration.md`. The meaning of each key is its "
        "`description` in the model (or the comment above it); examples come from the bundled example projects "
        "(`propensity init --example synthetic|completejourney`) where they set the key.",
        "",
        "For editors: `propensity schema --out propensity.schema.json` writes a JSON Schema; with the YAML "
        "language server, put `# yaml-language-server: $schema=propensity.schema.json` at the top of "
        "propensity.yaml for completion and checks as you type. Durations are written `30d`, `12h`, `90m`, "
        "`45s`, `2w` (windows may also be `lifetime`); times are ISO 8601 and UTC unless they carry an offset.",
        "",
    ]
    found = sections()
    parts += ["## Sections", ""]
    for s in found:
        anchor = _anchor(s.title)
        parts.append(f"- [`{s.title}`](#{anchor})" if s.path else f"- [top level](#{anchor})")
    parts.append("")
    for s in found:
        parts += [f"## {('`' + s.title + '`') if s.path else 'top level'}", ""]
        if s.doc:
            parts += [s.doc, ""]
        parts += ["| key | type | default | example | meaning |", "|---|---|---|---|---|"]
        for k in s.keys:
            parts.append(
                f"| `{k.path}` | {_clean(k.type)} | {_cell(k.default)} | {_cell(k.example)} | {_clean(k.meaning)} |"
            )
        parts.append("")
    return "\n".join(parts)


def _cell(text: str) -> str:
    if text in ("required", "none", "empty", "(section defaults)", "(see below)", "…"):
        return text
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _anchor(title: str) -> str:
    """GitHub's heading anchor for a section title (code spans keep their text)."""
    text = ("top level" if title == "top level" else title).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


# ------------------------------------------------------------------------------------------------ schema
def json_schema() -> dict[str, Any]:
    """``propensity.yaml``'s JSON Schema (draft 2020-12), for editors."""
    from propensity.config.spec import ProjectSpec

    schema = ProjectSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_URL
    schema["title"] = "propensity.yaml"
    defs = schema.get("$defs", {})
    # A templated action (`template: buy`) gets its target, horizon and name from the template.
    if "Action" in defs:
        defs["Action"].pop("required", None)
        # `horizon: until <field>` with `max_horizon: <cap>` is the written form of horizon_until (config.actions).
        props = defs["Action"].get("properties", {})
        if "horizon" in props:
            duration = {k: v for k, v in props["horizon"].items() if k in ("type", "pattern")}
            meta = {k: v for k, v in props["horizon"].items() if k not in ("type", "pattern")}
            until = {"type": "string", "pattern": r"^\s*until\s+\S+\s*$"}
            props["horizon"] = {"anyOf": [duration, until], **meta}
            props["max_horizon"] = {
                **duration,
                "title": "Max Horizon",
                "description": "The cap (the longest window) of `horizon: until <field>`.",
            }
    # Fields that take one value or a list (`event_type: purchase`) are coerced before validation.
    for model in _all_models(ProjectSpec):
        entry = defs.get(model.__name__)
        if entry is None:
            continue
        for field_name in _coerced_fields(model):
            info = model.model_fields[field_name]
            key = info.alias or field_name
            prop = entry.get("properties", {}).get(key)
            if prop is None:
                continue
            meta = {k: prop.pop(k) for k in ("title", "description", "default") if k in prop}
            entry["properties"][key] = {"anyOf": [{"type": "string"}, prop], **meta}
    return schema


def _all_models(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {}

    def visit(model: type[BaseModel]) -> None:
        if model.__name__ in seen:
            return
        seen[model.__name__] = model
        for info in model.model_fields.values():
            for m in _models(info.annotation):
                visit(m)

    visit(root)
    return list(seen.values())


def _coerced_fields(model: type[BaseModel]) -> set[str]:
    """Fields with a ``mode="before"`` field validator (here: one value accepted for a list)."""
    out: set[str] = set()
    for dec in model.__pydantic_decorators__.field_validators.values():
        if dec.info.mode == "before":
            out |= set(dec.info.fields)
    return out


def iter_keys() -> Iterator[Key]:
    for s in sections():
        yield from s.keys


__all__ = ["Key", "Section", "iter_keys", "json_schema", "reference_markdown", "sections", "type_name"]
