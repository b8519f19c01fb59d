"""Score stores: where scoring runs (canonical score rows plus one run record each) are kept.

:class:`ScoreStore` is the small interface every backend honours; :class:`DuckDBScoreStore` (tables ``scores``
and ``scoring_runs`` in the workspace's DuckDB file) is the default, :class:`PostgresScoreStore` writes to a
PostgreSQL server with COPY, :class:`ParquetScoreStore` keeps a folder of one Parquet file per run. One test
suite runs against all three.

Writes are atomic: a run's rows and its record appear together or not at all, even if the process dies
mid-write (a database transaction; for Parquet, the run's manifest is renamed into place only after its data
file is complete, and a data file without a manifest is not a run). Runs are never overwritten.

>>> import tempfile, pyarrow as pa
>>> from datetime import UTC, datetime, timedelta
>>> store = ParquetScoreStore(tempfile.mkdtemp())
>>> t = datetime(2026, 1, 5, tzinfo=UTC)
>>> run = ScoringRun(run_id=new_run_id(t), scored_at=t, expiration_at=t + timedelta(days=1), as_of=t,
...                  model_version="m-1", feature_set_version="fs-1", rows=0)
>>> store.write_run(empty_rows(), run)
>>> store.latest_run().run_id == run.run_id, store.read_run(run.run_id).num_rows
(True, 0)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from propensity.core.clock import as_utc
from propensity.core.errors import PropensityError
from propensity.core.score_row import SCORE_ROW_COLUMNS, SCORE_ROW_SCHEMA

if TYPE_CHECKING:
    from propensity.workspace import Workspace

RUN_STATUSES = ("complete", "blocked", "failed", "superseded")


class ScoreStoreError(PropensityError):
    """A score store request that cannot be met (unknown run, a run id written twice, bad rows)."""


@dataclass(frozen=True)
class ScoringRun:
    """One batch scoring run: what was scored, when, with which model, and how its segments were cut.

    ``segment_cuts[action]`` are the ascending score cut points between the action's tiers and
    ``segment_names[action]`` the tier names from the lowest to the highest (one more name than cuts).
    ``details`` is free JSON for later stages (activation gates record their verdicts there).
    """

    run_id: str
    scored_at: datetime
    expiration_at: datetime
    as_of: datetime
    model_version: str
    feature_set_version: str
    rows: int
    segment_cuts: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    segment_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    contract_version: str = ""
    status: str = "complete"
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("scored_at", "expiration_at", "as_of"):
            out[k] = _iso(getattr(self, k))
        out["segment_cuts"] = {a: list(c) for a, c in self.segment_cuts.items()}
        out["segment_names"] = {a: list(c) for a, c in self.segment_names.items()}
        out["details"] = dict(self.details)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScoringRun:
        return cls(
            run_id=str(data["run_id"]),
            scored_at=_parse_time(data["scored_at"]),
            expiration_at=_parse_time(data["expiration_at"]),
            as_of=_parse_time(data["as_of"]),
            model_version=str(data["model_version"]),
            feature_set_version=str(data["feature_set_version"]),
            rows=int(data["rows"]),
            segment_cuts={a: tuple(float(x) for x in c) for a, c in (data.get("segment_cuts") or {}).items()},
            segment_names={a: tuple(str(x) for x in c) for a, c in (data.get("segment_names") or {}).items()},
            contract_version=str(data.get("contract_version") or ""),
            status=str(data.get("status") or "complete"),
            details=dict(data.get("details") or {}),
        )


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _parse_time(value: Any) -> datetime:
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return as_utc(t)


def new_run_id(scored_at: datetime) -> str:
    """``r-20261123T125600Z-3fa9c1``: sorts by time, unique across processes."""
    return f"r-{scored_at.astimezone(UTC):%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"


def empty_rows() -> pa.Table:
    return SCORE_ROW_SCHEMA.empty_table()


def conform(rows: pa.Table) -> pa.Table:
    """``rows`` in the canonical column order and types; raises naming a missing column or a bad type."""
    missing = [c for c in SCORE_ROW_COLUMNS if c not in rows.column_names]
    if missing:
        raise ScoreStoreError(f"score rows lack column(s) {', '.join(missing)}; see SCORE_ROW_SCHEMA")
    cols = []
    for f in SCORE_ROW_SCHEMA:
        col = rows.column(f.name)
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ScoreStoreError(
                    f"score rows: column {f.name} is {col.type}, expected {f.type}"
                ) from exc
        if not f.nullable and col.null_count:
            raise ScoreStoreError(f"score rows: column {f.name} has {col.null_count} null(s); it is required")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=SCORE_ROW_SCHEMA)


# Columns added by later contract versions: (name, SQL types by store). Stores written by an older version gain
# them on their next write; rows read back from before get as_of from their run's record, trigger_id null.
_ADDED_COLUMNS = (("as_of", "TIMESTAMPTZ", "TIMESTAMPTZ"), ("trigger_id", "VARCHAR", "TEXT"))


def _older_rows(rows: pa.Table, run: ScoringRun) -> pa.Table:
    """Rows stored under contract 1.x (no as_of / trigger_id, or null there) completed from the run record."""
    if "trigger_id" not in rows.column_names:
        rows = rows.append_column("trigger_id", pa.nulls(rows.num_rows, pa.string()))
    as_of = pa.array([run.as_of] * rows.num_rows, SCORE_ROW_SCHEMA.field("as_of").type)
    if "as_of" not in rows.column_names:
        return rows.append_column("as_of", as_of)
    col = rows.column("as_of").cast(as_of.type)
    if col.null_count:
        i = rows.column_names.index("as_of")
        rows = rows.set_column(i, "as_of", pc.if_else(pc.is_null(col), as_of, col))
    return rows


def _check_run(rows: pa.Table, run: ScoringRun) -> pa.Table:
    table = conform(rows)
    if table.num_rows != run.rows:
        raise ScoreStoreError(
            f"run {run.run_id}: the record says {run.rows} rows but {table.num_rows} were given"
        )
    if table.num_rows:
        ids = pc.unique(table.column("scoring_run_id")).to_pylist()
        if ids != [run.run_id]:
            raise ScoreStoreError(f"run {run.run_id}: rows carry scoring_run_id {', '.join(map(str, ids))}")
    return table


def drop_expired(rows: pa.Table, now: datetime | None = None) -> pa.Table:
    """Only the rows still valid at ``now`` (default: the current time): expired scores are never exported."""
    t = pa.scalar(now or datetime.now(UTC), SCORE_ROW_SCHEMA.field("expiration_at").type)
    return rows.filter(pc.greater(rows.column("expiration_at"), t))


@runtime_checkable
class ScoreStore(Protocol):
    """What every score store offers. Rows are Arrow tables with :data:`SCORE_ROW_SCHEMA`."""

    def write_run(self, rows: pa.Table, run: ScoringRun) -> None:
        """Store a new run atomically; a run id that exists already is refused."""
        ...

    def read_run(self, run_id: str) -> pa.Table:
        """The run's rows, ordered by action then customer_id."""
        ...

    def runs(self, limit: int | None = None) -> list[ScoringRun]:
        """Run records, newest first."""
        ...

    def latest_run(self, before: str | None = None, *, status: str | None = None) -> ScoringRun | None:
        """The newest run (with ``status`` when given); ``before`` (a run id, or an ISO 8601 time) restricts
        it to runs scored before that run or time."""
        ...

    def get_run(self, run_id: str) -> ScoringRun:
        """One run record (raises :class:`ScoreStoreError` naming the known runs when unknown)."""
        ...

    def update_run(
        self, run_id: str, *, status: str | None = None, details: Mapping[str, Any] | None = None
    ) -> ScoringRun:
        """Change a run's status and/or merge keys into its details (rows never change)."""
        ...


