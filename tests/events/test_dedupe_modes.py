"""A source's dedupe rule (sources[].dedupe): event_id, content, or none (identical line items all kept); every
mode leaves re-ingesting the same file a no-op."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import write_spec

from propensity.config.errors import SpecError
from propensity.events.ingest import IngestError, ingest_files
from propensity.events.log import open_event_log
from propensity.workspace import Workspace

# Two identical lines (the same product twice in one basket), a third line, then the first line again.
LINES = """customer_id,event_type,event_time,amount,sku,basket
h1,purchase,2024-01-01T10:00:00Z,2.5,milk,b1
h1,purchase,2024-01-01T10:00:00Z,2.5,milk,b1
h1,purchase,2024-01-01T10:00:00Z,4.0,bread,b1
h1,purchase,2024-01-01T10:00:00Z,2.5,milk,b1
"""
WITH_IDS = """id,customer_id,event_type,event_time,amount
x1,h1,purchase,2024-01-01T10:00:00Z,2.5
x1,h1,purchase,2024-01-01T10:00:00Z,9.0
x2,h1,purchase,2024-01-01T10:00:00Z,2.5
,h1,purchase,2024-01-01T11:00:00Z,1.0
"""


def project(root: Path, dedupe: str | None, *, ids: bool = False) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    mode = f"\n    dedupe: {dedupe}" if dedupe else ""
    columns = "\n    columns: {event_id: id}" if ids else ""
    return write_spec(root, f"sources:\n  - name: lines\n    path: lines.csv{columns}{mode}\n")


def ingest(ws: Workspace, text: str, *, force: bool = False) -> tuple[int, int, int]:
    path = ws.root / "lines.csv"
    path.write_text(text, encoding="utf-8")
    r = ingest_files(ws, [path], force=force)
    return r.accepted, r.duplicates, r.quarantined


def amounts(ws: Workspace) -> list[float]:
    with open_event_log(ws).connection() as con:
        return [r[0] for r in con.execute("SELECT amount FROM events ORDER BY amount, event_id").fetchall()]


@pytest.mark.parametrize(("mode", "kept"), [(None, 2), ("content", 2), ("none", 4)])
def test_identical_lines_are_one_event_by_content_and_all_kept_with_none(
    tmp_path: Path, mode: str | None, kept: int
) -> None:
    ws = project(tmp_path, mode)
    assert ingest(ws, LINES) == (kept, 4 - kept, 0)
    assert ingest(ws, LINES, force=True) == (0, 4, 0)  # re-ingesting adds nothing, in every mode
    assert len(amounts(ws)) == kept


def test_none_numbers_repeats_across_batches_and_files_in_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_INGEST_BATCH_ROWS", "1")  # every line in its own batch
    ws = project(tmp_path, "none")
    assert ingest(ws, LINES) == (4, 0, 0)
    more = LINES + "h1,purchase,2024-01-01T10:00:00Z,2.5,milk,b1\n"  # the same file with a 4th milk line
    assert ingest(ws, more) == (1, 4, 0)
    assert amounts(ws) == [2.5, 2.5, 2.5, 2.5, 4.0]


def test_event_id_keeps_the_first_row_of_an_id_and_quarantines_rows_without_one(tmp_path: Path) -> None:
    ws = project(tmp_path, "event_id", ids=True)
    assert ingest(ws, WITH_IDS) == (2, 1, 1)
    assert amounts(ws) == [2.5, 2.5]
    content = project(tmp_path / "c", "content", ids=True)
    assert ingest(content, WITH_IDS) == (3, 1, 0)  # x1/2.5 and x2/2.5 are the same content


def test_none_with_ids_keeps_rows_sharing_an_id(tmp_path: Path) -> None:
    ws = project(tmp_path, "none", ids=True)
    assert ingest(ws, WITH_IDS) == (4, 0, 0)


def test_event_id_without_an_id_column_and_a_bad_mode_are_clear_errors(tmp_path: Path) -> None:
    ws = project(tmp_path, "event_id")
    with pytest.raises(IngestError, match="dedupe: event_id but the file has no 'event_id' column"):
        ingest(ws, LINES)
    with pytest.raises(SpecError, match=r"sources\[0\].dedupe"):
        project(tmp_path / "bad", "rows")
