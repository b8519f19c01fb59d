"""The score row's data contract: the shipped file, row validation, and the compatibility check CI relies on."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from propensity.config.actions import Action, describe_action
from propensity.core.contract import (
    TYPES,
    ContractError,
    check_compatibility,
    load_contract,
    parse_contract,
    validate_rows,
)
from propensity.core.score_row import SCORE_ROW_SCHEMA

RELEASED = Path(__file__).resolve().parents[2] / "contracts" / "released"
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _contract() -> dict[str, Any]:
    return copy.deepcopy(dict(load_contract().raw))


def _released() -> list[Path]:
    return sorted(RELEASED.glob("score_row-*.json"))


# ------------------------------------------------------------------------------------------ compatibility
def test_the_current_contract_is_compatible_with_every_released_version() -> None:
    """CI's gate: a breaking change to the shipped contract without a major version bump fails here."""
    assert _released(), f"no released contract in {RELEASED}"
    current = load_contract()
    for path in _released():
        released = json.loads(path.read_text(encoding="utf-8"))
        assert path.name == f"score_row-{released['version']}.json"
        assert check_compatibility(released, current) == [], path.name


def test_as_of_and_trigger_id_came_with_a_major_bump() -> None:
    """2.0.0 added as_of (never null: every row says the time it describes) and trigger_id (nullable); a field
    that older writers cannot fill needs a major version, which the checker agrees with."""
    v1 = json.loads((RELEASED / "score_row-1.0.0.json").read_text(encoding="utf-8"))
    v2 = json.loads((RELEASED / "score_row-2.0.0.json").read_text(encoding="utf-8"))
    assert set(v2["fields"]) - set(v1["fields"]) == {"as_of", "trigger_id"}
    assert check_compatibility(v1, v2) == []
    v2_minor = {**v2, "version": "1.1.0"}
    assert check_compatibility(v1, v2_minor) == [
        "as_of: new field that is never null (older writers cannot fill it); make it nullable (a breaking change; "
        "needs version 2.0.0, not 1.1.0)"
    ]


def test_the_current_version_is_released() -> None:
    current = load_contract()
    assert (RELEASED / f"score_row-{current.version}.json").exists(), (
        f"contract {current.version} is not in {RELEASED}; copy the shipped file there when releasing"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["fields"].pop("segment"), "segment: removed"),
        (lambda c: c["fields"].__setitem__("tier", c["fields"].pop("segment")), "segment: removed (renamed to tier?)"),
        (lambda c: c["fields"]["score"].__setitem__("type", "string"), "score: type changed from float64 to string"),
        (lambda c: c["fields"].__setitem__("region", {"type": "string", "nulls": "never", "meaning": "m"}),
         "region: new field that is never null"),
        (lambda c: c["fields"]["holdout_group"].__setitem__("allowed", ["treatment"]),
         "holdout_group: allowed values removed: ['control']"),
        (lambda c: c["fields"]["score"].__setitem__("maximum", 0.5), "score: maximum narrowed from 1.0 to 0.5"),
        (lambda c: c["fields"]["model_id"].__setitem__("nulls", "allowed"), "model_id: nulls loosened"),
    ],
)  # fmt: skip
def test_a_breaking_change_without_a_major_bump_fails(change: Any, expected: str) -> None:
    old = _contract()
    new = _contract()
    change(new)
    major = int(old["version"].split(".")[0])
    new["version"] = f"{major}.1.0"
    problems = check_compatibility(old, new)
    assert (
        problems
        and expected in problems[0]
        and f"needs version {major + 1}.0.0, not {major}.1.0" in problems[0]
    )
    new["version"] = f"{major + 1}.0.0"
    assert check_compatibility(old, new) == []


def test_additive_changes_pass_with_a_minor_bump_but_not_without_one() -> None:
    old = _contract()
    new = _contract()
    new["fields"]["channel_flags"] = {"type": "string", "format": "json", "nulls": "allowed", "meaning": "m"}
    new["fields"]["holdout_group"]["allowed"] = ["treatment", "control", "exposed"]
    new["fields"]["percentile"]["nulls"] = "never"  # stricter: nobody reading it breaks
    major = int(old["version"].split(".")[0])
    assert check_compatibility(old, new) == [
        f"version: the contract changed but kept version {major}.0.0; release it as {major}.1.0 or later"
    ]
    new["version"] = f"{major}.1.0"
    assert check_compatibility(old, new) == []


def test_a_version_may_not_go_backwards() -> None:
    new = _contract()
    new["version"] = "0.9.0"
    assert check_compatibility(_contract(), new) == [
        f"version: 0.9.0 is older than the released {load_contract().version}"
    ]


# --------------------------------------------------------------------------------------------- the file
def test_the_contract_describes_exactly_the_physical_row() -> None:
    contract = load_contract()
    assert list(contract.fields) == list(SCORE_ROW_SCHEMA.names)
    for f in SCORE_ROW_SCHEMA:
        rule = contract.fields[f.name]
        assert TYPES[rule["type"]] == f.type, f.name
        assert (rule["nulls"] == "never") == (not f.nullable), f.name
        assert rule["meaning"]


