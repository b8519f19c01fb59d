"""Features: the offline (SQL) engine and the online (incremental) engine over the declared definitions.

The definitions themselves (the ``features:`` section) are :mod:`propensity.config.features`. The two engines
compute the same values for the same (customer, time) under the visibility rule; see ``docs/features.md`` for
the definition language and the exact semantics.
"""

from propensity.features._plan import FeaturePlan
from propensity.features.offline import compute_features, feature_query, parse_features
from propensity.features.online import AsOfError, OnlineFeatureEngine, to_micros

__all__ = [
    "AsOfError",
    "FeaturePlan",
    "OnlineFeatureEngine",
    "compute_features",
    "feature_query",
    "parse_features",
    "to_micros",
]