# ------------------------------------------------------------------------------------------- shared logic
def _select_latest(runs: list[ScoringRun], before: str | None, status: str | None) -> ScoringRun | None:
    if status is not None:
        runs = [r for r in runs if r.status == status]
    if before is None:
        return runs[0] if runs else None
    by_id = {r.run_id: r for r in runs}
    if before in by_id:
        pivot = by_id[before]
        older = [r for r in runs if (r.scored_at, r.run_id) < (pivot.scored_at, pivot.run_id)]
        return older[0] if older else None
    try:
        t = _parse_time(before)
    except ValueError:
        raise ScoreStoreError(f"before={before!r} is neither a known run id nor an ISO 8601 time") from None
    older = [r for r in runs if r.scored_at < t]
    return older[0] if older else None


def _order(runs: list[ScoringRun]) -> list[ScoringRun]:
    return sorted(runs, key=lambda r: (r.scored_at, r.run_id), reverse=True)


def _unknown(run_id: str, runs: list[ScoringRun]) -> ScoreStoreError:
    known = ", ".join(r.run_id for r in runs[:5]) or "(none yet; run `propensity score`)"
    return ScoreStoreError(f"no scoring run {run_id!r}; newest runs: {known}")


def _check_status(status: str | None) -> None:
    if status is not None and status not in RUN_STATUSES:
        raise ScoreStoreError(f"status {status!r} is not allowed; use one of {', '.join(RUN_STATUSES)}")


