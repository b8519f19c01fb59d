"""A small trained workspace for the batch scoring tests (built once per session).

Trained on buy_7d and churn_30d only; upgrade_30d is declared but left out of the bundle, so batch scoring
scores it with the rule-based fallback. Consent, a suppression list and a holdout experiment are configured so
the decision policy has something to decide.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from tests.training.synthetic_project import START, trained_workspace

from propensity.workspace import Workspace

DAYS = 120
AS_OF = START + timedelta(days=DAYS)


@pytest.fixture(scope="session")
def scoring_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("batch")
    (root / "vip.csv").write_text("customer_id\nc1\nc2\n")
    spec: dict[str, Any] = {}
    spec["actions"] = [{"template": "buy"}, {"template": "churn"}, {"template": "upgrade"}]
    spec["policies"] = {
        "actions": {
            "buy_7d": {"value": 40.0, "cost": 0.5, "channel": "email"},
            "churn_30d": {"value": 20.0, "cost": 1.0, "threshold": 0.3},
        },
        "consent": {"email": "consent_email"},
        "suppression": [{"name": "vip_list", "file": "vip.csv"}],
    }
    spec["experiments"] = {"holdouts": [{"name": "q1-test", "control_share": 0.1}]}
    return trained_workspace(
        root, customers=400, days=DAYS, seed=11, spec=spec, train_actions=["buy_7d", "churn_30d"]
    )
