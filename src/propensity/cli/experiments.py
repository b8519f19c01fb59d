"""`propensity experiments` and `propensity retrain`: holdouts, lift, uplift; champion vs challenger."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from propensity.cli._common import (
    WorkspaceOption,
    console,
    fmt_int,
    open_workspace,
    print_json,
    progress_bar,
)
from propensity.core.errors import PropensityError

experiments_app = typer.Typer(
    help="Holdout (control) groups, measured lift with 95% intervals, and uplift models.",
    no_args_is_help=True,
)

# No help= here: the callback's docstring (with its examples) is the command's help.
retrain_app = typer.Typer(invoke_without_command=True)


# ------------------------------------------------------------------------------------------- experiments
@experiments_app.command("list")
def list_(
    workspace: Path = WorkspaceOption,
    as_json: bool = typer.Option(False, "--json", help="Print the experiments as JSON (for scripts)."),
) -> None:
    """List the experiments (holdouts) of propensity.yaml and, for the latest scoring run, each group's size.

    Configure experiments in propensity.yaml (see docs/experiments.md), e.g. `experiments: {holdouts: [{name:
    q4-2026, control_share: 0.1, actions: [buy_7d]}]}`.

    Example:

        propensity experiments list -w demo
    """
    ws = open_workspace(workspace, require_spec=True)
    holdouts = ws.spec.experiments.holdouts
    if not holdouts and as_json:
        from propensity.experiments.imported import list_imported

        console.print_json(json.dumps({"holdouts": [], "imported": list_imported(ws)}))
        return
    if not holdouts:
        console.print(
            "No experiments: add `experiments.holdouts` to propensity.yaml (see docs/experiments.md)."
        )
        return
    counts: dict[tuple[str, str], int] = {}
    run_note = "no scoring run yet"
    try:
        from propensity.experiments.report import load_score_rows

        run_id, rows = load_score_rows(ws)
        for action, group in zip(rows.column("action").to_pylist(), rows.column("holdout_group").to_pylist(),
                                 strict=True):  # fmt: skip
            if group is not None:
                counts[(action, group)] = counts.get((action, group), 0) + 1
        run_note = f"latest scoring run {run_id}"
    except (PropensityError, ImportError):
        pass
    if as_json:
        from propensity.experiments.imported import list_imported

        out = []
        for h in holdouts:
            actions = h.actions or [a.name for a in ws.spec.actions]
            out.append({"name": h.name, "control_share": h.control_share, "actions": actions,
                        "treatment_rows": sum(counts.get((a, "treatment"), 0) for a in actions),
                        "control_rows": sum(counts.get((a, "control"), 0) for a in actions)})  # fmt: skip
        console.print_json(
            json.dumps({"scoring_run": run_note, "holdouts": out, "imported": list_imported(ws)})
        )
        return
    table = Table(title=f"experiments ({run_note})")
    for col in ("experiment", "control share", "actions", "treatment rows", "control rows"):
        table.add_column(col)
    for h in holdouts:
        actions = h.actions or [a.name for a in ws.spec.actions]
        treated = sum(counts.get((a, "treatment"), 0) for a in actions)
        control = sum(counts.get((a, "control"), 0) for a in actions)
        table.add_row(h.name, f"{h.control_share:g}", ", ".join(actions) if h.actions else "(all)",
                      fmt_int(treated), fmt_int(control))  # fmt: skip
    console.print(table)


@experiments_app.command("import")
def import_(
    assignments: Path = typer.Argument(
        ..., help="The assignment table (Parquet, CSV or JSONL): id, arm, assigned_at."
    ),
    outcomes: Path = typer.Option(
        None,
        "--outcomes",
        help="A separate outcome table joined on the id (default: the assignment table's columns).",
    ),
    name: str = typer.Option(None, "--name", help="The experiment's name (default: the file's name)."),
    arm: str = typer.Option("arm", "--arm", help="The arm column."),
    id_column: str = typer.Option(
        None, "--id", help="The id column (default: id or customer_id; else row numbers)."
    ),
    assigned_at: str = typer.Option(None, "--assigned-at", help="The assignment time column (optional)."),
    control: str = typer.Option(
        None, "--control", help="The control arm's value (default: the arm named like control)."
    ),
    outcome: list[str] = typer.Option(
        ...,
        "--outcome",
        help="An outcome column, optionally with its kind: converted, spend:continuous (repeatable).",
    ),
    segment: list[str] = typer.Option(
        None, "--segment", help="A column to break results down by (repeatable)."
    ),
    covariate: list[str] = typer.Option(
        None,
        "--covariate",
        help="Columns the uplift model may use (repeatable; default: every other column).",
    ),
    no_covariates: bool = typer.Option(False, "--no-covariates", help="Fit no uplift model."),
    missing_outcome: str = typer.Option(
        "zero", "--missing-outcome", help="An assigned id without an outcome row: zero (counts as 0) or drop."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts)."),
    workspace: Path = WorkspaceOption,
) -> None:
    """Import an experiment run elsewhere: assignments (id, arm, assigned_at) and outcomes, binary (converted)
    or continuous (spend). Rows are validated against the schema (docs/experiments.md); every rejected row is
    counted with its reason. No event log, scoring run or bundle is needed.

    Examples:

        propensity experiments import hillstrom.csv --arm segment --control "No E-Mail" \\
            --outcome visit --outcome conversion --outcome spend:continuous --segment channel -w shop

        propensity experiments import assignments.parquet --outcomes orders.parquet --id customer_id \\
            --assigned-at assigned_at --outcome converted --outcome revenue:continuous -w shop
    """
    from propensity.events.tables import read_table_file
    from propensity.experiments.imported import import_experiment

    ws = open_workspace(workspace)
    kinds: dict[str, str] = {}
    columns = []
    for o in outcome:
        col, _, kind = o.partition(":")
        columns.append(col)
        if kind:
            kinds[col] = kind
    result = import_experiment(
        ws, read_table_file(assignments), read_table_file(outcomes) if outcomes else None,
        name=name or assignments.name.split(".")[0].replace(" ", "-"), arm=arm, id_column=id_column,
        assigned_at=assigned_at, control=control, outcome_columns=columns, kinds=kinds, segments=segment or [],
        covariates=[] if no_covariates else (covariate or None), missing_outcome=missing_outcome,
    )  # fmt: skip
    if as_json:
        console.print_json(json.dumps(result.to_json()))
        return
    t = Table(title=f"experiment {result.name}: {fmt_int(result.rows)} rows")
    t.add_column("arm")
    t.add_column("rows", justify="right")
    for a, n in result.arms.items():
        t.add_row(a + (" (control)" if a == result.control else ""), fmt_int(n))
    console.print(t)
    console.print("outcomes: " + ", ".join(f"{k} ({v})" for k, v in result.outcomes.items()))
    for reason, n in result.rejected.items():
        console.print(f"[yellow]rejected {fmt_int(n)}:[/] {reason}")
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"next: propensity experiments report --experiment {result.name} -w {workspace}")


def _imported_report(
    ws: Any, name: str, out: Path | None, uplift: bool, uplift_out: Path | None, as_json: bool
) -> None:
    from propensity.experiments.imported import experiment_summary, load_imported, uplift_table, write_summary

    meta, rows = load_imported(ws, name)
    with progress_bar() as bar:
        bar.add_task("differences, intervals and uplift", total=None)
        summary = experiment_summary(meta, rows, with_uplift=uplift, seed=ws.spec.training.seed)
    paths = write_summary(ws, summary, out)
    if uplift_out is not None:
        import pyarrow.parquet as pq

        pq.write_table(uplift_table(rows, summary), uplift_out)
    if as_json:
        console.print_json(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}))
        return
    t = Table(title=f"experiment {name}: each arm against {summary['control']}")
    for col in (
        "outcome",
        "arm",
        "segment",
        "treated",
        "control",
        "treated",
        "control",
        "difference",
        "95% CI",
        "p",
    ):
        t.add_column(col, justify="right")
    for oc, e in summary["outcomes"].items():
        pct = e["kind"] == "binary"
        for arm_name, a in e["arms"].items():
            for seg, v in a["comparison"].items():
                if pct:
                    vals = (v["rate_treated"], v["rate_control"], v["absolute"], v["absolute_ci"])
                else:
                    vals = (v["mean_treated"], v["mean_control"], v["difference"], v["difference_ci"])
                fmt = (
                    (lambda x: "—" if x is None else f"{100 * x:.2f}%")
                    if pct
                    else (lambda x: "—" if x is None else f"{x:,.4g}")
                )
                ci = "—" if vals[3] is None else f"[{fmt(vals[3][0])}, {fmt(vals[3][1])}]"
                p = v.get("p_value")
                t.add_row(oc, arm_name, seg, fmt_int(v["n_treated"]), fmt_int(v["n_control"]), fmt(vals[0]),
                          fmt(vals[1]), fmt(vals[2]), ci, "—" if p is None else f"{p:.3g}")  # fmt: skip
    console.print(t)
    for oc, e in summary["outcomes"].items():
        for arm_name, a in e["arms"].items():
            up = a.get("uplift") or {}
            if "verdict" in up:
                console.print(f"{oc} / {arm_name}: uplift Qini coefficient {up['qini_coefficient']:.4f}, "
                              f"AUUC {up['uplift_auc']:.4f}: {up['verdict']}")  # fmt: skip
            elif "skipped" in up:
                console.print(f"{oc} / {arm_name}: uplift not fitted: {up['skipped']}")
    console.print(f"report: {paths['html']}\njson:   {paths['json']}")


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:+.2f}%"


def _ci(v: Any) -> str:
    return "—" if v is None else f"[{100 * v[0]:+.2f}%, {100 * v[1]:+.2f}%]"


@experiments_app.command()
def report(
    workspace: Path = WorkspaceOption,
    run: str = typer.Option(None, "--run", help="Scoring run id (default: the latest complete run)."),
    rows: Path = typer.Option(
        None,
        "--rows",
        help="Read score rows from this Parquet file (canonical score rows) instead of the store.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Write PATH.html and PATH.json (default: .propensity/reports/experiments-<run>.*).",
    ),
    uplift: bool = typer.Option(True, "--uplift/--no-uplift", help="Fit and evaluate the two-model uplift."),
    experiment: str = typer.Option(
        None,
        "--experiment",
        help="An imported experiment (`propensity experiments import`) instead of a scoring run.",
    ),
    uplift_out: Path = typer.Option(
        None, "--uplift-out", help="Write each row's out-of-fold predicted uplift to this Parquet file."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report's numbers as JSON (for scripts)."),
) -> None:
    """Outcomes of a scoring run's customers, treated vs control: lift with 95% intervals per segment, and
    an uplift model's Qini. Only rows whose horizon has closed (matured) are counted. With --experiment, an
    imported experiment: every treatment arm against the control, binary and continuous outcomes, per segment,
    uplift with a permutation test (no bundle or scoring run needed).

    Examples:

        propensity experiments report -w demo

        propensity experiments report -w demo --run r-20261123T125600Z-3fa9c1 --out lift-q4

        propensity experiments report --experiment hillstrom --uplift-out uplift.parquet -w shop
    """
    import pyarrow.parquet as pq

    from propensity.experiments.imported import list_imported
    from propensity.experiments.report import experiment_report, load_score_rows, write_report

    ws = open_workspace(workspace)
    if experiment is None and rows is None and run is None and not ws.spec.experiments.holdouts:
        imported = list_imported(ws)
        if len(imported) == 1:
            experiment = imported[0]
    if experiment is not None:
        _imported_report(ws, experiment, out, uplift, uplift_out, as_json)
        return
    ws = open_workspace(workspace, require_spec=True)
    if rows is not None:
        from propensity.core.contract import validate_rows

        run_id, table = run or rows.stem, pq.read_table(rows)
        problems = validate_rows(table)
        # Missing columns or wrong types make the report wrong; other breaches (a null segment, say) are shown.
        fatal = [p for p in problems if p.startswith("missing column") or ": type " in p]
        if fatal:
            raise typer.BadParameter(
                f"{rows} does not keep the score row contract, so its lift would be wrong: "
                + "; ".join(fatal[:6])
                + (f"; and {len(fatal) - 6} more" if len(fatal) > 6 else "")
                + ". For a table of your own (id, arm, outcome) use `propensity experiments import`, then "
                "`experiments report --experiment NAME`.",
                param_hint="--rows",
            )
        for problem in problems:
            if not as_json:
                console.print(f"[yellow]score row contract:[/] {problem}")
    else:
        run_id, table = load_score_rows(ws, run)
    with progress_bar() as bar:
        bar.add_task("outcomes, lift and uplift", total=None)
        data = experiment_report(ws, table, run_id=run_id, with_uplift=uplift)
    paths = write_report(ws, data, out)
    if as_json:
        console.print_json(json.dumps(data))
        return
    t = Table(title=f"lift, run {run_id} (data up to {data['_meta']['data_end']})")
    for col in ("action", "segment", "treated", "control", "treated rate", "control rate", "lift", "95% CI",
                "relative", "95% CI"):  # fmt: skip
        t.add_column(col, justify="right")
    for name, e in data["actions"].items():
        for seg, v in e["lift"].items():
            rate_t = "—" if v["rate_treated"] is None else f"{100 * v['rate_treated']:.2f}%"
            rate_c = "—" if v["rate_control"] is None else f"{100 * v['rate_control']:.2f}%"
            t.add_row(name, seg, fmt_int(v["n_treated"]), fmt_int(v["n_control"]), rate_t, rate_c,
                      _pct(v["absolute"]), _ci(v["absolute_ci"]), _pct(v["relative"]), _ci(v["relative_ci"]))  # fmt: skip
    console.print(t)
    for name, e in data["actions"].items():
        up = e.get("uplift") or {}
        if "qini" in up:
            verdict = up.get("verdict") or ("beats random" if up["beats_random"] else "does not beat random")
            console.print(
                f"{name}: uplift Qini coefficient {up.get('qini_coefficient') or up['qini']:.4f} ({verdict})"
            )
        elif "skipped" in up:
            console.print(f"{name}: uplift not fitted: {up['skipped']}")
    if not data["actions"]:
        console.print(
            "No scored action is covered by an experiment (experiments.holdouts in propensity.yaml)."
        )
    console.print(f"report: {paths['html']}\njson:   {paths['json']}")


# ------------------------------------------------------------------------------------------- retrain
def _trainer(bar: Any) -> Any:
    from propensity.cli.training import training_progress
    from propensity.registry.train import train_project

    def train(ws: Any) -> str:
        return train_project(ws, progress=training_progress(bar)).bundle_id

    return train


def _print_decision(decision: Any) -> None:
    style = {"promoted": "bold green", "refused": "bold red"}.get(decision.outcome, "bold")
    console.print(f"[{style}]{decision.summary()}[/]  (trigger: {decision.trigger}; record {decision.id})")
    if decision.checks:
        t = Table()
        for col in ("action", "metric", "challenger", "production", "tolerance", "passed"):
            t.add_column(col, justify="right")
        for c in decision.checks:
            fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
            t.add_row(c["action"], c["metric"], fmt(c["candidate"]), fmt(c["production"]), f"{c['tolerance']:g}",
                      "yes" if c["passed"] else "[red]no[/]")  # fmt: skip
        console.print(t)
    for note in decision.notes:
        console.print(f"  note: {note}")


@retrain_app.callback()
def retrain_command(
    ctx: typer.Context,
    workspace: Path = WorkspaceOption,
    every: str = typer.Option(
        None, "--every", help="Keep running: retrain whenever the last retrain is this old (e.g. 7d)."
    ),
    schedule: bool = typer.Option(
        False, "--schedule", help="Keep running on the schedule of propensity.yaml (retraining.every)."
    ),
    check: str = typer.Option(
        "1h", "--check", help="With --every/--schedule: how often to check the triggers."
    ),
    if_due: bool = typer.Option(
        False, "--if-due", help="Only when a configured trigger fires (retraining.every / on_drift_alert)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Train and compare, record, but promote nothing."),
    iterations: int = typer.Option(0, "--iterations", hidden=True, help="With --every: stop after N checks."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the decision as JSON (for scripts); not with --every/--schedule."
    ),
) -> None:
    """Train a challenger on the current data, compare it with production on the latest matured window,
    promote it only if it is not worse (retraining / training.promotion tolerances), and record the decision.
    Exits 1 when the gate refuses the challenger.

    Examples:

        propensity retrain -w demo                 # now

        propensity retrain -w demo --dry-run       # compare and record, promote nothing

        propensity retrain -w demo --if-due        # from cron: only when retraining.every / a drift alert says so

        propensity retrain -w demo --every 7d      # keep running; also retrains on drift alerts if configured

        propensity retrain -w demo --schedule      # keep running on retraining.every from propensity.yaml

        propensity retrain history -w demo
    """
    if ctx.invoked_subcommand is not None:
        return
    from propensity.config.durations import Duration
    from propensity.retraining.retrain import NOT_DUE, REFUSED, retrain

    ws = open_workspace(workspace, require_spec=True)
    if schedule and every is None:
        if ws.spec.retraining.every is None:
            raise PropensityError(
                "--schedule: propensity.yaml sets no retraining.every; add e.g. `every: 7d`"
            )
        every = str(ws.spec.retraining.every)
    if every is None:
        with progress_bar(quiet=as_json) as bar:
            decision = retrain(ws, force=not if_due, dry_run=dry_run, train=_trainer(bar))
        if as_json:
            print_json(decision.to_json())
            if decision.outcome == REFUSED:
                raise typer.Exit(1)
            return
        if decision.outcome == NOT_DUE:
            console.print("Not due: no schedule or drift alert calls for a retrain.")
            return
        _print_decision(decision)
        if decision.outcome == REFUSED:
            raise typer.Exit(1)
        return
    if as_json:
        raise typer.BadParameter("--json prints one decision; it does not go with --every or --schedule")
    try:
        step = Duration.parse(every, allow_lifetime=False)
        pause = Duration.parse(check, allow_lifetime=False)
    except ValueError as exc:
        raise PropensityError(f"--every / --check: {exc}") from None
    settings = ws.spec.retraining.model_copy(update={"every": step})
    scheduled = type(ws)(ws.root, ws.spec.model_copy(update={"retraining": settings}))
    done = 0
    console.print(f"Retraining every {step} (checking every {pause}); Ctrl-C stops.")
    while True:
        with progress_bar() as bar:
            decision = retrain(scheduled, dry_run=dry_run, train=_trainer(bar))
        if decision.outcome != NOT_DUE:
            _print_decision(decision)
        done += 1
        if iterations and done >= iterations:
            return
        time.sleep(max(1, pause.seconds))


@retrain_app.command("history")
def history_command(
    workspace: Path = WorkspaceOption,
    limit: int = typer.Option(20, "--limit", "-n", help="Show the latest N decisions."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the full records (metrics, window, checks) as JSON."
    ),
) -> None:
    """Recorded retrain decisions, oldest first: trigger, outcome, both bundles and their metrics.

    Example:

        propensity retrain history -w demo
    """
    from propensity.retraining.history import history

    records = history(open_workspace(workspace, require_spec=True), limit=limit)
    if as_json:
        print(json.dumps(records, indent=2))
        return
    if not records:
        console.print("No retrain recorded yet; run `propensity retrain`.")
        return
    t = Table()
    for col in (
        "decided",
        "outcome",
        "trigger",
        "challenger",
        "production",
        "AUC chal./prod.",
        "ECE chal./prod.",
    ):
        t.add_column(col)
    for r in records:
        aucs, eces = [], []
        for action, m in sorted(r.get("metrics", {}).items()):
            c, p = m["challenger"], m["production"]
            aucs.append(f"{action} {_num(c['roc_auc'])}/{_num(p['roc_auc'])}")
            eces.append(f"{action} {_num(c['ece'])}/{_num(p['ece'])}")
        dry = " (dry run)" if r.get("dry_run") else ""
        t.add_row(r["decided_at"][:19], r["outcome"] + dry, str(r.get("trigger")), str(r.get("challenger")),
                  str(r.get("production")), ", ".join(aucs) or "—", ", ".join(eces) or "—")  # fmt: skip
    console.print(t)


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"
