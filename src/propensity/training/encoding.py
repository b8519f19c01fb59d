"""Feature columns → a float matrix, the same way at training and at scoring time.

Numbers stay numbers (null → NaN), booleans become 0/1, and text columns become category codes from the
vocabulary seen in training (an unseen or missing value → NaN, which LightGBM routes like a missing value). The
encoder is plain JSON, stored in the bundle next to the feature order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_CATEGORIES = 200


@dataclass
class FeatureEncoder:
    names: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, table: pa.Table, names: list[str]) -> FeatureEncoder:
        cats: dict[str, list[str]] = {}
        for n in names:
            col = table.column(n)
            if (
                pa.types.is_string(col.type)
                or pa.types.is_large_string(col.type)
                or pa.types.is_dictionary(col.type)
            ):
                counts = pc.value_counts(col.cast(pa.string()).drop_null()).to_pylist()
                counts.sort(key=lambda c: (-c["counts"], c["values"]))
                cats[n] = sorted(c["values"] for c in counts[:MAX_CATEGORIES])
        return cls(list(names), cats)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, n in enumerate(self.names) if n in self.categories]

    def matrix(self, table: pa.Table) -> np.ndarray:
        """``rows × features`` float64 in ``names`` order."""
        out = np.empty((table.num_rows, len(self.names)), dtype=np.float64)
        for j, n in enumerate(self.names):
            col = table.column(n)
            if n in self.categories:
                codes = pc.index_in(
                    col.cast(pa.string()), value_set=pa.array(self.categories[n], pa.string())
                )
                out[:, j] = codes.to_numpy(zero_copy_only=False).astype(np.float64)
            elif pa.types.is_boolean(col.type):
                out[:, j] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            else:
                out[:, j] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"names": self.names, "categories": self.categories}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureEncoder:
        return cls(list(data["names"]), {k: list(v) for k, v in data["categories"].items()})
