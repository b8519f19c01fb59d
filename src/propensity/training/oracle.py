"""Compare with the synthetic data set's oracle: the true probabilities on the same test rows.

The oracle (``oracle.parquet`` next to the synthetic events) has one row per customer × cutoff × action with
the probability the generator planted. Test rows are matched on customer and time (respond rows are taken as of
the send, a few seconds after the oracle's send time, so the match allows up to an hour), and the model, the
baseline and the oracle are scored on exactly the matched rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from propensity.config.spec import ProjectSpec
from propensity.training.metrics import evaluate, headline


def find_oracle(spec: ProjectSpec) -> Path | None:
    """``oracle.parquet`` beside a declared source's files (the synthetic data layout), if there is one."""
    for source in spec.sources:
        if not source.path:
            continue
        path = spec.resolve(source.path)
        for folder in (path.parent, path.parent.parent):
            candidate = folder / "oracle.parquet"
            if candidate.exists():
                return candidate
    return None


def compare_with_oracle(
    oracle: Path, action: str, test: pa.Table, predictions: dict[str, np.ndarray]
) -> dict[str, Any] | None:
    """Metrics of the oracle, the model and the baseline on the test rows the oracle covers."""
    con = duckdb.connect()
    try:
        con.register(
            "t", test.select(["customer_id", "as_of"]).append_column("i", pa.array(np.arange(test.num_rows)))
        )
        rows = con.sql(
            f"""
            SELECT t.i, o.probability FROM t JOIN read_parquet('{oracle.as_posix()}') o
              ON o.customer_id = t.customer_id AND o.action = ? AND o.eligible
             AND o.cutoff <= t.as_of AND o.cutoff > t.as_of - INTERVAL 1 HOUR
            ORDER BY t.i
            """,
            params=[action],
        ).to_arrow_table()
    finally:
        con.close()
    if rows.num_rows == 0:
        return None
    idx = rows.column("i").to_numpy()
    idx, first = np.unique(idx, return_index=True)
    prob = rows.column("probability").to_numpy()[first]
    y = predictions["label"][idx]
    if y.min() == y.max():
        return None
    oracle_m = headline(evaluate(prob, y))
    return {
        "rows": len(idx),
        "oracle": oracle_m,
        "model": headline(evaluate(predictions["model"][idx], y)),
        "baseline": headline(evaluate(predictions["baseline"][idx], y)),
    }
