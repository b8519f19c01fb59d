"""The leakage audit on a project's training spine: the labelled rows each action trains on, audited by
:func:`propensity.features.audit.audit_features` (which takes plain inputs: features, a spine, labels).

This orchestration lives in ``labels`` because it builds the labels; the checks themselves are the feature
engine's (see ``docs/leakage-and-backfill.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from propensity.core.hashing import sample_key_sql
from propensity.events.log import open_event_log
from propensity.features.audit import DEFAULT_THRESHOLD, AuditError, AuditReport, audit_features
from propensity.features.materialize import grid_spine
from propensity.labels.labels import build_labels
from propensity.labels.spines import data_range, grid_cutoffs, matured_cutoffs
from propensity.workspace import Workspace


def sample_customers(spine: pa.Table, sample: int | None, seed: int) -> pa.Table:
    """The rows of at most ``sample`` customers of ``spine``, drawn by the sampling hash (salt
    ``audit-sample-<seed>``)."""
    if sample is None or sample <= 0:
        return spine
    mem = duckdb.connect()
    try:
        mem.register("s", spine)
        keep = mem.sql(
            f"SELECT customer_id FROM (SELECT DISTINCT customer_id FROM s) "
            f"ORDER BY {sample_key_sql('customer_id', f'audit-sample-{int(seed)}')}, customer_id LIMIT {int(sample)}"
        ).to_arrow_table()
        mem.register("k", keep)
        out = mem.sql(
            "SELECT s.* FROM s SEMI JOIN k USING (customer_id) ORDER BY as_of, customer_id"
        ).to_arrow_table()
    finally:
        mem.close()
    return out.set_column(
        out.column_names.index("as_of"), "as_of", out.column("as_of").cast(pa.timestamp("us", tz="UTC"))
    )


def audit_workspace(
    workspace: Workspace,
    *,
    actions: Sequence[str] | None = None,
    cutoffs: Sequence[datetime] | None = None,
    sample: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    examples: int = 3,
) -> AuditReport:
    """Audit the project's features (:func:`~propensity.features.audit.audit_features`) on its training spine:
    each action's eligible rows with matured labels
    (the training grid, or the given ``cutoffs``), at most ``sample`` customers.

    With no action declared, the spine is every known customer at each grid cutoff (no label-likeness).
    """
    spec = workspace.spec
    if not spec.features:
        raise AuditError("the project declares no features; add some under `features:` first")
    chosen = [spec.action(a) for a in actions] if actions else list(spec.actions)
    settings = spec.training.spine
    snapshots = [a.name for a in spec.attributes if a.valid_from is None]
    from propensity.features.spark import feature_function

    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        dr = data_range(con, settings)
        grid = (
            sorted(c.astimezone(UTC) for c in cutoffs)
            if cutoffs
            else grid_cutoffs(settings, dr.start, dr.end)
        )
        labels: dict[str, pa.Table] = {}
        for action in chosen:
            if cutoffs:
                parts = [
                    build_labels(con, action, [c], slide=settings.slide.timedelta, align=c, data_end=dr.end)
                    for c in grid
                ]
                table = pa.concat_tables(parts)
            else:
                table = build_labels(
                    con,
                    action,
                    matured_cutoffs(grid, action, dr.end),
                    slide=settings.slide.timedelta,
                    align=settings.align,
                    data_end=dr.end,
                )
            labels[action.name] = table.select(["customer_id", "as_of", "label"])
        if labels:
            union = pa.concat_tables([t.select(["customer_id", "as_of"]) for t in labels.values()])
            mem = duckdb.connect()
            mem.register("u", union)
            spine = mem.sql(
                "SELECT DISTINCT customer_id, as_of FROM u ORDER BY as_of, customer_id"
            ).to_arrow_table()
            mem.close()
            spine = spine.set_column(1, "as_of", spine.column("as_of").cast(pa.timestamp("us", tz="UTC")))
        else:
            spine = grid_spine(con, grid)
        spine = sample_customers(spine, sample, seed)
        keep = set(spine.column("customer_id").to_pylist())
        labels = {
            k: v.filter(pa.array([c in keep for c in v.column("customer_id").to_pylist()], pa.bool_()))
            for k, v in labels.items()
        }
        return audit_features(
            con,
            spec.features,
            spine,
            labels=labels,
            threshold=threshold,
            snapshot_sources=snapshots,
            examples=examples,
            compute=feature_function(workspace, con),
        )
