"""The live spool and the live ingest core: durable appends (group commit), moves into the log exactly once,
torn tails ignored, bad stream records quarantined with where they came from."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from tests.conftest import write_spec

from propensity.events.live import EventIdIndex, LiveIngest, Origin, RejectedBatch
from propensity.events.log import DuckDBEventLog
from propensity.events.spool import KIND_EVENTS, SpoolWriter, move_spools, pending_segments, read_segment
from propensity.workspace import Workspace

SPEC = "sources: []\n"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _ingest(ws: Workspace, **kw: object) -> LiveIngest:
    log = DuckDBEventLog(ws.db_path)
    index = EventIdIndex()
    with ws.write_lock(), log.connection() as con:
        index.load(con)
    return LiveIngest(ws.spec.events, SpoolWriter(log.spool_dir, "test", fsync=False, **kw), index=index)  # type: ignore[arg-type]


def _ids(ws: Workspace) -> list[str]:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return [r[0] for r in con.execute("SELECT event_id FROM events ORDER BY event_id").fetchall()]


def test_concurrent_appends_are_all_durable_in_order_per_thread(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "t", fsync=True)
    done: list[int] = []

    def work(k: int) -> None:
        for i in range(40):
            writer.append(KIND_EVENTS, pa.table({"k": [k], "i": [i]}))
        done.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [r for _, table, _ in read_segment(writer.path, 0) for r in table.to_pylist()]
    assert len(rows) == 240 and sorted(done) == list(range(6))
    for k in range(6):
        assert [r["i"] for r in rows if r["k"] == k] == list(range(40))
    writer.close()


def test_spooled_events_reach_the_log_once_and_the_spool_goes_away(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    live = _ingest(ws)
    first = live.accept([{"event_id": f"e{i}", "customer_id": "c1", "event_type": "page_view", "event_time": _now()}
                         for i in range(5)])  # fmt: skip
    assert (first.accepted, first.duplicates) == (5, 0)
    again = live.accept([{"event_id": "e1", "customer_id": "c1", "event_type": "page_view", "event_time": _now()},
                         {"event_id": "e9", "customer_id": "c1", "event_type": "page_view", "event_time": _now()}])  # fmt: skip
    assert (again.accepted, again.duplicates) == (1, 1)
    assert again.events.column("event_id").to_pylist() == ["e9"]
    assert _ids(ws) == ["e0", "e1", "e2", "e3", "e4", "e9"]  # a reader moved the spool in first
    with ws.write_lock(), DuckDBEventLog(ws.db_path).connection(move_spools=False) as con:
        assert move_spools(con, DuckDBEventLog(ws.db_path).spool_dir).records == 0  # nothing twice
        (api,) = con.execute("SELECT count(*) FROM events WHERE source = 'api'").fetchall()[0]
    assert api == 6
    live.close()  # the segment is closed: the next move deletes it
    with ws.write_lock(), DuckDBEventLog(ws.db_path).connection() as con:
        assert con.execute("SELECT count(*) FROM spool_progress").fetchall()[0][0] == 0
    assert pending_segments(DuckDBEventLog(ws.db_path).spool_dir) == []


def test_a_torn_tail_is_ignored_and_what_was_acknowledged_is_moved(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    live = _ingest(ws)
    live.accept(
        [{"event_id": "ok", "customer_id": "c1", "event_type": "purchase", "event_time": _now(), "amount": 3}]
    )
    path = live.spool.path
    live.close()
    whole = path.read_bytes()
    with open(path, "ab") as f:  # a second record cut short by a crash: header and half its payload
        f.write(whole[: len(whole) // 2])
    assert _ids(ws) == ["ok"]
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        amount = con.execute("SELECT amount, source, available_at <= ingested_at FROM events").fetchall()
    assert amount == [(3.0, "api", True)]


def test_a_batch_with_a_bad_event_is_rejected_whole_and_nothing_is_spooled(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    live = _ingest(ws)
    with pytest.raises(RejectedBatch) as info:
        live.accept([{"customer_id": "c1", "event_type": "page_view", "event_time": _now()},
                     {"customer_id": "c1", "event_type": "teleport", "event_time": _now()}])  # fmt: skip
    assert info.value.errors[0].index == 1 and info.value.errors[0].field == "event_type"
    assert live.spool.records_written == 0
    live.close()


def test_bad_stream_records_are_quarantined_with_their_origin(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    live = _ingest(ws)
    records = [
        b'{"event_id": "s1", "customer_id": "c1", "event_type": "page_view", "event_time": "2025-01-01T00:00:00Z"}',
        b"{not json",
        b'["a list"]',
        b'{"event_id": "s2", "customer_id": "", "event_type": "page_view", "event_time": "2025-01-01T00:00:00Z"}',
        b'{"event_id": "s3", "customer_id": "c2", "event_type": "purchase", "event_time": "2025-01-01T00:00:00Z", "amount": {"x": 1}}',
    ]
    origins = [Origin("kafka://web/0", 100 + i, f"topic web partition 0 offset {100 + i}") for i in range(5)]
    source = ws.spec.events  # the rules; the source is the stream's
    from propensity.config.spec import EventSource

    result = live.accept_records(records, origins, EventSource(name="web", path=""))
    assert (result.received, result.accepted, result.quarantined) == (5, 1, 4)
    assert source is not None
    live.close()
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        rows = con.execute(
            "SELECT source, source_file, row_number, reason, detail, raw FROM quarantine ORDER BY row_number"
        ).fetchall()
        assert con.execute("SELECT event_id, source FROM events").fetchall() == [("s1", "web")]
    assert [(r[1], r[2]) for r in rows] == [("kafka://web/0", 101), ("kafka://web/0", 102), ("kafka://web/0", 103),
                                            ("kafka://web/0", 104)]  # fmt: skip
    assert all(r[0] == "web" and "topic web partition 0 offset" in r[4] for r in rows)
    assert rows[0][5] == "{not json" and "customer_id" in rows[2][3] and rows[3][3].startswith("amount")


def test_the_id_index_knows_the_log_and_what_it_claimed() -> None:
    index = EventIdIndex()
    index.add_sorted(np.array([5, 9, 12], np.uint64))
    fresh = index.claim(np.array([9, 10, 10, 13], np.uint64))
    assert fresh.tolist() == [False, True, False, True]
    index.release(np.array([13], np.uint64))
    assert index.claim(np.array([13], np.uint64)).tolist() == [True]
    assert index.sorted_hashes.tolist() == [5, 9, 10, 12, 13]


def test_concurrent_batches_validated_together_each_get_their_own_answer(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    live = _ingest(ws)
    results: dict[int, Any] = {}

    def post(k: int) -> None:
        batch = [{"event_id": f"t{k}-{i}", "customer_id": f"c{k}", "event_type": "page_view", "event_time": _now()}
                 for i in range(30)]  # fmt: skip
        if k % 4 == 3:
            batch[7]["event_type"] = "teleport"
        try:
            results[k] = live.accept(batch)
        except RejectedBatch as exc:
            results[k] = exc

    threads = [threading.Thread(target=post, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, r in results.items():
        if k % 4 == 3:
            assert isinstance(r, RejectedBatch) and r.errors[0].index == 7
        else:
            assert r.accepted == 30 and set(r.events.column("customer_id").to_pylist()) == {f"c{k}"}
    live.close()
    assert len(_ids(ws)) == 9 * 30
