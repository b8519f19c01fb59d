"""Training sets: grid cutoffs computed one cutoff at a time (the engine's one-time query) give the rows the
general query gives, row for row; float features round the same whichever side of a tie a sum landed."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from tests.training import synthetic_project

from propensity.training import dataset
from propensity.training.dataset import build_training_sets, round_stably
from propensity.workspace import Workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return synthetic_project.build_workspace(
        tmp_path_factory.mktemp("training-sets"), customers=300, days=150, seed=4
    )


def test_cutoff_groups_give_the_general_querys_training_sets(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "CUTOFF_GROUP_ROWS", 10**9)  # every row by the general (range-join) query
    general = build_training_sets(workspace, errors={})
    monkeypatch.setattr(dataset, "CUTOFF_GROUP_ROWS", 50)  # every grid cutoff by the one-time query
    by_cutoff = build_training_sets(workspace, errors={})
    assert by_cutoff.id == general.id and set(by_cutoff.sets) == set(general.sets)
    assert {"buy_7d", "respond_7d"} <= set(general.sets)  # grid rows, and triggered rows at their own times
    buy = general.sets["buy_7d"].table
    assert pc.min(pc.value_counts(buy.column("as_of")).field("counts")).as_py() >= 50
    for name, ts in general.sets.items():
        assert ts.table.num_rows > 0
        assert by_cutoff.sets[name].table.equals(ts.table), name


def test_values_within_rounding_noise_of_a_tie_round_to_the_even_neighbour() -> None:
    tie = 50.0878125  # a mean of cents over 8 orders: exactly halfway at 6 decimals
    noisy = np.array([tie, np.nextafter(tie, 0.0), np.nextafter(tie, 100.0), -tie, -np.nextafter(tie, 100.0)])
    assert round_stably(noisy, 6).tolist() == [50.087812, 50.087812, 50.087812, -50.087812, -50.087812]
    assert round_stably(np.array([0.0000135, 2.0000025]), 6).tolist() == [0.000014, 2.000002]
    # Anything else rounds as np.round does, and a missing value stays missing.
    rng = np.random.default_rng(0)
    v = rng.normal(0.0, 100.0, 10_000)
    assert np.array_equal(round_stably(v, 6), np.round(v * 1e6) / 1e6)
    assert np.isnan(round_stably(np.array([np.nan]), 6)[0])
