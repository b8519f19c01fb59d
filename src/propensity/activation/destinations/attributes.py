"""Current customer attributes (identifiers, consent flags) from the workspace's ``attributes`` table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa

from propensity.events.log import open_event_log
from propensity.workspace import Workspace


class AttributeLookup(Protocol):
    def lookup(self, customer_ids: Iterable[str], names: Sequence[str]) -> dict[str, dict[str, str]]:
        """``{customer_id: {attribute: value}}`` for the customers and attribute names asked (values as text)."""
        ...


class WorkspaceAttributes:
    """Each customer's latest value of each attribute that is valid now (greatest ``valid_from`` ≤ now)."""

    def __init__(self, workspace: Workspace, *, as_of: datetime | None = None) -> None:
        self.workspace = workspace
        self.as_of = as_of

    def lookup(self, customer_ids: Iterable[str], names: Sequence[str]) -> dict[str, dict[str, str]]:
        ids = pa.table({"customer_id": pa.array(sorted(set(customer_ids)), pa.string())})
        if ids.num_rows == 0 or not names:
            return {}
        as_of = self.as_of or datetime.now(UTC)
        log = open_event_log(self.workspace)
        with self.workspace.write_lock(), log.connection() as con:
            con.register("wanted_ids", ids)
            rows = con.execute(
                """
                SELECT a.customer_id, a.attribute, arg_max(a.value, a.valid_from)
                FROM attributes a JOIN wanted_ids w USING (customer_id)
                WHERE a.attribute IN (SELECT unnest(?)) AND a.valid_from <= ?
                GROUP BY 1, 2
                """,
                [list(names), as_of],
            ).fetchall()
            con.unregister("wanted_ids")
        out: dict[str, dict[str, str]] = {}
        for cid, attribute, value in rows:
            if value is not None:
                out.setdefault(str(cid), {})[str(attribute)] = str(value)
        return out
