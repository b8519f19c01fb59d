"""Training sets: eligible rows with matured labels × point-in-time features, split in time, stored as Parquet.

For each action: grid cutoffs (the spine) → eligible rows and labels (:mod:`propensity.labels.labels`) → time
split with gaps (:mod:`propensity.training.splits`) → point-in-time features from the offline engine. Features
are computed once for the union of every action's (customer, as_of) pairs. A stored training set is a folder
``.propensity/training/<id>/`` with one Parquet file per action and ``manifest.json`` (feature definitions and
version, spine, data range, action definitions, split boundaries), so any model can be reproduced from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity.config.actions import Action
from propensity.config.features import feature_set_version
from propensity.config.spec import ProjectSpec
from propensity.core.errors import PropensityError
from propensity.core.hashing import content_hash, in_share_sql
from propensity.events.log import open_event_log
from propensity.labels.spines import data_range, grid_cutoffs, matured_cutoffs
from propensity.training.splits import (
    InsufficientDataError,
    SplitBoundaries,
    assign_splits,
    choose_boundaries,
    choose_row_boundaries,
    group_times,
    verify_no_overlap,
)
from propensity.workspace import Workspace

Progress = Callable[[str, int, int], None]
ROUND_DIGITS = 6
TIE_ULPS = 16  # a float sum's error over tens of terms, in units of the last place (round_stably)
# A cutoff with at least this many spine rows is computed by the engine's one-time query (_features_by_cutoff):
# below it, scanning every event up to the cutoff costs more than joining the few rows' windows.
CUTOFF_GROUP_ROWS = 10_000
ROW_COLUMNS = ("customer_id", "as_of", "label", "label_end", "campaign_id", "trigger_id", "split")


@dataclass
class TrainingSet:
    """One action's rows (``ROW_COLUMNS`` then the features in declared order) and how they were made."""

    action: Action
    table: pa.Table
    boundaries: SplitBoundaries
    cutoffs: list[datetime]
    feature_names: list[str]

    def split(self, name: str) -> pa.Table:
        return self.table.filter(pc.equal(self.table.column("split"), name))

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for name in ("train", "calibration", "test"):
            part = self.split(name)
            pos = int(pc.sum(part.column("label")).as_py() or 0)
            out[name] = {"rows": part.num_rows, "positives": pos}
        return out


@dataclass
class TrainingSets:
    """Every action's training set, with the manifest that describes them all."""

    sets: dict[str, TrainingSet]
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.manifest["id"])


def _sample(table: pa.Table, max_rows: int | None, seed: int) -> pa.Table:
    """Keep at most about ``max_rows`` rows, chosen by the sampling hash of the customer (whole customers; the
    salt is ``training-sample-<seed>``)."""
    if max_rows is None or table.num_rows <= max_rows:
        return table
    frac = max_rows / table.num_rows
    con = duckdb.connect()
    con.register("tbl", table)
    keep = con.sql(
        f"SELECT {in_share_sql('customer_id', f'training-sample-{int(seed)}', frac)} AS k FROM tbl"
    )
    mask = keep.to_arrow_table().column("k")
    con.close()
    return table.filter(mask)