def _updated(run: ScoringRun, status: str | None, details: Mapping[str, Any] | None) -> ScoringRun:
    _check_status(status)
    merged = {**run.details, **(details or {})}
    return replace(run, status=status or run.status, details=merged)


# ----------------------------------------------------------------------------------------------- DuckDB
_DUCK_SCORES_TYPES = {
    "string": "VARCHAR",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}


def _ddl(table: str, types: Mapping[str, str]) -> str:
    cols = ",\n    ".join(
        f"{f.name} {types[str(f.type)]}{'' if f.nullable else ' NOT NULL'}" for f in SCORE_ROW_SCHEMA
    )
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {cols}\n)"


_DUCK_RUNS_DDL = """
CREATE TABLE IF NOT EXISTS scoring_runs (
    run_id     VARCHAR PRIMARY KEY,
    scored_at  TIMESTAMPTZ NOT NULL,
    record     VARCHAR NOT NULL
)
"""


class _RunLookups:
    """``get_run`` and ``latest_run`` from a store's ``runs()`` (every store keeps a small index of runs)."""

    def runs(self, limit: int | None = None) -> list[ScoringRun]:
        raise NotImplementedError

    def get_run(self, run_id: str) -> ScoringRun:
        runs = self.runs()
        for r in runs:
            if r.run_id == run_id:
                return r
        raise _unknown(run_id, runs)

    def latest_run(self, before: str | None = None, *, status: str | None = None) -> ScoringRun | None:
        return _select_latest(self.runs(), before, status)


