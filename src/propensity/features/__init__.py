"""Features: declarative definitions, the offline (SQL) engine and the online (incremental) engine.

The two engines compute the same values for the same (customer, time) under the visibility rule; see
``docs/features.md`` for the definition language and the exact semantics.
"""

from propensity.features._plan import FeaturePlan
from propensity.features.definitions import (
    AggregateFeature,
    AnyFeature,
    AttributeFeature,
    DerivedFeature,
    FeatureDefinition,
    SessionFeature,
    check_feature_set,
    default_bucket,
    feature_set_version,
    validate_features,
)
from propensity.features.offline import compute_features, feature_query, parse_features
from propensity.features.online import AsOfError, OnlineFeatureEngine, to_micros
from propensity.features.predicates import ExpressionError, parse_expression, parse_predicate

__all__ = [
    "AggregateFeature",
    "AnyFeature",
    "AsOfError",
    "AttributeFeature",
    "DerivedFeature",
    "ExpressionError",
    "FeatureDefinition",
    "FeaturePlan",
    "OnlineFeatureEngine",
    "SessionFeature",
    "check_feature_set",
    "compute_features",
    "default_bucket",
    "feature_query",
    "feature_set_version",
    "parse_expression",
    "parse_features",
    "parse_predicate",
    "to_micros",
    "validate_features",
]
