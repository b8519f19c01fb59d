"""The Python API for notebooks: ``import propensity as pp``.

A small facade over the stages, for the notebook and the script: open (or create) a project, ingest events,
compute features, train, promote, score, predict and read the report. Tables go in as pandas or Polars
DataFrames, PyArrow tables, or anything with ``__arrow_c_stream__``; what comes back is the kind passed in (or
Arrow when nothing was passed in, or ``like=`` says otherwise).

>>> import tempfile, pandas as pd
>>> import propensity as pp
>>> project = pp.create(tempfile.mkdtemp(), example="synthetic")
>>> events = pd.DataFrame({"customer_id": ["c1", "c1", "c2"],
...                        "event_type": ["page_view", "add_to_cart", "page_view"],
...                        "event_time": pd.to_datetime(["2026-01-02 10:00", "2026-01-02 10:05",
...                                                       "2026-01-03 09:00"], utc=True)})
>>> report = project.ingest(events)
>>> report.accepted, dict(report.reasons)   # add_to_cart is not an event type of this project
(2, {'event_type: not a declared event type': 1})
>>> spine = pd.DataFrame({"customer_id": ["c1", "c2"], "as_of": pd.to_datetime(["2026-01-05"] * 2, utc=True)})
>>> x = project.features(spine, names=["page_views_30d"])
>>> type(x).__name__, x["page_views_30d"].tolist()
('DataFrame', [1, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from propensity.config.spec import SPEC_FILENAME
from propensity.core.errors import PropensityError
from propensity.core.frames import like, to_arrow
from propensity.datasets.examples import example_spec_text
from propensity.workspace import Workspace

if TYPE_CHECKING:
    import pyarrow as pa

    from propensity.events.ingest import IngestReport
    from propensity.registry.train import TrainingResult

__all__ = ["Project", "create", "open"]


def open(path: str | Path = ".") -> Project:
    """Open the project in ``path`` (its ``propensity.yaml``; a folder without one is an empty project)."""
    return Project(Workspace.open(path))


def create(path: str | Path, *, example: str = "blank", overwrite: bool = False) -> Project:
    """Create a project folder with a ``propensity.yaml``: ``blank`` (the commented template), ``synthetic`` or
    ``completejourney`` (the bundled examples). An existing spec is kept unless ``overwrite``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    spec = root / SPEC_FILENAME
    if overwrite or not spec.exists():
        spec.write_text(example_spec_text(example), encoding="utf-8")
    return open(root)


def _out(result: pa.Table, original: Any, as_: Any) -> Any:
    """``result`` as the kind of ``as_`` when given (a frame, or the words pandas / polars / arrow), else as
    the kind of ``original``."""
    if isinstance(as_, str):
        if as_ not in ("pandas", "polars", "arrow"):
            raise PropensityError(f"like={as_!r}: use 'pandas', 'polars' or 'arrow'")
        if as_ == "arrow":
            return result
        if as_ == "pandas":
            return result.to_pandas()
        import polars as pl

        return pl.from_arrow(result)
    return like(as_ if as_ is not None else original, result)


