"""Every score store behaves the same: DuckDB (the default), Parquet, and PostgreSQL (a real server)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from propensity.config.spec import parse_spec
from propensity.core.score_row import SCORE_ROW_COLUMNS, SCORE_ROW_SCHEMA
from propensity.scoring import score_store as ss
from propensity.scoring.score_store import (
    DuckDBScoreStore,
    ParquetScoreStore,
    PostgresScoreStore,
    ScoreStore,
    ScoreStoreError,
    ScoringRun,
    drop_expired,
    new_run_id,
    open_score_store,
)
from propensity.workspace import Workspace

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
_schemas = itertools.count()


def make_run(scored_at: datetime, n_customers: int = 3, **overrides: Any) -> tuple[pa.Table, ScoringRun]:
    run_id = overrides.pop("run_id", new_run_id(scored_at))
    customers = [f"c{i}" for i in range(n_customers)]
    rows: dict[str, list[Any]] = {c: [] for c in SCORE_ROW_COLUMNS}
    for cid, action in itertools.product(customers, ["buy_7d", "churn_30d"]):
        eligible = not (action == "churn_30d" and cid == "c0")
        rows["customer_id"].append(cid)
        rows["action"].append(action)
        rows["score"].append(0.25 if eligible else None)
        rows["percentile"].append(61.5 if eligible else None)
        rows["segment"].append("medium" if eligible else None)
        rows["eligible"].append(eligible)
        rows["next_best_action"].append("buy_7d")
        rows["reason_codes"].append(
            '[{"feature": "pv_7d", "value": 3, "contribution": 0.4, "direction": "up"}]'
        )
        rows["holdout_group"].append(None)
        rows["model_id"].append(f"m-1/{action}")
        rows["model_version"].append("m-1")
        rows["feature_set_version"].append("fs-1")
        rows["scoring_run_id"].append(run_id)
        rows["scored_at"].append(scored_at)
        rows["expiration_at"].append(scored_at + timedelta(days=1))
        rows["decision_policy"].append("ev_max" if action == "buy_7d" else "ev_lower")
        rows["consent"].append('{"email": true}')
        rows["fallback"].append(False)
        rows["as_of"].append(scored_at)
        rows["trigger_id"].append(None)
    table = pa.Table.from_pydict(rows, schema=SCORE_ROW_SCHEMA)
    run = ScoringRun(
        run_id=run_id, scored_at=scored_at, expiration_at=scored_at + timedelta(days=1), as_of=scored_at,
        model_version="m-1", feature_set_version="fs-1", rows=table.num_rows,
        segment_cuts={"buy_7d": (0.1, 0.4)}, segment_names={"buy_7d": ("low", "medium", "high")},
        contract_version="1.0.0", details={"meanings": {"buy_7d": "probability of at least one purchase"}},
        **overrides,
    )  # fmt: skip
    return table, run


@pytest.fixture(params=["duckdb", "parquet", pytest.param("postgres", marks=pytest.mark.service)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScoreStore]:
    if request.param == "duckdb":
        yield DuckDBScoreStore(tmp_path / "ws.duckdb")
    elif request.param == "parquet":
        yield ParquetScoreStore(tmp_path / "scores")
    else:
        server = request.getfixturevalue("postgres_server")
        yield PostgresScoreStore(server.url, schema=f"scores_test_{next(_schemas)}")


def test_a_run_reads_back_exactly_as_written(store: ScoreStore) -> None:
    rows, run = make_run(T0)
    store.write_run(rows, run)
    back = store.read_run(run.run_id)
    assert back.schema == SCORE_ROW_SCHEMA
    assert (
        back.to_pylist() == rows.sort_by([("action", "ascending"), ("customer_id", "ascending")]).to_pylist()
    )
    assert store.get_run(run.run_id) == run


def test_runs_are_listed_newest_first_and_never_overwritten(store: ScoreStore) -> None:
    written = []
    for k in range(3):
        rows, run = make_run(T0 + timedelta(hours=k), n_customers=k + 1)
        store.write_run(rows, run)
        written.append(run)
    assert [r.run_id for r in store.runs()] == [r.run_id for r in reversed(written)]
    assert [r.run_id for r in store.runs(limit=2)] == [written[2].run_id, written[1].run_id]
    # Each run keeps its own rows.
    assert [store.read_run(r.run_id).num_rows for r in written] == [2, 4, 6]
    rows, _ = make_run(T0, n_customers=1, run_id=written[0].run_id)
    with pytest.raises(ScoreStoreError, match="never overwritten"):
        store.write_run(rows, written[0])
    assert store.read_run(written[0].run_id).num_rows == 2


def test_latest_run_before_a_run_or_a_time_and_by_status(store: ScoreStore) -> None:
    assert store.latest_run() is None
    a_rows, a = make_run(T0)
    b_rows, b = make_run(T0 + timedelta(hours=1), status="blocked")
    store.write_run(a_rows, a)
    store.write_run(b_rows, b)
    assert store.latest_run() == b
    assert store.latest_run(status="complete") == a
    assert store.latest_run(before=b.run_id) == a
    assert store.latest_run(before=a.run_id) is None
    assert store.latest_run(before=(T0 + timedelta(minutes=30)).isoformat()) == a
    with pytest.raises(ScoreStoreError, match="neither a known run id nor"):
        store.latest_run(before="yesterday")


def test_update_run_changes_status_and_merges_details_only(store: ScoreStore) -> None:
    rows, run = make_run(T0)
    store.write_run(rows, run)
    updated = store.update_run(run.run_id, status="blocked", details={"gates": {"psi": "failed"}})
    assert updated.status == "blocked"
    assert updated.details == {**run.details, "gates": {"psi": "failed"}}
    assert store.get_run(run.run_id) == updated
    assert store.read_run(run.run_id).num_rows == rows.num_rows
    with pytest.raises(ScoreStoreError, match="not allowed"):
        store.update_run(run.run_id, status="done")


def test_unknown_runs_and_inconsistent_rows_are_refused(store: ScoreStore) -> None:
    rows, run = make_run(T0)
    with pytest.raises(ScoreStoreError, match="no scoring run 'r-nope'"):
        store.read_run("r-nope")
    with pytest.raises(ScoreStoreError, match="record says 99 rows"):
        store.write_run(rows, ScoringRun(**{**run.__dict__, "rows": 99}))
    other = rows.set_column(
        SCORE_ROW_COLUMNS.index("scoring_run_id"), "scoring_run_id", pa.array(["r-other"] * rows.num_rows)
    )
    with pytest.raises(ScoreStoreError, match="carry scoring_run_id r-other"):
        store.write_run(other, run)
    with pytest.raises(ScoreStoreError, match="lack column"):
        store.write_run(rows.drop_columns(["segment"]), run)
    assert store.runs() == []


def _crash_during_write(store: ScoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store fail after the run's rows have started going in."""

    def boom(*_a: Any, **_k: Any) -> Any:
        raise OSError("disk full (simulated)")

    if isinstance(store, DuckDBScoreStore):
        monkeypatch.setattr(ScoringRun, "to_json", boom)  # the record is built after the rows are inserted
    elif isinstance(store, ParquetScoreStore):
        real = pq.write_table

        def half(table: pa.Table, where: Any, **kw: Any) -> None:
            real(table.slice(0, 1), where, **kw)
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(ss.pq, "write_table", half)
    else:
        import psycopg

        monkeypatch.setattr(psycopg.Copy, "write", boom)  # the record row is already inserted by then


