"""The canonical score row as an Arrow schema: what every score store holds and every destination reads.

One row per customer × action × scoring run (DESIGN.md, "The canonical score row"). The versioned contract that
gives each field its meaning and allowed values lives in ``contracts/``; this is its physical shape.
"""

from __future__ import annotations

import pyarrow as pa

UTC_US = pa.timestamp("us", tz="UTC")

SCORE_ROW_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        # Calibrated probability; null when the customer is not eligible for the action.
        pa.field("score", pa.float64()),
        # Position of the score in the bundle's test-score distribution, 0–100; null when not eligible.
        pa.field("percentile", pa.float64()),
        # Tier name from the run's segmentation (e.g. high / medium / low); null when not eligible.
        pa.field("segment", pa.string()),
        pa.field("eligible", pa.bool_(), nullable=False),
        # The action the decision policy chose for this customer (the same on all of the customer's rows).
        pa.field("next_best_action", pa.string()),
        # JSON list of {"feature", "value", "contribution"}: the features that moved the score most.
        pa.field("reason_codes", pa.string()),
        # "treatment" or "control" (a control customer is never activated); null when no experiment runs.
        pa.field("holdout_group", pa.string()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("feature_set_version", pa.string(), nullable=False),
        pa.field("scoring_run_id", pa.string(), nullable=False),
        pa.field("scored_at", UTC_US, nullable=False),
        pa.field("expiration_at", UTC_US, nullable=False),
        # Name of the policy rule that decided eligibility / next best action for this row.
        pa.field("decision_policy", pa.string()),
        # JSON object channel → bool (e.g. {"email": true, "ads": false}); null when unknown.
        pa.field("consent", pa.string()),
        # True when the score came from the rule-based fallback rather than a model.
        pa.field("fallback", pa.bool_(), nullable=False),
        # The time the score describes: features and eligibility as visible then; the horizon counts from it.
        pa.field("as_of", UTC_US, nullable=False),
        # The trigger event (a campaign send) a triggered action's row scores (score --triggers); else null.
        pa.field("trigger_id", pa.string()),
    ]
)

SCORE_ROW_COLUMNS: tuple[str, ...] = tuple(SCORE_ROW_SCHEMA.names)