class DuckDBScoreStore(_RunLookups):
    """Tables ``scores`` (the rows) and ``scoring_runs`` (one JSON record per run) in a DuckDB file.

    ``lock`` (e.g. ``workspace.write_lock``) is held around every write, because only one process may write
    the file at a time; reads open the file read-only and briefly.
    """

    def __init__(self, path: Path | str, *, lock: Callable[[], AbstractContextManager[Any]] | None = None):
        self.path = Path(path)
        self._lock = lock or contextlib.nullcontext

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[Any]:
        from propensity.events.log import connect

        if not write and not self.path.exists():
            write = True
        with self._lock() if write else self._read_lock():
            con = connect(self.path, read_only=not write)
            try:
                if write:
                    con.execute(_ddl("scores", _DUCK_SCORES_TYPES)).fetchall()
                    for name, duck, _ in _ADDED_COLUMNS:
                        con.execute(f"ALTER TABLE scores ADD COLUMN IF NOT EXISTS {name} {duck}").fetchall()
                    con.execute(_DUCK_RUNS_DDL).fetchall()
                yield con
            finally:
                con.close()

    def _read_lock(self) -> contextlib.AbstractContextManager[None]:
        # Readers hold the lock shared, so a writer (a server moving live events in) never meets an open reader.
        from propensity.workspace import LOCK_FILENAME, file_lock

        return file_lock(self.path.parent / LOCK_FILENAME, exclusive=False)

    def _has_tables(self, con: Any) -> bool:
        rows = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('scores', 'scoring_runs')"
        ).fetchall()
        return bool(rows[0][0] == 2)

    def write_run(self, rows: pa.Table, run: ScoringRun) -> None:
        from propensity.events.log import transaction

        table = _check_run(rows, run)
        _check_status(run.status)
        with self._connect(write=True) as con:
            if con.execute("SELECT 1 FROM scoring_runs WHERE run_id = ?", [run.run_id]).fetchall():
                raise ScoreStoreError(f"run {run.run_id} exists already; a run is never overwritten")
            con.register("_new_scores", table)
            try:
                with transaction(con):
                    con.execute(
                        f"INSERT INTO scores SELECT {', '.join(SCORE_ROW_COLUMNS)} FROM _new_scores"
                    ).fetchall()
                    con.execute(
                        "INSERT INTO scoring_runs VALUES (?, ?, ?)",
                        [run.run_id, run.scored_at, json.dumps(run.to_json(), sort_keys=True)],
                    ).fetchall()
            finally:
                con.unregister("_new_scores")

    def _all_runs(self, con: Any) -> list[ScoringRun]:
        if not self._has_tables(con):
            return []
        rows = con.execute("SELECT record FROM scoring_runs").fetchall()
        return _order([ScoringRun.from_json(json.loads(r[0])) for r in rows])

    def runs(self, limit: int | None = None) -> list[ScoringRun]:
        with self._connect(write=False) as con:
            out = self._all_runs(con)
        return out if limit is None else out[:limit]

    def read_run(self, run_id: str) -> pa.Table:
        run = self.get_run(run_id)
        with self._connect(write=False) as con:
            have = {r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'scores'"
            ).fetchall()}  # fmt: skip
            cols = ", ".join(c for c in SCORE_ROW_COLUMNS if c in have)
            table = con.sql(
                f"SELECT {cols} FROM scores WHERE scoring_run_id = $run ORDER BY action, customer_id, trigger_id"
                if "trigger_id" in have
                else f"SELECT {cols} FROM scores WHERE scoring_run_id = $run ORDER BY action, customer_id",
                params={"run": run_id},
            ).to_arrow_table()
        return conform(_older_rows(table, run))

    def update_run(
        self, run_id: str, *, status: str | None = None, details: Mapping[str, Any] | None = None
    ) -> ScoringRun:
        with self._connect(write=True) as con:
            rows = con.execute("SELECT record FROM scoring_runs WHERE run_id = ?", [run_id]).fetchall()
            if not rows:
                raise _unknown(run_id, self._all_runs(con))
            run = _updated(ScoringRun.from_json(json.loads(rows[0][0])), status, details)
            con.execute(
                "UPDATE scoring_runs SET record = ? WHERE run_id = ?",
                [json.dumps(run.to_json(), sort_keys=True), run_id],
            ).fetchall()
        return run


# --------------------------------------------------------------------------------------------- Postgres
_PG_TYPES = {
    "string": "TEXT",
    "double": "DOUBLE PRECISION",
    "bool": "BOOLEAN",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}


