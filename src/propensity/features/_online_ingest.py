"""Straight-line ingest functions for the online engine, generated once per event type.

The online engine takes an event into every aggregate window and session list its type feeds. Written as
loops over groups and windows, the interpreter spends most of that time on the loops themselves: unpacking
``(state, bucket, n)`` tuples, branching on flags known when the plan is built, calling a method per operation.
Here the loops are unrolled once per event type into Python source, with the windows' constants, the
accumulator slots and the operations written in. The common cases are inlined (a lifetime accumulator; a
window's first state; a bucket the customer already holds; a new bucket while every held one is still inside the
window; a quiet customer whose buckets have all left it); the rest, dropping some buckets and re-totalling, call
the group's general ``update_window``. The steps are those of the loop form, in the same order, so the state is
exactly the same whichever path ran (``tests/features/test_feature_parity.py`` checks it).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

# Positions in the engine's internal event tuple, and accumulator operation codes (``online.py`` uses these).
EID, CID, TYPE, ET, AV = 0, 1, 2, 3, 4
SUM, MIN, MAX, SET, LAST = range(5)


class GroupLike(Protocol):
    """What the generator reads from a filter group (``online._FilterGroup``)."""

    pred: Callable[[tuple[Any, ...]], bool] | None
    simple: bool
    has_last: bool
    ops: tuple[tuple[int, int], ...]
    getters: tuple[Callable[[tuple[Any, ...]], Any], ...]
    positions: tuple[int | None, ...]  # the event tuple position of each getter's field, None if computed
    hot: tuple[tuple[int, int, int], ...]

    def update_window(
        self, aggs: list[Any], si: int, b: int, n: int, et: int, floor: int, key: Any, vals: Sequence[Any]
    ) -> None: ...


class SessionLike(Protocol):
    """What the generator reads from a session group (``online._SessionGroup``)."""

    idx: int
    horizon: int
    filters: tuple[tuple[int, frozenset[str] | None, Callable[[tuple[Any, ...]], bool] | None], ...]


Ingest = Callable[[Any, tuple[Any, ...]], None]


def _add_lines(acc: str, group: GroupLike) -> list[str]:
    """Source lines adding the event (``et``, ``key``, values ``v0``...) into the accumulator named ``acc``."""
    lines = [  # the newest first: events arrive about in time order (min <= max, so the order is free)
        f"{acc}[0] += 1",
        f"if et > {acc}[2]:",
        f"    {acc}[2] = et",
        f"elif et < {acc}[1]:",
        f"    {acc}[1] = et",
    ]
    for j, (code, slot) in enumerate(group.ops):
        v = f"v{j}"
        if code == SUM:
            lines += [f"if {v} is not None:", f"    {acc}[{slot}] += {v}", f"    {acc}[{slot + 1}] += 1"]
        elif code == MIN:
            lines += [
                f"if {v} is not None and ({acc}[{slot}] is None or {v} < {acc}[{slot}]):",
                f"    {acc}[{slot}] = {v}",
            ]
        elif code == MAX:
            lines += [
                f"if {v} is not None and ({acc}[{slot}] is None or {v} > {acc}[{slot}]):",
                f"    {acc}[{slot}] = {v}",
            ]
        elif code == SET:
            lines += [
                f"if {v} is not None:",
                f"    if {acc}[{slot}] is None:",
                f"        {acc}[{slot}] = {{{v}}}",
                "    else:",
                f"        {acc}[{slot}].add({v})",
            ]
        else:  # LAST: the value of the greatest (event_time, available_at, event_id)
            lines += [
                f"if {v} is not None and ({acc}[{slot}] is None or key > {acc}[{slot}]):",
                f"    {acc}[{slot}] = key",
                f"    {acc}[{slot + 1}] = {v}",
            ]
    return lines


def _new_expr(group: GroupLike) -> str:
    """A source expression for a fresh accumulator holding just this event (as ``_FilterGroup.new``)."""
    items = ["1", "et", "et"]
    for j, (code, _slot) in enumerate(group.ops):
        v = f"v{j}"
        if code == SUM:
            items += [f"0.0 if {v} is None else {v}", f"0 if {v} is None else 1"]
        elif code == SET:
            items.append(f"None if {v} is None else {{{v}}}")
        elif code == LAST:
            items += [f"None if {v} is None else key", v]
        else:
            items.append(v)
    return "[" + ", ".join(items) + "]"


def compile_ingest(
    event_type: str, groups: Sequence[GroupLike], sessions: Sequence[SessionLike]
) -> tuple[Ingest, str]:
    """The function ``ingest(customer_state, event)`` for events of ``event_type``, and its source.

    ``groups`` and ``sessions`` are those this event type feeds (in the engine's order).
    """
    ns: dict[str, Any] = {"insort": bisect.insort, "bisect_right": bisect.bisect_right}
    body: list[str] = ["et = ev[3]", "floor = st.floor"]
    if groups:
        body.append("aggs = st.aggs")
    # One bucket index and one floor bucket per distinct bucket width, shared by every window of that width.
    widths = sorted({b for g in groups for _, b, _ in g.hot if b})
    for b in widths:
        body += [f"k{b} = et // {b}", f"f{b} = floor // {b}"]
    for gi, g in enumerate(groups):
        ns[f"g{gi}_update"] = g.update_window
        block: list[str] = []
        for j, (getter, pos) in enumerate(zip(g.getters, g.positions, strict=True)):
            if pos is None:
                ns[f"g{gi}_get{j}"] = getter
                block.append(f"v{j} = g{gi}_get{j}(ev)")
            else:
                block.append(f"v{j} = ev[{pos}]")
        vals = "()" if g.simple else "(" + "".join(f"v{j}, " for j in range(len(g.ops))) + ")"
        block.append(f"vals = {vals}")
        block.append("key = (et, ev[4], ev[0])" if g.has_last else "key = ()")
        for si, b, n in g.hot:
            if not b:
                new = _new_expr(g)
                block += [f"acc = aggs[{si}]", "if acc is None:", f"    aggs[{si}] = {new}", "else:"]
                block += ["    " + line for line in _add_lines("acc", g)]
                continue
            new = copy = _new_expr(g)  # a second fresh accumulator is a copy of the first, sets included
            kmin = f"f{b} - {n - 1}"  # the oldest bucket any read at or after the floor can still cover
            block += [
                f"if k{b} >= {kmin}:",
                f"    state = aggs[{si}]",
                "    if state is None:",
                f"        acc = {new}",
                f"        aggs[{si}] = [{{k{b}: acc}}, {copy}, k{b}, k{b}]",
                "    else:",
                "        buckets = state[0]",
                f"        acc = buckets.get(k{b})",
                "        if acc is not None:",
            ]
            block += ["            " + line for line in _add_lines("acc", g)]
            block.append("            tot = state[1]")
            block += ["            " + line for line in _add_lines("tot", g)]
            block += [
                # A new bucket while every bucket held is still inside the window.
                f"        elif state[2] >= {kmin}:",
                f"            buckets[k{b}] = {new}",
                f"            if k{b} > state[3]:",
                f"                state[3] = k{b}",
                f"            elif k{b} < state[2]:",
                f"                state[2] = k{b}",
                "            tot = state[1]",
            ]
            block += ["            " + line for line in _add_lines("tot", g)]
            block += [
                # Every bucket held has left the window (a quiet customer): start again from this one.
                f"        elif state[3] < {kmin}:",
                "            buckets.clear()",
                f"            buckets[k{b}] = acc = {new}",
                f"            state[1] = {copy}",
                f"            state[2] = state[3] = k{b}",
                "        else:",
                f"            g{gi}_update(aggs, {si}, {b}, {n}, et, floor, key, vals)",
            ]
        if g.pred is not None:
            ns[f"g{gi}_pred"] = g.pred
            body.append(f"if g{gi}_pred(ev):")
            body += ["    " + line for line in block]
        else:
            body += block
    if sessions:
        body.append("lists = st.sessions")
    for si, s in enumerate(sessions):
        # The mask's type tests are decided here (the event type is known); only predicates run per event.
        fixed = 0
        mask_terms: list[str] = []
        for bit, types, pred in s.filters:
            if types is not None and event_type not in types:
                continue
            if pred is None:
                fixed |= bit
            else:
                ns[f"s{si}_pred{bit}"] = pred
                mask_terms.append(f"({bit} if s{si}_pred{bit}(ev) else 0)")
        mask = " | ".join([str(fixed), *mask_terms])
        body += [
            f"lo = floor - {s.horizon}",
            "if et > lo:",
            f"    lst = lists[{s.idx}]",
            f"    item = (et, {mask})",
            "    if lst is None:",
            f"        lists[{s.idx}] = [item]",
            "    elif item >= lst[-1]:",  # the usual case: events arrive about in time order
            "        lst.append(item)",
            "        if lst[0][0] <= lo:",
            "            del lst[: bisect_right(lst, (lo, 1 << 62))]",
            "    else:",
            "        insort(lst, item)",
            "        if lst[0][0] <= lo:",
            "            del lst[: bisect_right(lst, (lo, 1 << 62))]",
        ]
    source = "def ingest(st, ev):\n" + "".join("    " + line + "\n" for line in body)
    exec(compile(source, f"<online ingest: {event_type}>", "exec"), ns)
    return ns["ingest"], source