def test_a_crashed_write_leaves_no_partial_run(store: ScoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
    good_rows, good = make_run(T0)
    store.write_run(good_rows, good)
    rows, run = make_run(T0 + timedelta(hours=1))
    with monkeypatch.context() as m:
        _crash_during_write(store, m)
        with pytest.raises(OSError, match="simulated"):
            store.write_run(rows, run)
    assert [r.run_id for r in store.runs()] == [good.run_id]
    with pytest.raises(ScoreStoreError):
        store.read_run(run.run_id)
    # The same run can be written again once the failure is gone, and nothing of the failed try shows.
    store.write_run(rows, run)
    assert store.read_run(run.run_id).num_rows == rows.num_rows
    if isinstance(store, DuckDBScoreStore):
        import duckdb

        with duckdb.connect(str(store.path), read_only=True) as con:
            n = con.execute("SELECT count(*) FROM scores").fetchall()[0][0]
        assert n == good_rows.num_rows + rows.num_rows


def test_parquet_store_ignores_and_sweeps_a_data_file_without_its_record(tmp_path: Path) -> None:
    store = ParquetScoreStore(tmp_path)
    rows, run = make_run(T0)
    pq.write_table(rows, tmp_path / f"{run.run_id}.parquet")  # as if the process died before the record
    assert store.runs() == []
    rows2, run2 = make_run(T0 + timedelta(hours=1))
    store.write_run(rows2, run2)
    assert not (tmp_path / f"{run.run_id}.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{run2.run_id}.json", f"{run2.run_id}.parquet"]


def test_expired_rows_are_dropped() -> None:
    rows, _ = make_run(T0)
    assert drop_expired(rows, T0 + timedelta(hours=23)).num_rows == rows.num_rows
    assert drop_expired(rows, T0 + timedelta(days=1)).num_rows == 0


def test_run_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_run_id(T0 + timedelta(seconds=k)) for k in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    same = {new_run_id(T0) for _ in range(200)}
    assert len(same) == 200


def test_open_score_store_follows_the_scoring_section(tmp_path: Path) -> None:
    def ws(section: dict[str, Any]) -> Workspace:
        return Workspace(tmp_path, parse_spec({"scoring": section}, root=tmp_path))

    assert isinstance(open_score_store(ws({})), DuckDBScoreStore)
    parquet = open_score_store(ws({"store": "parquet", "path": "out/scores"}))
    assert isinstance(parquet, ParquetScoreStore) and parquet.path == tmp_path / "out" / "scores"
    pg = open_score_store(ws({"store": "postgres", "url": "postgresql://x@h/db", "schema": "crm"}))
    assert isinstance(pg, PostgresScoreStore) and pg.schema == "crm"
    from propensity.config.errors import SpecError

    with pytest.raises(SpecError, match="needs url"):
        ws({"store": "postgres"})
    with pytest.raises(SpecError, match=r"scoring\.store"):
        ws({"store": "sqlite"})


def test_postgres_connection_failure_names_the_setting() -> None:
    from tests.services import free_port

    store = PostgresScoreStore(f"postgresql://nobody@127.0.0.1:{free_port()}/x?connect_timeout=2")
    with pytest.raises(ScoreStoreError, match=r"scoring\.url: cannot connect"):
        store.runs()


def test_rows_of_a_run_match_its_record(store: ScoreStore) -> None:
    rows, run = make_run(T0, n_customers=50)
    store.write_run(rows, run)
    back = store.read_run(run.run_id)
    assert pc.all(pc.equal(back.column("scoring_run_id"), run.run_id)).as_py()
    assert back.num_rows == store.get_run(run.run_id).rows == 100


def test_runs_stored_under_contract_1_read_back_with_their_as_of_and_take_new_runs(
    store: ScoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written before as_of and trigger_id existed: its rows come back with the run's as_of (and no
    trigger_id), and the next write adds the columns."""
    old_schema = pa.schema([f for f in SCORE_ROW_SCHEMA if f.name not in ("as_of", "trigger_id")])
    rows, run = make_run(T0)
    with monkeypatch.context() as m:
        m.setattr(ss, "SCORE_ROW_SCHEMA", old_schema)
        m.setattr(ss, "SCORE_ROW_COLUMNS", tuple(old_schema.names))
        m.setattr(ss, "_ADDED_COLUMNS", ())
        store.write_run(rows.select(old_schema.names), run)
    if isinstance(store, PostgresScoreStore):  # a new process opens the store (and migrates it once)
        store = PostgresScoreStore(store.url, schema=store.schema)
    back = store.read_run(run.run_id)
    assert back.schema == SCORE_ROW_SCHEMA
    assert set(back.column("as_of").to_pylist()) == {run.as_of}
    assert back.column("trigger_id").null_count == back.num_rows
    rows2, run2 = make_run(T0 + timedelta(hours=1))
    store.write_run(rows2, run2)
    assert store.read_run(run2.run_id).num_rows == rows2.num_rows
    assert store.read_run(run.run_id).num_rows == rows.num_rows
