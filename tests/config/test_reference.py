"""docs/configuration.md is the generated reference of every propensity.yaml key, and stays so; the JSON Schema
accepts the bundled projects and refuses what the spec refuses."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest
import yaml
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.config.reference import iter_keys, json_schema, reference_markdown
from propensity.datasets.examples import EXAMPLES, example_spec_text

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_reference_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/configuration.md is out of date with the spec's models: regenerate it with "
        "`propensity schema --docs docs/configuration.md` and commit the result"
    )


def test_every_key_has_a_type_default_and_example() -> None:
    keys = list(iter_keys())
    assert len(keys) > 150
    paths = {k.path for k in keys}
    for expected in ("clock", "sources[].delay", "training.spine.slide", "alerts.thresholds", "gates.max_psi",
                     "destinations[] (type: webhook).url", "features[] (kind: aggregate).window"):  # fmt: skip
        assert expected in paths or any(p.endswith(expected.split(" ")[-1]) for p in paths), expected
    for k in keys:
        assert k.type and k.default and k.example, k


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_schema_accepts_the_bundled_projects(example: str) -> None:
    validator = jsonschema_rs.validator_for(json_schema())
    data = yaml.safe_load(example_spec_text(example))
    errors = [e.message for e in validator.iter_errors(json.loads(json.dumps(data, default=str)))]
    assert not errors, errors


def test_the_schema_refuses_a_misspelt_key_and_a_bad_clock() -> None:
    validator = jsonschema_rs.validator_for(json_schema())
    assert not validator.is_valid({"clok": "data"})
    assert not validator.is_valid({"clock": "wall"})
    assert validator.is_valid({"clock": "data", "actions": [{"template": "buy"}]})


def test_schema_command_writes_both(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["schema", "--out", str(tmp_path / "s.json"), "--docs", str(tmp_path / "c.md")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s.json").read_text())["title"] == "propensity.yaml"
    assert (tmp_path / "c.md").read_text() == reference_markdown()
    printed = runner.invoke(app, ["schema"])
    assert json.loads(printed.stdout)["$id"].endswith("propensity.schema.json")
