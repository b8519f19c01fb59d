"""The project spec: every mistake is reported with its exact key path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from propensity.config.durations import Duration
from propensity.config.errors import SpecError
from propensity.config.spec import load_spec, parse_spec
from propensity.datasets.examples import EXAMPLES, example_spec_text


def problems(data: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.problems


def test_bad_window_names_the_key_path_and_the_allowed_forms() -> None:
    features = [{"name": f"f{i}", "aggregate": "count", "window": "7d"} for i in range(3)]
    features.append({"name": "f3", "aggregate": "count", "window": "30 days"})
    (problem,) = problems({"features": features})
    assert problem.startswith("features[3].window: '30 days' is not a duration")
    assert "30d, 12h, 90m" in problem


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "sources": [
                {"name": "web", "path": "x.csv", "timezone": "Mars/Olympus", "columns": {"user": "u"}}
            ],
            "bogus_section": 1,
        }
    )
    assert any(p.startswith("sources[0].timezone: 'Mars/Olympus' is not a time zone") for p in found)
    assert any(p.startswith("sources[0].columns: 'user' is not an event field") for p in found)
    assert any(p.startswith("bogus_section: is not a known key") for p in found)


def test_missing_required_key() -> None:
    assert problems({"sources": [{"path": "x.csv"}]}) == ["sources[0].name: is required but missing"]


def test_wrong_literal_lists_allowed_values() -> None:
    (problem,) = problems({"sources": [{"name": "web", "path": "x", "format": "xlsx"}]})
    assert problem.startswith("sources[0].format: 'xlsx' is not allowed")
    assert "'csv'" in problem and "'parquet'" in problem


def test_constant_event_type_must_be_declared() -> None:
    (problem,) = problems({"sources": [{"name": "orders", "path": "o.csv", "event_type": "order"}]})
    assert "sources[0].event_type: 'order' is not a declared event type" in problem
    spec = parse_spec(
        {
            "events": {"extra_types": ["order"]},
            "sources": [{"name": "orders", "path": "o", "event_type": "order"}],
        }
    )
    assert "order" in spec.events.allowed_types and "purchase" in spec.events.allowed_types


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    (tmp_path / "propensity.yaml").write_text("project: x\nsources: [\n  - name\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert "YAML syntax" in info.value.problems[0] and "line" in info.value.problems[0]


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="propensity init"):
        load_spec(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize("example", EXAMPLES)
def test_bundled_examples_load(example: str, tmp_path: Path) -> None:
    (tmp_path / "propensity.yaml").write_text(example_spec_text(example), encoding="utf-8")
    spec = load_spec(tmp_path)
    assert spec.root == tmp_path.resolve()


@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("45s", 45)]
)
def test_durations(text: str, seconds: int) -> None:
    assert Duration.parse(text).seconds == seconds


@pytest.mark.parametrize("text", ["30 days", "7", "d", "-1d", "1y", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        Duration.parse(text)