def build_training_sets(
    workspace: Workspace,
    *,
    actions: Sequence[str] | None = None,
    progress: Progress | None = None,
    errors: dict[str, str] | None = None,
    engine: str | None = None,
) -> TrainingSets:
    """Build (but do not store) the training sets of the project's actions (or the named ones).

    An action whose data cannot be split is skipped when ``errors`` is given (its message recorded there),
    otherwise its :class:`~propensity.training.splits.InsufficientDataError` propagates. ``engine`` (``duckdb``
    or ``spark``; default: the spec's ``engine``) computes the labels and features; the sets are the same.
    """
    from propensity.events.spark import engine_of
    from propensity.labels.engines import DuckDBEngine, OfflineEngine, SparkEngine

    spec = workspace.spec
    chosen = [spec.action(a) for a in actions] if actions else list(spec.actions)
    settings = spec.training
    sets: dict[str, TrainingSet] = {}
    t0 = time.perf_counter()
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        offline: OfflineEngine = (
            SparkEngine.for_workspace(workspace, con)
            if engine_of(workspace, engine) == "spark"
            else DuckDBEngine(con)
        )
        dr = data_range(con, settings.spine)
        grid = grid_cutoffs(settings.spine, dr.start, dr.end, zone=spec.timezone)
        rows: dict[str, tuple[Action, pa.Table, SplitBoundaries, list[datetime]]] = {}
        for i, action in enumerate(chosen):
            if progress:
                progress("labels", i, len(chosen))
            try:
                if action.trigger is None:
                    labels, bounds, cutoffs = _cutoff_rows(offline, spec, action, grid, dr.end)
                else:
                    labels, bounds, cutoffs = _trigger_rows(offline, spec, action, grid, dr.end, con)
                verify_no_overlap(labels, action=action.name)
            except PropensityError as exc:
                if errors is None:
                    raise
                errors[action.name] = str(exc)
                continue
            rows[action.name] = (action, _sample(labels, settings.max_rows, settings.seed), bounds, cutoffs)
        if progress:
            progress("labels", len(chosen), len(chosen))
        t1 = time.perf_counter()
        features = _features_for(offline, spec, [t for _, t, _, _ in rows.values()], progress)
        t2 = time.perf_counter()
    names = [f.name for f in spec.features]
    for name, (action, labels, bounds, cutoffs) in rows.items():
        table = _join(labels, features, names)
        sets[name] = TrainingSet(action, table, bounds, cutoffs, names)
    manifest = _manifest(spec, sets, dr.start, dr.end)
    seconds = {"labels": t1 - t0, "features": t2 - t1, "join": time.perf_counter() - t2}
    return TrainingSets(sets, manifest, seconds=seconds)


def _cutoff_rows(
    offline: Any,
    spec: ProjectSpec,
    action: Action,
    grid: list[datetime],
    data_end: datetime,
) -> tuple[pa.Table, SplitBoundaries, list[datetime]]:
    """A cutoff action's rows at its matured cutoffs, split in time (periods: the cutoffs)."""
    settings = spec.training
    cutoffs = matured_cutoffs(grid, action, data_end)
    labels = offline.labels(action, cutoffs, data_end=data_end, zone=spec.timezone)
    bounds = choose_boundaries(cutoffs, action.span.timedelta, settings.split, action=action.name)
    labels = assign_splits(labels, bounds, purge=settings.split.purge, action=action.name)
    return labels, bounds, cutoffs


def _trigger_rows(
    offline: Any,
    spec: ProjectSpec,
    action: Action,
    grid: list[datetime],
    data_end: datetime,
    con: duckdb.DuckDBPyConnection,
) -> tuple[pa.Table, SplitBoundaries, list[datetime]]:
    """A trigger action's rows: every trigger from the first cutoff to the data's end (or ``spine.end``) whose
    label has matured, split on the rows' own times; with ``split.group_by`` a group's rows (a campaign's sends)
    take the time of the group's first row, so a group never has rows on two sides of a boundary."""
    settings = spec.training
    if not grid:
        raise InsufficientDataError(
            f"{action.name}: no cutoff fits between the data's start + lookback and its end; use more history or "
            "a shorter training.spine.lookback"
        )
    end = min(data_end, settings.spine.end or data_end)
    labels = offline.labels(
        action, grid[:1], until=end + timedelta(microseconds=1), data_end=data_end, zone=spec.timezone
    )
    if labels.num_rows == 0:
        raise InsufficientDataError(
            f"{action.name}: no {', '.join(action.trigger.event_type if action.trigger else [])} event with a "
            f"matured label between {grid[0].isoformat()} and {end.isoformat()}"
        )
    split_time = labels.column("as_of")
    group = settings.split.group_by
    if group is not None:
        split_time = group_times(labels, _trigger_field(con, labels, group))
    bounds = choose_row_boundaries(split_time, labels.column("label_end"), settings.split, action=action.name)
    labels = assign_splits(
        labels, bounds, purge=settings.split.purge, action=action.name, split_time=split_time
    )
    periods = sorted(set(pc.unique(split_time).to_pylist()))
    return labels, bounds, periods


