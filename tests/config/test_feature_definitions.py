"""Feature definitions: what loads, what fails (with the exact key path), and the feature set version."""

from __future__ import annotations

from typing import Any

import pytest

from propensity.config.durations import Duration
from propensity.config.errors import SpecError
from propensity.config.features import default_bucket, feature_set_version
from propensity.config.predicates import (
    ExpressionError,
    compile_expression,
    parse_expression,
    parse_predicate,
)
from propensity.config.spec import parse_spec
from propensity.features import parse_features

GOOD: list[dict[str, Any]] = [
    {"name": "purchases_7d", "aggregate": "count", "event_type": "purchase", "window": "7d"},
    {"name": "page_views_7d", "aggregate": "count", "event_type": "page_view", "window": "7d"},
    {"name": "cart_adds_7d", "aggregate": "count", "event_type": "cart_add", "window": "7d"},
    {
        "name": "shoe_spend_90d",
        "aggregate": "sum",
        "field": "amount",
        "event_type": ["purchase", "refund"],
        "where": "category == 'shoes' and amount > 50",
        "window": "90d",
    },
    {"name": "cart_rate_7d", "kind": "derived", "expr": "cart_adds_7d / page_views_7d"},
    {"name": "session_views", "kind": "session", "aggregate": "count", "event_type": "page_view"},
    {"name": "sessions_30d", "kind": "session", "aggregate": "sessions", "window": "30d", "gap": "20m"},
    {"name": "plan", "kind": "attribute", "attribute": "plan", "source": "crm"},
]
SPEC_BASE: dict[str, Any] = {
    "attributes": [{"name": "crm", "path": "crm.csv", "attributes": ["plan", "region"]}]
}


def problems(features: list[dict[str, Any]], **spec: Any) -> list[str]:
    try:
        parse_spec({**SPEC_BASE, **spec, "features": features})
    except SpecError as exc:
        return exc.problems
    return []


def test_a_good_feature_set_loads_in_a_spec() -> None:
    spec = parse_spec({**SPEC_BASE, "features": GOOD})
    kinds = [f.kind for f in spec.features]
    assert kinds == ["aggregate"] * 4 + ["derived", "session", "session", "attribute"]


@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        (
            {"name": "x", "aggregate": "count", "window": "30 days"},
            "features[0].window: '30 days' is not a duration; use forms like 30d, 12h, 90m, 45s, 2w or lifetime",
        ),
        (
            {"name": "x", "aggregate": "median", "window": "7d"},
            "features[0].aggregate: 'median' is not allowed",
        ),
        (
            {"name": "x", "aggregate": "count", "window": "7d", "event_type": "purchse"},
            "features[0].event_type: 'purchse' is not a declared event type",
        ),
        (
            {"name": "x", "aggregate": "sum", "field": "amont", "window": "7d"},
            "features[0].field: 'amont' is not an event property",
        ),
        (
            {"name": "x", "aggregate": "sum", "field": "category", "window": "7d"},
            "features[0].field: aggregate 'sum' needs a numeric field",
        ),
        (
            {"name": "x", "aggregate": "sum", "window": "7d"},
            "features[0].field: aggregate 'sum' needs a field",
        ),
        (
            {"name": "x", "aggregate": "count", "field": "amount", "window": "7d"},
            "features[0].field: aggregate 'count' takes no field",
        ),
        (
            {"name": "x", "aggregate": "count", "where": "colour == 'red'", "window": "7d"},
            "features[0].where: 'colour' is not an event property",
        ),
        (
            {"name": "x", "aggregate": "count", "where": "amount > 'big'", "window": "7d"},
            "features[0].where: amount is a number; compare it with a number",
        ),
        (
            {"name": "x", "aggregate": "count", "where": "category == 5", "window": "7d"},
            "features[0].where: category is text; compare it with a quoted string",
        ),
        (
            {"name": "x", "aggregate": "count", "where": "amount > 5 or amount < 1", "window": "7d"},
            "features[0].where: expected 'and' but found 'or'",
        ),
        (
            {"name": "x", "aggregate": "count", "window": "7d", "bucket": "5d"},
            "features[0].bucket: 5d does not divide the window 7d",
        ),
        (
            {"name": "x", "aggregate": "count", "window": "lifetime", "bucket": "1d"},
            "features[0].bucket: a lifetime window has no buckets",
        ),
        (
            {"name": "X-1", "aggregate": "count", "window": "7d"},
            "features[0].name: 'X-1' is not a valid feature name",
        ),
        ({"name": "as_of", "aggregate": "count", "window": "7d"}, "features[0].name: 'as_of' is reserved"),
        (
            {"name": "x", "kind": "magic"},
            "features[0]: kind must be one of aggregate, session, derived, attribute",
        ),
        (
            {"name": "x", "kind": "session", "aggregate": "sessions"},
            "features[0].window: aggregate 'sessions' needs a finite window",
        ),
        (
            {"name": "x", "kind": "session", "aggregate": "count_before", "event_type": "cart_add"},
            "features[0].before: aggregate 'count_before' needs before",
        ),
        (
            {"name": "x", "kind": "session", "aggregate": "count", "gap": "2h", "lookback": "1h"},
            "features[0].lookback: 1h must be longer than the gap 2h",
        ),
        ({"name": "x", "kind": "derived", "expr": "a / "}, "features[0].expr: 'a / ' ends too early"),
        (
            {"name": "x", "kind": "derived", "expr": "nope * 2"},
            "features[0].expr: 'nope' is not a feature of this set",
        ),
        (
            {"name": "x", "kind": "attribute", "attribute": "plan", "source": "erp"},
            "features[0].source: 'erp' is not a declared attributes source; known: crm",
        ),
        (
            {"name": "x", "kind": "attribute", "attribute": "age", "source": "crm"},
            "features[0].attribute: 'age' is not among the attributes of source 'crm'",
        ),
    ],
)
def test_bad_definitions_fail_at_load_with_the_key_path(feature: dict[str, Any], expected: str) -> None:
    got = problems([feature])
    assert any(p.startswith(expected) for p in got), got


