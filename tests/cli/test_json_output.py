"""Every command that prints a table also takes ``--json``, and what it prints then is one JSON document.

The first test walks the whole command tree: a command either has ``--json`` or is listed below with why it
prints no table, so a new table-printing command without ``--json`` fails here. The second runs the commands on a
small trained workspace and parses each one's stdout (logs and warnings go to stderr)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from tests.training.synthetic_project import trained_workspace
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.workspace import Workspace

RUNNER = CliRunner()

# Commands that print no table, and what they print instead.
NO_TABLE = {
    "console": "serves the web console until stopped",
    "serve": "serves the API until stopped",
    "quickstart": "a guided tour: progress lines and the next commands",
    "init": "writes propensity.yaml and says so",
    "schema": "prints the JSON Schema of propensity.yaml (JSON already)",
    "datasets completejourney": "writes files and prints where",
    "datasets synthetic": "writes files and prints where",
    "features materialize": "one summary line",
    "models promote": "the gate's checks as lines and the promoted bundle's full id",
    "models rollback": "one line naming the bundle now in production",
    "monitor report": "writes the HTML/JSON report files and prints their paths",
}


def _commands() -> Iterator[tuple[str, Any]]:
    def walk(command: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        if hasattr(command, "commands"):
            if path and command.callback is not None:
                yield " ".join(path), command
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), command

    yield from walk(typer.main.get_command(app), [])


def test_every_command_that_prints_a_table_takes_json() -> None:
    lacking = []
    names = set()
    for name, command in _commands():
        names.add(name)
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        if "--json" not in options and name not in NO_TABLE:
            lacking.append(name)
    assert not lacking, f"commands without --json (add it, or list them in NO_TABLE saying why): {lacking}"
    assert not set(NO_TABLE) - names, "NO_TABLE names a command that no longer exists"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("json-cli")
    ws = trained_workspace(
        root, customers=300, days=120, seed=2,
        spec={"actions": [{"template": "buy"}], "clock": "data",
              "destinations": [{"name": "drop", "type": "file", "format": "csv"}]},
    )  # fmt: skip
    return ws


def _customer(ws: Workspace) -> str:
    from propensity.events.log import DuckDBEventLog

    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return str(con.execute("SELECT min(customer_id) FROM events").fetchall()[0][0])


# (command, extra arguments, exit codes that still print the JSON document)
RUNS: list[tuple[str, list[str], tuple[int, ...]]] = [
    ("ingest", [], (0,)),
    ("events summary", [], (0,)),
    ("events quarantine", [], (0,)),
    ("features show", ["{customer}"], (0,)),
    ("features show", ["{customer}", "--explain", "--events", "2"], (0,)),
    ("features describe", ["--sample", "50"], (0,)),
    ("features audit", ["--sample", "60"], (0,)),
    ("features materialize", ["--every", "28d"], (0,)),  # for backfill; prints no table (NO_TABLE)
    ("features backfill", [], (0,)),
    ("models list", [], (0,)),
    ("models show", ["production"], (0,)),
    ("report", [], (0,)),
    ("score", [], (0,)),
    ("score-runs", [], (0,)),
    ("activate", [], (0, 1)),  # 1: a gate blocked the run (the JSON says which)
    ("destinations list", [], (0,)),
    ("destinations status", [], (0,)),
    ("monitor", [], (0, 1)),  # 1: an alert fired (documented)
    ("experiments list", [], (0,)),
    ("retrain history", [], (0,)),
]


def test_json_output_parses(demo: Workspace) -> None:
    customer = _customer(demo)
    for name, extra, codes in RUNS:
        args = [*name.split(), *(a.format(customer=customer) for a in extra), "-w", str(demo.root)]
        if name not in NO_TABLE:
            args.append("--json")
        out = RUNNER.invoke(app, args, env={"COLUMNS": "200"})
        assert out.exit_code in codes, f"{' '.join(args)}: exit {out.exit_code}\n{out.output}"
        if name in NO_TABLE:
            continue
        try:
            data = json.loads(out.stdout)
        except json.JSONDecodeError as exc:
            message = f"{' '.join(args)}: stdout is not one JSON document ({exc}):\n{out.stdout}"
            raise AssertionError(message) from None
        assert data is not None, name
    listed = json.loads(RUNNER.invoke(app, ["models", "list", "--json", "-w", str(demo.root)]).stdout)
    assert [b["stage"] for b in listed].count("production") == 1  # a script can read the production id
    assert listed[0]["bundle"].startswith("m-")
