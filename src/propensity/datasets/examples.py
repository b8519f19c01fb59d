"""The example projects bundled with the package: their ``propensity.yaml`` text, for ``propensity init``, the
Python API, the quickstart, tests and benchmarks."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from propensity.core.errors import PropensityError

EXAMPLES = ("blank", "synthetic", "completejourney")


def example_spec_text(example: str) -> str:
    """The text of a bundled example spec: the commented template (``blank``), or a data set's project."""
    if example == "blank":
        return resources.files("propensity.config").joinpath("example.yaml").read_text(encoding="utf-8")
    if example not in EXAMPLES:
        raise PropensityError(f"example {example!r} is not known; use one of: {', '.join(EXAMPLES)}")
    return (
        resources.files("propensity.datasets")
        .joinpath(f"projects/{example}.yaml")
        .read_text(encoding="utf-8")
    )


def example_feature(example: str, name: str) -> dict[str, Any]:
    """One feature definition of a bundled example project, as written there (for tests and benchmarks that
    build their own feature sets but should define shared features exactly as the example does)."""
    for feature in yaml.safe_load(example_spec_text(example)).get("features") or []:
        if feature.get("name") == name:
            return dict(feature)
    raise PropensityError(f"the {example} example project declares no feature {name!r}")