def _trigger_field(con: duckdb.DuckDBPyConnection, labels: pa.Table, field: str) -> pa.ChunkedArray:
    """The value of ``field`` on each row's trigger event (null when it has none), in row order."""
    if field == "campaign_id":
        return labels.column("campaign_id")
    ids = pa.table(
        {"r": pa.array(range(labels.num_rows), pa.int64()), "trigger_id": labels.column("trigger_id")}
    )
    con.register("_trigger_ids", ids)
    try:
        out = con.sql(
            f"SELECT {_field_sql(field)} AS v FROM _trigger_ids i LEFT JOIN events e ON e.event_id = i.trigger_id "
            "ORDER BY i.r"
        ).to_arrow_table()
    finally:
        con.unregister("_trigger_ids")
    return out.column("v").cast(pa.string())


def _field_sql(field: str) -> str:
    if field.startswith("properties."):
        return f"json_extract_string(e.properties, '$.{field[len('properties.') :]}')"
    return f"CAST(e.{field} AS VARCHAR)"


def _features_for(
    offline: Any, spec: ProjectSpec, tables: list[pa.Table], progress: Progress | None
) -> pa.Table:
    if not tables:
        return pa.table(
            {
                "customer_id": pa.array([], pa.string()),
                "as_of": pa.array([], pa.timestamp("us", tz="UTC")),
                "trigger_id": pa.array([], pa.string()),
            }
        )
    mem = duckdb.connect()
    for i, t in enumerate(tables):
        mem.register(f"t{i}", t.select(["customer_id", "as_of", "trigger_id"]))
    union = " UNION ".join(f"SELECT customer_id, as_of, trigger_id FROM t{i}" for i in range(len(tables)))
    spine = mem.sql(f"SELECT * FROM ({union}) ORDER BY as_of, customer_id, trigger_id").to_arrow_table()
    mem.close()
    if progress:
        progress("features", 0, spine.num_rows)
    if not spec.features:
        out = spine
    elif getattr(offline, "name", "") == "duckdb":
        out = _features_by_cutoff(offline, spec, spine, progress)
    else:
        out = offline.features(spec.features, spine)
    if progress:
        progress("features", spine.num_rows, spine.num_rows)
    return out


