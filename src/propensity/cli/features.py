"""`propensity features show|describe`: look at the declared features and their values from the event log.

``show`` computes one customer's vector with the offline engine (the same query training uses), and with
``--explain`` lists, per feature, the events that fed it (visible as of the time, inside the feature's window,
passing its filter). ``describe`` prints the definitions, the feature-set version and summary statistics over
a sample of customers. ``audit``, ``materialize`` and ``backfill`` come from :mod:`propensity.cli.features_ops`
and are merged into this group.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from propensity.cli import features_ops
from propensity.cli._common import (
    JsonOption,
    WorkspaceOption,
    console,
    open_workspace,
    parse_as_of,
    print_json,
    warn_stale,
)
from propensity.core.errors import PropensityError

features_app = typer.Typer(
    help=(
        "Inspect features: one customer's vector (and where each value comes from), or the whole set's "
        "definitions and statistics.\n\n"
        "Examples:\n\n"
        "    propensity features show c42 -w demo\n\n"
        "    propensity features show c42 --as-of 2025-10-06 --explain -w demo\n\n"
        "    propensity features describe --sample 2000 -w demo"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
features_app.add_typer(features_ops.app)

AsOfOption = typer.Option(
    None,
    "--as-of",
    help="The time to compute as of: YYYY-MM-DD or an ISO datetime (in the project's timezone unless it has "
    "an offset). Default: now, or the event log's newest event when propensity.yaml says `clock: data`.",
)


def _fmt(value: Any) -> str:
    if value is None:
        return "[dim]null[/]"
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _as_of(con: Any, ws: Any, text: str | None) -> datetime:
    """--as-of, else the project's clock (now, or the log's end under `clock: data`); warns on stale data."""
    from propensity.events.clock import DataClock

    clock = DataClock.of(con, ws.spec)
    if clock.newest_event is None:
        raise PropensityError("the event log is empty; run `propensity ingest` first")
    t = clock.as_of(parse_as_of(text, ws.spec.timezone) if text else None)
    warn_stale(clock.warning(t))
    return t


def _require_features(ws: Any) -> Any:
    if not ws.spec.features:
        raise PropensityError(f"{ws.root / 'propensity.yaml'} declares no features; add a features: section")
    return ws.spec.features


@features_app.command("show")
def show(
    customer: str = typer.Argument(..., help="The customer id."),
    as_of: str | None = AsOfOption,
    explain: bool = typer.Option(False, "--explain", help="For each feature, list the events that fed it."),
    events: int = typer.Option(5, "--events", min=1, help="With --explain: the newest N events per feature."),
    workspace: Path = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """One customer's feature vector, computed by the offline engine as of a time.

    Values obey the visibility rule: only events with available_at and event_time at or before the time count.
    With --explain each feature is followed by the events inside its window that pass its filter (newest
    first; the count is of all of them), the attribute versions visible then, or what a derived feature is
    computed from.

    Examples:

        propensity features show c42 -w demo

        propensity features show c42 --as-of 2025-10-06 --explain --events 3 -w demo
    """
    from propensity.events.log import open_event_log
    from propensity.features import FeaturePlan
    from propensity.features.inspect import explain_feature, feature_vector

    ws = open_workspace(workspace, require_spec=True)
    plan = FeaturePlan(_require_features(ws))
    with open_event_log(ws).connection(read_only=True) as con:
        t = _as_of(con, ws, as_of)
        (known,) = con.execute(
            "SELECT (SELECT count(*) FROM events WHERE customer_id = $c) "
            "+ (SELECT count(*) FROM attributes WHERE customer_id = $c)",
            {"c": customer},
        ).fetchall()[0]
        if not known:
            raise PropensityError(f"no events or attributes for customer {customer!r} in {ws.db_path}")
        values = feature_vector(con, plan, customer, t)
        if as_json:
            out: dict[str, Any] = {"customer_id": customer, "as_of": t, "feature_set_version": plan.version,
                                   "features": {f.name: values[f.name] for f in plan.features}}  # fmt: skip
            if explain:
                out["explain"] = {}
                for f in plan.features:
                    ex = explain_feature(con, f, customer, t, limit=events)
                    out["explain"][f.name] = {"summary": ex.summary, "total_rows": ex.total_rows,
                                              "rows": [dict(zip(ex.columns, r, strict=True)) for r in ex.rows]}  # fmt: skip
            print_json(out)
            return
        console.print(
            f"[bold]{customer}[/] as of {_fmt(t)} UTC — feature set {plan.version}, {len(plan.names)} features"
        )
        if not explain:
            table = Table()
            for col in ("feature", "kind", "value"):
                table.add_column(col, justify="right" if col == "value" else "left")
            for f in plan.features:
                table.add_row(f.name, f.kind, _fmt(values[f.name]))
            console.print(table)
            return
        for f in plan.features:
            ex = explain_feature(con, f, customer, t, limit=events)
            console.print(f"\n[bold]{f.name}[/] = {_fmt(values[f.name])}   [dim]{ex.summary}[/]")
            if ex.columns:
                if not ex.total_rows:
                    console.print("  [dim](no contributing events)[/]")
                    continue
                sub = Table(show_edge=False, pad_edge=False)
                for col in ex.columns:
                    sub.add_column(col)
                for row in ex.rows:
                    sub.add_row(*(_fmt(v) for v in row))
                console.print(sub)
                if ex.total_rows > len(ex.rows):
                    console.print(
                        f"  [dim]… {ex.total_rows - len(ex.rows):,} more ({ex.total_rows:,} in all)[/]"
                    )


@features_app.command("describe")
def describe(
    sample: int = typer.Option(1000, "--sample", min=1, help="Customers in the sample spine."),
    as_of: str | None = AsOfOption,
    seed: int = typer.Option(0, "--seed", help="Which customers are sampled (reproducible)."),
    workspace: Path = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """The feature definitions, the feature-set version, and statistics per feature over a sample.

    Each sampled customer (up to --sample, drawn from the customers with events) is computed as of one time;
    per feature the table gives the null rate, mean (booleans: share true), min and max. A feature that is
    always null or never varies is usually a mistake in its filter or window.

    Examples:

        propensity features describe -w demo

        propensity features describe --sample 5000 --as-of 2025-10-06 -w demo
    """
    from propensity.events.log import open_event_log
    from propensity.features import FeaturePlan
    from propensity.features.inspect import describe_definition, describe_features

    ws = open_workspace(workspace, require_spec=True)
    plan = FeaturePlan(_require_features(ws))
    with open_event_log(ws).connection(read_only=True) as con:
        t = _as_of(con, ws, as_of)
        table, stats = describe_features(con, plan, as_of=t, sample=sample, seed=seed)
    if as_json:
        print_json({
            "feature_set_version": plan.version, "customers": table.num_rows, "as_of": t,
            "features": [{"name": f.name, "kind": f.kind, "definition": describe_definition(f), "type": s.type,
                          "null_rate": s.null_rate, "mean": s.mean, "min": s.min, "max": s.max}
                         for f, s in zip(plan.features, stats, strict=True)],
        })  # fmt: skip
        return
    console.print(
        f"[bold]feature set {plan.version}[/]: {len(plan.names)} features, statistics over "
        f"{table.num_rows:,} customers as of {_fmt(t)} UTC"
    )
    out = Table()
    for col in ("feature", "kind", "definition", "type", "null %", "mean", "min", "max"):
        out.add_column(col, justify="right" if col in ("null %", "mean", "min", "max") else "left")
    for f, s in zip(plan.features, stats, strict=True):
        style = "yellow" if s.null_rate == 1.0 or (s.min is not None and s.min == s.max) else None
        out.add_row(
            f.name,
            f.kind,
            describe_definition(f),
            s.type,
            f"{100 * s.null_rate:.1f}",
            _fmt(s.mean),
            _fmt(s.min),
            _fmt(s.max),
            style=style,
        )
    console.print(out)
