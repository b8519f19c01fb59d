"""Named targets: which rows a target selects, and saving one into propensity.yaml (kept comments, validated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propensity.activation.targets import TargetError, save_target, select_target, top_share_cut
from propensity.config.decisions import TargetSettings
from propensity.config.errors import SpecError
from propensity.core.masking import mask
from propensity.experiments.targeting import profit, targeting_curve
from propensity.workspace import Workspace

SPEC = """# my project: keep this comment
project: t
actions:
  - template: buy   # buy_7d
  - template: churn
policies:
  actions:
    buy_7d: {value: 10.0, cost: 1.0, channel: email}
  consent: {email: consent_email}
destinations:
  - {name: drop, type: file, format: csv}   # every row
  - {name: crm, type: file, format: parquet}
"""


def _rows() -> pa.Table:
    return pa.table({
        "customer_id": ["a", "b", "c", "d", "e", "f"],
        "action": ["buy_7d"] * 5 + ["churn_30d"],
        "score": [0.9, 0.5, 0.5, 0.2, None, 0.99],
        "eligible": [True, True, True, True, False, True],
        "holdout_group": ["treatment", "treatment", "control", "treatment", "treatment", "treatment"],
    })  # fmt: skip


def test_select_target_keeps_the_action_eligible_and_treated_rows_above_the_cut() -> None:
    t = TargetSettings(name="t", action="buy_7d", threshold=0.5)
    assert select_target(_rows(), t).column("customer_id").to_pylist() == [
        "a",
        "b",
    ]  # c is control, e ineligible
    top = TargetSettings(name="t", action="buy_7d", top_share=0.34)  # ceil(0.34 * 3) = 2 of a, b, d
    assert select_target(_rows(), top).column("customer_id").to_pylist() == ["a", "b"]
    assert top_share_cut(np.array([0.3, 0.3, 0.3, 0.1]), 0.25) == 0.3  # ties at the cut are all in
    with pytest.raises(ValueError, match="exactly one of threshold"):
        TargetSettings(name="t", action="buy_7d", threshold=0.5, top_share=0.1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60), st.floats(0, 2), st.floats(0, 50))
def test_curve_and_profit_match_brute_force(scores: list[float], cost: float, value: float) -> None:
    s = np.array(scores)
    curve = targeting_curve(s)
    for t, n, e in zip(curve["threshold"], curve["reached"], curve["expected"], strict=True):
        assert n == (s >= t).sum() and e == pytest.approx(s[s >= t].sum())
    best = profit(curve, cost=cost, value=value)["best"]
    gains = [value * s[s >= t].sum() - cost * (s >= t).sum() for t in np.unique(s)]
    if max(gains) <= 1e-9:
        assert best is None or best["profit"] <= 1e-6
    else:
        assert best is not None and best["profit"] == pytest.approx(max(gains), abs=1e-6)


def test_save_target_keeps_comments_and_validates(tmp_path: Path) -> None:
    (tmp_path / "propensity.yaml").write_text(SPEC)
    ws = Workspace.open(tmp_path)
    target = TargetSettings(
        name="winback", action="buy_7d", threshold=0.25, cost_per_contact=1, value_per_conversion=8
    )
    spec = save_target(ws, target, destinations=["crm"], as_policy=True, by="ana")
    text = (tmp_path / "propensity.yaml").read_text()
    assert "# my project: keep this comment" in text and "# every row" in text
    assert [d.target for d in spec.destinations] == [None, "winback"]
    policy = spec.policies.actions["buy_7d"]
    assert (policy.threshold, policy.value, policy.cost, policy.channel) == (0.25, 8.0, 1.0, "email")
    assert Workspace.open(tmp_path).spec.targets[0].saved_by == "ana"
    # Saving the same name replaces it; a top-share target's policy threshold is the score at its cut.
    save_target(ws, TargetSettings(name="winback", action="buy_7d", top_share=0.1), as_policy=True, cut=0.4)
    spec = Workspace.open(tmp_path).spec
    assert len(spec.targets) == 1 and spec.targets[0].top_share == 0.1
    assert spec.policies.actions["buy_7d"].threshold == 0.4
    # A threshold is a run's score, written exactly: six digits could put it above the last customer reached.
    exact = 0.1234567890123456
    spec = save_target(ws, TargetSettings(name="exact", action="buy_7d", threshold=exact), as_policy=True)
    assert spec.targets[-1].threshold == exact and spec.policies.actions["buy_7d"].threshold == exact
    assert Workspace.open(tmp_path).spec.targets[-1].threshold == exact
    with pytest.raises(TargetError, match="no destination named nope"):
        save_target(ws, target, destinations=["nope"])
    before = (tmp_path / "propensity.yaml").read_text()
    with pytest.raises(SpecError, match=r"targets\[2\]\.action"):
        save_target(ws, TargetSettings(name="x", action="upgrade_30d", threshold=0.1))
    assert (tmp_path / "propensity.yaml").read_text() == before  # nothing written


def test_a_destination_must_name_a_saved_target(tmp_path: Path) -> None:
    (tmp_path / "propensity.yaml").write_text(
        SPEC.replace("format: parquet}", "format: parquet, target: gone}")
    )
    with pytest.raises(SpecError, match=r"destinations\[1\]\.target: no target named 'gone'"):
        Workspace.open(tmp_path)


def test_mask_hides_identifiers() -> None:
    assert mask("c123456") == "c••••56" and mask("ann@example.org") == "a•••@•••.org"
    assert mask("+33 6 12 34 56 78") == "•••78" and "c123456" not in mask("c123456")