class PostgresScoreStore(_RunLookups):
    """Tables ``scores`` and ``scoring_runs`` in a PostgreSQL schema; rows go in with one COPY per run, in the
    same transaction as the run record."""

    def __init__(self, url: str, *, schema: str = "propensity") -> None:
        self.url = url
        self.schema = schema
        self._ready = False

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        import psycopg

        try:
            con = psycopg.connect(self.url)
        except psycopg.OperationalError as exc:
            raise ScoreStoreError(f"scoring.url: cannot connect to PostgreSQL ({exc})") from None
        try:
            with con:  # commits on success, rolls back if anything escapes
                if not self._ready:
                    self._ensure(con)
                yield con
        finally:
            con.close()

    def _ensure(self, con: Any) -> None:
        s = self.schema
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        con.execute(_ddl(f"{s}.scores", _PG_TYPES))
        for name, _, pg in _ADDED_COLUMNS:
            con.execute(f"ALTER TABLE {s}.scores ADD COLUMN IF NOT EXISTS {name} {pg}")
        con.execute(f"CREATE INDEX IF NOT EXISTS scores_run_idx ON {s}.scores (scoring_run_id)")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.scoring_runs "
            "(run_id TEXT PRIMARY KEY, scored_at TIMESTAMPTZ NOT NULL, record JSONB NOT NULL)"
        )
        self._ready = True

    def write_run(self, rows: pa.Table, run: ScoringRun) -> None:
        import psycopg

        table = _check_run(rows, run)
        _check_status(run.status)
        buf = pa.BufferOutputStream()
        # Every value quoted and nulls left empty: PostgreSQL's CSV reads an unquoted empty field as NULL and a
        # quoted one as the empty string.
        pacsv.write_csv(
            table, buf, pacsv.WriteOptions(include_header=False, quoting_style="all_valid", batch_size=65_536)
        )
        data = buf.getvalue()
        with self._connect() as con:
            try:
                con.execute(
                    f"INSERT INTO {self.schema}.scoring_runs VALUES (%s, %s, %s)",
                    (run.run_id, run.scored_at, json.dumps(run.to_json(), sort_keys=True)),
                )
            except psycopg.errors.UniqueViolation:
                raise ScoreStoreError(
                    f"run {run.run_id} exists already; a run is never overwritten"
                ) from None
            cols = ", ".join(SCORE_ROW_COLUMNS)
            with con.cursor().copy(
                f"COPY {self.schema}.scores ({cols}) FROM STDIN WITH (FORMAT csv)"
            ) as copy:
                view = memoryview(data)
                for start in range(0, len(view), 1 << 20):
                    copy.write(view[start : start + (1 << 20)])

    def _records(self, con: Any) -> list[ScoringRun]:
        rows = con.execute(f"SELECT record FROM {self.schema}.scoring_runs").fetchall()
        return _order(
            [ScoringRun.from_json(r[0] if isinstance(r[0], dict) else json.loads(r[0])) for r in rows]
        )

    def runs(self, limit: int | None = None) -> list[ScoringRun]:
        with self._connect() as con:
            out = self._records(con)
        return out if limit is None else out[:limit]

    def read_run(self, run_id: str) -> pa.Table:
        run = self.get_run(run_id)
        cols = ", ".join(SCORE_ROW_COLUMNS)
        with self._connect() as con:
            cur = con.execute(
                f"SELECT {cols} FROM {self.schema}.scores WHERE scoring_run_id = %s "
                "ORDER BY action, customer_id, trigger_id",
                (run_id,),
            )
            records = cur.fetchall()
        columns: list[Sequence[Any]] = (
            list(zip(*records, strict=True)) if records else [[] for _ in SCORE_ROW_COLUMNS]
        )
        schema = pa.schema([f.with_nullable(True) for f in SCORE_ROW_SCHEMA])
        table = pa.Table.from_arrays(
            [pa.array(list(c), f.type) for c, f in zip(columns, SCORE_ROW_SCHEMA, strict=True)], schema=schema
        )
        return conform(_older_rows(table, run))

    def update_run(
        self, run_id: str, *, status: str | None = None, details: Mapping[str, Any] | None = None
    ) -> ScoringRun:
        with self._connect() as con:
            rows = con.execute(
                f"SELECT record FROM {self.schema}.scoring_runs WHERE run_id = %s FOR UPDATE", (run_id,)
            ).fetchall()
            if not rows:
                raise _unknown(run_id, self._records(con))
            rec = rows[0][0] if isinstance(rows[0][0], dict) else json.loads(rows[0][0])
            run = _updated(ScoringRun.from_json(rec), status, details)
            con.execute(
                f"UPDATE {self.schema}.scoring_runs SET record = %s WHERE run_id = %s",
                (json.dumps(run.to_json(), sort_keys=True), run_id),
            )
        return run