def test_a_malformed_contract_is_refused_with_the_field_named() -> None:
    bad = _contract()
    bad["fields"]["score"]["type"] = "decimal"
    with pytest.raises(ContractError, match=r"fields\.score\.type: 'decimal'"):
        parse_contract(bad)
    bad = _contract()
    bad["version"] = "v1"
    with pytest.raises(ContractError, match="not a semantic version"):
        parse_contract(bad)


# ------------------------------------------------------------------------------------------- validation
def _rows(n: int = 4, **columns: list[Any]) -> pa.Table:
    base: dict[str, list[Any]] = {
        "customer_id": [f"c{i}" for i in range(n)],
        "action": ["buy_7d"] * n,
        "score": [0.1 * (i + 1) for i in range(n)],
        "percentile": [10.0 * i for i in range(n)],
        "segment": ["low"] * n,
        "eligible": [True] * n,
        "next_best_action": ["buy_7d"] * n,
        "reason_codes": ["[]"] * n,
        "holdout_group": ["treatment"] * n,
        "model_id": ["m-1/buy_7d"] * n,
        "model_version": ["m-1"] * n,
        "feature_set_version": ["fs-1"] * n,
        "scoring_run_id": ["r-1"] * n,
        "scored_at": [T0] * n,
        "expiration_at": [T0 + timedelta(days=1)] * n,
        "decision_policy": ["ev_max"] * n,
        "consent": ['{"email": true}'] * n,
        "fallback": [False] * n,
        "as_of": [T0] * n,
        "trigger_id": [None] * n,
    }
    base.update(columns)
    return pa.Table.from_pydict(base, schema=SCORE_ROW_SCHEMA)


def test_valid_rows_pass() -> None:
    assert validate_rows(_rows()) == []
    assert validate_rows(_rows(0)) == []


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"score": [0.1, 1.5, 0.2, 0.3]}, "score: 1 value(s) outside [0.0, 1.0] (e.g. c1/buy_7d)"),
        ({"eligible": [False, True, True, True]}, "score: 1 row(s) with eligible = false carry a value"),
        ({"segment": [None, "low", "low", "low"]}, "segment: 1 eligible row(s) are null"),
        ({"holdout_group": ["treatment", "exposed", None, None]}, "holdout_group: 1 value(s) not allowed (['exposed'])"),
        ({"decision_policy": ["ev_max", "because", "ev_max", "ev_max"]}, "decision_policy: 1 value(s) do not match"),
        ({"reason_codes": ["[]", "feature=pv_7d", "[]", "[]"]}, "reason_codes: 1 value(s) are not JSON"),
        ({"consent": ['{"email": tru}'] * 4}, "consent: value '{\"email\": tru}' is not valid JSON"),
        ({"expiration_at": [T0] * 4}, "expiration_at: 4 row(s) expire at or before scored_at"),
        ({"percentile": [0.0, 101.0, 2.0, 3.0]}, "percentile: 1 value(s) outside [0.0, 100.0]"),
    ],
)  # fmt: skip
def test_each_rule_is_checked(columns: dict[str, list[Any]], expected: str) -> None:
    problems = validate_rows(_rows(**columns))
    assert any(p.startswith(expected) for p in problems), problems


def test_missing_extra_and_mistyped_columns_are_named() -> None:
    rows = _rows().drop_columns(["consent"]).append_column("extra", pa.array([1, 2, 3, 4]))
    rows = rows.set_column(rows.column_names.index("score"), "score", pa.array(["0.1"] * 4))
    problems = validate_rows(rows)
    assert "missing column(s): consent" in problems
    assert f"column(s) not in contract {load_contract().version}: extra" in problems
    assert any(p.startswith("score: type string, the contract says float64") for p in problems)


def test_nulls_in_required_fields_are_named() -> None:
    rows = _rows()
    schema = pa.schema([f.with_nullable(True) for f in SCORE_ROW_SCHEMA])
    loose = pa.Table.from_pydict({**rows.to_pydict(), "model_id": [None, "m", "m", "m"]}, schema=schema)
    assert "model_id: 1 null value(s); it is never null (e.g. c0/buy_7d)" in validate_rows(loose)


# ---------------------------------------------------------------------------------------------- meaning
@pytest.mark.parametrize(
    ("definition", "meaning"),
    [
        ({"template": "buy"}, "probability of at least one purchase within 7 days of scored_at"),
        ({"template": "upgrade"}, "probability of at least one plan_upgrade within 30 days of scored_at"),
        ({"name": "big_buy_12h", "target": {"event_type": "purchase", "where": "amount > 100"}, "horizon": "12h"},
         "probability of at least one purchase where amount > 100 within 12 hours of scored_at"),
        ({"template": "respond"}, "probability of at least one purchase or coupon_redemption for the same campaign "
         "within 7 days of the campaign_sent that made the customer eligible"),
        ({"name": "lapse", "target": {"event_type": ["purchase"]}, "outcome": "absent", "horizon": "30d", "gap": "1d"},
         "probability of no purchase event between 1 day and 31 days after scored_at"),
    ],
)  # fmt: skip
def test_meanings_are_rendered_from_the_action(definition: dict[str, Any], meaning: str) -> None:
    assert describe_action(Action.model_validate(definition)) == meaning


def test_a_backdated_run_means_as_of() -> None:
    buy = Action.model_validate({"template": "buy"})
    assert describe_action(buy, same_time=False).endswith("within 7 days of as_of")
