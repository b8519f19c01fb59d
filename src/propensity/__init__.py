"""propensity: from raw behavioural events to calibrated, activation-ready propensity scores.

``import propensity as pp`` gives the notebook facade (:mod:`propensity.notebook`): ``pp.open(path)`` and
``pp.create(path, example=...)`` return a :class:`~propensity.notebook.Project` that ingests, computes features,
trains, promotes, scores, predicts and reports. The facade is imported on first use, so ``import propensity``
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from propensity.core.version import __version__

if TYPE_CHECKING:
    from propensity.notebook import Project, create, open

__all__ = ["Project", "__version__", "create", "open"]

_FACADE = frozenset({"Project", "create", "open"})


def __getattr__(name: str) -> Any:
    if name in _FACADE:
        from propensity import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'propensity' has no attribute {name!r}")