def test_errors_point_at_the_right_index_and_all_are_reported() -> None:
    got = problems(
        [
            *GOOD,
            {"name": "purchases_7d", "aggregate": "count", "window": "1d"},
            {"name": "y", "aggregate": "count", "window": "1 week"},
        ]
    )
    assert (
        got[0]
        == "features[9].window: '1 week' is not a duration; use forms like 30d, 12h, 90m, 45s, 2w or lifetime"
    )
    got = problems([*GOOD, {"name": "purchases_7d", "aggregate": "count", "window": "1d"}])
    assert got == ["features[8].name: 'purchases_7d' is already the name of features[0]"]


def test_a_cycle_among_derived_features_is_named() -> None:
    got = problems(
        [
            {"name": "a", "kind": "derived", "expr": "b + 1"},
            {"name": "b", "kind": "derived", "expr": "c * 2"},
            {"name": "c", "kind": "derived", "expr": "a / 3"},
        ]
    )
    assert got == ["features[2].expr: derived features form a cycle: a -> b -> c -> a"]
    assert problems([{"name": "a", "kind": "derived", "expr": "a + 1"}]) == [
        "features[0].expr: derived features form a cycle: a -> a"
    ]


def test_extra_event_types_are_accepted() -> None:
    feature = {"name": "x", "aggregate": "count", "event_type": "wishlist_add", "window": "7d"}
    assert problems([feature], events={"extra_types": ["wishlist_add"]}) == []


def test_version_is_stable_and_changes_with_any_meaningful_edit() -> None:
    base = feature_set_version(parse_features(GOOD))
    assert base == feature_set_version(parse_features([dict(f) for f in GOOD]))
    assert base.startswith("fs-") and len(base) == 19
    # Cosmetic differences do not change it: descriptions, spelling of the same predicate or bucket.
    cosmetic = [dict(f) for f in GOOD]
    cosmetic[0]["description"] = "how many purchases"
    cosmetic[3] = {
        **cosmetic[3],
        "where": "category=='shoes'   and amount>50.0",
        "bucket": "1d",
        "event_type": ["refund", "purchase"],
    }
    assert feature_set_version(parse_features(cosmetic)) == base
    edits = [
        (0, {"window": "8d"}),
        (0, {"bucket": "exact"}),
        (3, {"where": "category == 'shoes' and amount >= 50"}),
        (4, {"expr": "cart_adds_7d / (page_views_7d + 1)"}),
        (6, {"gap": "30m"}),
    ]
    for index, change in edits:
        changed = [dict(f) for f in GOOD]
        changed[index] = {**changed[index], **change}
        assert feature_set_version(parse_features(changed)) != base, change
    assert feature_set_version(parse_features(list(reversed(GOOD)))) != base


def test_default_buckets_keep_at_least_60_per_window() -> None:
    assert str(default_bucket(Duration.parse("90d"))) == "1d"
    assert str(default_bucket(Duration.parse("7d"))) == "1h"
    assert str(default_bucket(Duration.parse("15m"))) == "1s"
    assert str(default_bucket(Duration.parse("7m"))) == "1s"
    assert default_bucket(Duration.parse("lifetime")) is None


def test_predicates_compile_to_matching_sql_and_python() -> None:
    p = parse_predicate("category in ('a', 'it\\'s') and amount >= -2.5 and properties.device != \"tv\"")
    assert p.text() == "category in ('a', 'it\\'s') and amount >= -2.5 and properties.device != 'tv'"
    sql = p.sql(lambda f: f'"{f}"')
    assert "CAST('-2.5' AS DOUBLE)" in sql and "IN ('a', " in sql
    event = {"category": "a", "amount": -2.5, "properties.device": None}
    assert p.python(lambda f: lambda e: e[f])(event) is False  # a null never matches, even with !=
    event["properties.device"] = "phone"
    assert p.python(lambda f: lambda e: e[f])(event) is True
    with pytest.raises(ExpressionError):
        parse_predicate("amount >")
    with pytest.raises(ExpressionError):
        parse_predicate("__import__('os') == 1")


def test_expressions_are_safe_on_zero_and_null() -> None:
    e = parse_expression("(a - b) / (c * 2) + -d")
    assert e.refs() == {"a", "b", "c", "d"}
    env = {"a": 5, "b": 1, "c": 1, "d": 0.5}
    assert e.evaluate(env.__getitem__) == 1.5
    assert e.evaluate({**env, "c": 0}.__getitem__) is None
    assert e.evaluate({**env, "b": None}.__getitem__) is None
    compiled = compile_expression(e, "abcd".index)
    for vec in ([5, 1, 1, 0.5], [5, 1, 0, 0.5], [5, None, 1, 0.5], [-3.5, 2, 7, -1]):
        assert compiled(vec) == e.evaluate(dict(zip("abcd", vec, strict=True)).__getitem__)
    with pytest.raises(ExpressionError):
        parse_expression("a ** 2")