# ---------------------------------------------------------------------------------------------- Parquet
class ParquetScoreStore(_RunLookups):
    """A folder: ``<run_id>.parquet`` (the rows) and ``<run_id>.json`` (the run record) per run.

    Both are written under a temporary name and renamed into place, the record last: a run exists exactly
    when its record does, so a crash mid-write leaves no partial run (at most an orphan data file, removed by
    the next write).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _atomic_write(self, final: Path, write: Callable[[Path], object]) -> None:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.path)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write(tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def write_run(self, rows: pa.Table, run: ScoringRun) -> None:
        table = _check_run(rows, run)
        _check_status(run.status)
        self.path.mkdir(parents=True, exist_ok=True)
        record = self.path / f"{run.run_id}.json"
        if record.exists():
            raise ScoreStoreError(f"run {run.run_id} exists already; a run is never overwritten")
        self._sweep()
        self._atomic_write(self.path / f"{run.run_id}.parquet", lambda p: pq.write_table(table, p))
        text = json.dumps(run.to_json(), sort_keys=True, indent=1)
        self._atomic_write(record, lambda p: p.write_text(text, encoding="utf-8"))

    def _sweep(self) -> None:
        """Remove data files left by a write that died before its record was renamed into place."""
        for data in self.path.glob("r-*.parquet"):
            if not data.with_suffix(".json").exists():
                data.unlink(missing_ok=True)

    def runs(self, limit: int | None = None) -> list[ScoringRun]:
        if not self.path.exists():
            return []
        out = _order(
            [
                ScoringRun.from_json(json.loads(p.read_text(encoding="utf-8")))
                for p in self.path.glob("r-*.json")
            ]
        )
        return out if limit is None else out[:limit]

    def get_run(self, run_id: str) -> ScoringRun:
        record = self.path / f"{run_id}.json"
        if not record.exists() or "/" in run_id:
            raise _unknown(run_id, self.runs())
        return ScoringRun.from_json(json.loads(record.read_text(encoding="utf-8")))

    def read_run(self, run_id: str) -> pa.Table:
        run = self.get_run(run_id)
        table = _older_rows(pq.read_table(self.path / f"{run_id}.parquet"), run)
        order = [("action", "ascending"), ("customer_id", "ascending"), ("trigger_id", "ascending")]
        return conform(table).sort_by(order)

    def update_run(
        self, run_id: str, *, status: str | None = None, details: Mapping[str, Any] | None = None
    ) -> ScoringRun:
        run = _updated(self.get_run(run_id), status, details)
        text = json.dumps(run.to_json(), sort_keys=True, indent=1)
        self._atomic_write(self.path / f"{run_id}.json", lambda p: p.write_text(text, encoding="utf-8"))
        return run


def open_score_store(workspace: Workspace) -> ScoreStore:
    """The store the workspace's ``scoring`` section names (the workspace's DuckDB file by default)."""
    settings = workspace.spec.scoring
    if settings.store == "postgres":
        assert settings.url is not None  # the settings model requires it
        return PostgresScoreStore(settings.url, schema=settings.schema_name)
    if settings.store == "parquet":
        return ParquetScoreStore(workspace.spec.resolve(settings.path))
    return DuckDBScoreStore(workspace.db_path, lock=workspace.write_lock)