def _features_by_cutoff(
    offline: Any, spec: ProjectSpec, spine: pa.Table, progress: Progress | None
) -> pa.Table:
    """Features of the spine's rows, in any order (:func:`_join` matches rows by key).

    A grid cutoff's rows (one time, at least ``CUTOFF_GROUP_ROWS`` customers, no trigger) go to the engine one
    cutoff at a time, which computes them by its one-time query: aggregates by customer with the window bounds
    as constants instead of a range join of events to spine rows, the same values for about half the CPU on a
    full cutoff (measured on 40-48k customers x 8.5M events). The other rows (triggered rows at their own
    times, small cutoffs) take the general query, in about ten chunks when they are many, so the progress bar
    keeps moving during the longest step of training."""
    trigger_null = pc.is_null(spine.column("trigger_id"))
    at_grid = spine.filter(trigger_null).group_by("as_of").aggregate([("as_of", "count")])
    big = at_grid.filter(pc.greater_equal(at_grid.column("as_of_count"), CUTOFF_GROUP_ROWS)).column("as_of")
    grid_rows = pc.and_(trigger_null, pc.is_in(spine.column("as_of"), value_set=big.combine_chunks()))
    grid = spine.filter(grid_rows)
    rest = spine.filter(pc.invert(grid_rows))
    parts: list[pa.Table] = []
    done = 0
    for cutoff in sorted(big.to_pylist()):
        rows = grid.filter(pc.equal(grid.column("as_of"), pa.scalar(cutoff, grid.schema.field("as_of").type)))
        parts.append(offline.features(spec.features, rows))
        done += rows.num_rows
        if progress:
            progress("features", done, spine.num_rows)
    chunk = max(1, rest.num_rows if rest.num_rows <= 50_000 else min(500_000, -(-rest.num_rows // 10)))
    for start in range(0, rest.num_rows, chunk):
        parts.append(offline.features(spec.features, rest.slice(start, chunk)))
        done += min(chunk, rest.num_rows - start)
        if progress:
            progress("features", done, spine.num_rows)
    return pa.concat_tables(parts) if parts else offline.features(spec.features, spine)


def _join(labels: pa.Table, features: pa.Table, names: list[str]) -> pa.Table:
    con = duckdb.connect()
    con.register("l", labels)
    con.register("f", features)
    cols = ", ".join(f'f."{n}"' for n in names)
    sel = f", {cols}" if names else ""
    table = con.sql(
        f"SELECT l.customer_id, l.as_of, l.label, l.label_end, l.campaign_id, l.trigger_id, l.split{sel} "
        "FROM l JOIN f ON f.customer_id = l.customer_id AND f.as_of = l.as_of "
        "AND f.trigger_id IS NOT DISTINCT FROM l.trigger_id ORDER BY l.as_of, l.customer_id, l.trigger_id"
    ).to_arrow_table()
    con.close()
    for col in ("as_of", "label_end"):
        i = table.column_names.index(col)
        table = table.set_column(i, col, table.column(col).cast(pa.timestamp("us", tz="UTC")))
    # Parallel float sums in the engine may differ in the last bits between runs (and between its one-time and
    # general queries); rounding to 1e-6 makes the stored training set, and so the models trained on it, a
    # deterministic function of the data.
    for i, name in enumerate(table.column_names):
        if name in names and pa.types.is_floating(table.schema.field(name).type):
            v = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            rounded = round_stably(v, ROUND_DIGITS)
            table = table.set_column(i, name, pa.array(rounded, pa.float64(), mask=np.isnan(v)))
    return table


def round_stably(v: np.ndarray, digits: int) -> np.ndarray:
    """``v`` rounded to ``digits`` decimals, the same whichever side of a tie the summation order put it.

    A value exactly halfway (a mean of cents over 8 orders: 50.0878125) comes out of a sum a few units in the
    last place above or below the tie depending on the order of the additions; within ``TIE_ULPS`` of a tie it
    goes to the even neighbour, as an exact tie does."""
    scale = 10.0**digits
    s = v * scale
    low = np.floor(s)
    tie = np.abs(s - (low + 0.5)) <= TIE_ULPS * np.spacing(np.abs(s))
    # The same integer always divides to the same double.
    return np.where(tie, low + low % 2, np.round(s)) / scale


def _manifest(
    spec: ProjectSpec, sets: dict[str, TrainingSet], start: datetime, end: datetime
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project": spec.project,
        "feature_set_version": feature_set_version(spec.features),
        "features": [f.canonical() for f in spec.features],
        "spine": spec.training.spine.model_dump(mode="json"),
        "split": spec.training.split.model_dump(mode="json"),
        "data": {"start": start.isoformat(), "end": end.isoformat()},
        "actions": {
            name: {
                "definition": ts.action.definition(),
                "boundaries": ts.boundaries.to_json(),
                "cutoffs": [c.isoformat() for c in ts.cutoffs],
                "counts": ts.counts(),
            }
            for name, ts in sets.items()
        },
    }
    return {"id": "ts-" + content_hash(body), "created_at": datetime.now(UTC).isoformat(), **body}


def store_training_sets(workspace: Workspace, sets: TrainingSets) -> Path:
    """Write the sets under ``.propensity/training/<id>/`` (Parquet per action + manifest.json)."""
    folder = workspace.state_dir / "training" / sets.id
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        b"feature_set_version": str(sets.manifest["feature_set_version"]).encode(),
        b"training_set": sets.id.encode(),
    }
    for name, ts in sorted(sets.sets.items()):
        table = ts.table.replace_schema_metadata({**meta, b"action": name.encode()})
        pq.write_table(table, folder / f"{name}.parquet", compression="zstd")
    (folder / "manifest.json").write_text(json.dumps(sets.manifest, indent=2) + "\n", encoding="utf-8")
    sets.path = folder
    return folder


def load_training_set(folder: Path, action: Action) -> TrainingSet:
    """Read one action's stored training set back (for gates and re-evaluation)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    entry = manifest["actions"][action.name]
    table = pq.read_table(folder / f"{action.name}.parquet")
    names = [c for c in table.column_names if c not in ROW_COLUMNS]
    return TrainingSet(
        action,
        table,
        SplitBoundaries.from_json(entry["boundaries"]),
        [datetime.fromisoformat(c) for c in entry["cutoffs"]],
        names,
    )