@dataclass(frozen=True)
class Project:
    """One project folder. ``workspace`` is the underlying :class:`~propensity.workspace.Workspace` for
    everything the facade does not cover."""

    workspace: Workspace

    @property
    def root(self) -> Path:
        return self.workspace.root

    # ---------------------------------------------------------------------------------------------- data
    def ingest(self, data: Any = None, *, source: str | None = None, force: bool = False) -> IngestReport:
        """Ingest events: a table (pandas, Polars, Arrow), a file or folder path (or a list of them), or with
        nothing given every source and attribute source the spec declares. Validation, dedupe and quarantine
        are the CLI's (``propensity ingest``); the report counts accepted, duplicate and quarantined rows."""
        from propensity.events.ingest import IngestReport, ingest_attributes, ingest_files, ingest_table

        ws = self.workspace
        if data is None:
            spec = ws.spec
            report = IngestReport()
            for s in spec.sources:
                if s.path:
                    part = ingest_files(ws, [str(spec.resolve(s.path))], source=s.name, force=force)
                    report.files.extend(part.files)
            from propensity.events.warehouse import ingest_sql_source

            for s in spec.sources:
                if s.sql is not None:
                    report.files.extend(ingest_sql_source(ws, s.name).files)
            for attribute_source in spec.attributes:
                ingest_attributes(ws, attribute_source)
            return report
        if isinstance(data, str | Path):
            return ingest_files(ws, [str(data)], source=source, force=force)
        if isinstance(data, list | tuple) and all(isinstance(p, str | Path) for p in data):
            return ingest_files(ws, [str(p) for p in data], source=source, force=force)
        return ingest_table(ws, to_arrow(data, what="events"), source=source)

    def events(self, customer_ids: Sequence[str] | None = None, *, like: Any = "arrow") -> Any:
        """The event log's events (for some customers, or all) as Arrow, or as ``like`` says."""
        from propensity.events.log import open_event_log

        with self.workspace.read_lock():
            table = open_event_log(self.workspace).read(customer_ids=customer_ids)
        return _out(table, None, like)

    def features(self, spine: Any, *, names: Sequence[str] | None = None, like: Any = None) -> Any:
        """The declared features (or the ``names`` given) for every row of ``spine`` (``customer_id`` and
        ``as_of``), point in time; the result has the spine's kind unless ``like`` says otherwise."""
        from propensity.events.log import open_event_log
        from propensity.features.offline import compute_features

        defs = list(self.workspace.spec.features)
        known = [f.name for f in defs]
        unknown = [n for n in names or () if n not in known]
        if unknown:
            raise PropensityError(
                f"no feature named {', '.join(map(repr, unknown))}; the project declares "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        table = to_arrow(spine, what="spine")
        log = open_event_log(self.workspace)
        with self.workspace.read_lock(), log.connection() as con:
            result = compute_features(con, defs, table)
        if names is not None:  # every feature is computed (derived ones need theirs), the named ones kept
            result = result.select([*table.column_names, *names])
        return _out(result, spine, like)

    # --------------------------------------------------------------------------------------------- models
    def train(self, actions: Sequence[str] | None = None) -> TrainingResult:
        """Train the project's actions (or the ones named) and register a candidate bundle; its id is
        ``.bundle_id``, its report ``.report_json``."""
        from propensity.registry.train import train_project

        return train_project(self.workspace, actions=actions)

    def train_table(
        self,
        data: Any,
        *,
        label: str,
        id: str | None = None,
        positive: str | None = None,
        time: str | None = None,
        folds: int = 5,
    ) -> Any:
        """Train a labelled table (a frame or a file path; one row per example) into a candidate bundle, as
        ``propensity train --table`` does; ``.summary()`` has the bundle id, rows used and rejected (with
        reasons) and the pooled out-of-fold figures."""
        from propensity.registry.train import train_table

        source = Path(data) if isinstance(data, str) else data
        return train_table(self.workspace, source, id_column=id, label=label, positive=positive,
                           time_column=time, folds=folds)  # fmt: skip

    def promote(self, bundle_id: str, *, force: bool = False, reason: str | None = None) -> str:
        """Put a bundle in production through the promotion gate (``force`` skips it, with a ``reason``);
        returns the bundle's full id."""
        from propensity.registry.gate import promote

        promote(self.workspace, bundle_id, force=force, reason=reason)
        return self.production() or bundle_id

    def production(self) -> str | None:
        """The production bundle's id (None before the first promotion)."""
        from propensity.registry.registry import Registry

        return Registry(self.workspace).production()

    def report(self, bundle: str | None = None) -> dict[str, Any]:
        """The training report of a bundle (default: production, else the newest) as a dict."""
        from propensity.registry.bundle import read_manifest
        from propensity.registry.registry import Registry
        from propensity.training.report import report_json

        registry = Registry(self.workspace)
        ref = bundle or registry.production()
        if ref is None:
            entries = registry.entries()
            if not entries:
                raise PropensityError("no bundle trained yet: call .train() first")
            ref = entries[0].id
        return report_json(read_manifest(registry.path(registry.resolve(ref))))

    # ---------------------------------------------------------------------------------------------- scores
    def score(
        self,
        *,
        as_of: datetime | None = None,
        customers: Sequence[str] | None = None,
        actions: Sequence[str] | None = None,
        bundle: str | None = None,
        store: bool = True,
        like: Any = "arrow",
    ) -> Any:
        """Score customers (default: every known one) as of ``as_of`` with the production bundle (or
        ``bundle``). With ``store`` the rows are contract-checked and written to the score store, as
        ``propensity score`` does; the score rows come back as Arrow (or as ``like`` says)."""
        from propensity.scoring.batch import score_and_store, score_batch

        run = score_and_store if store else score_batch
        result = run(self.workspace, as_of=as_of, customers=customers, actions=actions, bundle=bundle)
        return _out(result.rows, None, like)

    def predict(
        self, customer_id: str, *, as_of: datetime | None = None, actions: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """One customer's score rows (one per action) as dicts, computed now and not stored."""
        rows = self.score(as_of=as_of, customers=[customer_id], actions=actions, store=False, like="arrow")
        return list(rows.to_pylist())
