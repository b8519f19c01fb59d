"""The web console in a real headless Chromium against a real ``propensity serve``: sign-in, the targeting
slider's numbers against the score table, saving a target that ``propensity activate`` then uses, promote and
roll back as admin, read-only refusals, a screenshot of every page; and no data without a session on any route
of the console's route table."""

from __future__ import annotations

import csv
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest
from tests.server.console_fixtures import (
    ADMIN,
    LOOKUP,
    OUTPUT,
    VIEWER,
    browser,
    build_console_workspace,
    serve,
)

from propensity.activation.run import activate
from propensity.experiments.targeting import profit, targeting_view
from propensity.registry.bundle import read_manifest
from propensity.registry.registry import Registry
from propensity.scoring.score_store import open_score_store
from propensity.server.console import ENDPOINTS, PUBLIC
from propensity.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.service]
SHOTS = OUTPUT / "console"


@pytest.fixture(scope="module")
def console_ws(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str, str]:
    return build_console_workspace(workspace, tmp_path_factory.mktemp("console") / "ws")


@pytest.fixture(scope="module")
def base(console_ws: tuple[Workspace, str, str]) -> Iterator[str]:
    yield from serve(console_ws[0])


@pytest.fixture(scope="module")
def context() -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield from browser()


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    yield out
    (SHOTS / "load-times.json").write_text(json.dumps(out, indent=2) + "\n")


def _request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _sign_in(page: Any, base: str, key: str, *, next_path: str = "/console") -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/console/login?next={next_path}")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_path}*")


def _open(page: Any, url: str, name: str, timings: dict[str, float] | None = None) -> None:
    started = time.perf_counter()
    errors: list[str] = []  # what the page reported, so a failure says why it never became ready
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    try:
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    except Exception as exc:
        raise AssertionError(
            f"{name} never became ready: {errors}; page: {page.inner_text('body')[:300]}"
        ) from exc
    if timings is not None:
        timings[name] = round(time.perf_counter() - started, 3)
    assert page.get_attribute("body", "data-ready") == "true", page.inner_text("#status")


_A11Y = """() => {
  const out = [];
  const named = (e) => (e.getAttribute("aria-label") || e.getAttribute("aria-labelledby") ||
    (e.id && document.querySelector(`label[for="${e.id}"]`)) || e.closest("label"));
  for (const e of document.querySelectorAll("input:not([type=hidden]), select, textarea"))
    if (!named(e)) out.push(`unlabelled ${e.tagName.toLowerCase()}#${e.id || e.name}`);
  for (const t of document.querySelectorAll("table"))  // uPlot's legend is inside the hidden plot
    if (!t.closest("[aria-hidden=true]") && !(t.querySelector("caption") && t.querySelector("th")))
      out.push("table without caption or header cells");
  for (const b of document.querySelectorAll("button, a[href]"))
    if (!(b.textContent.trim() || b.getAttribute("aria-label"))) out.push(`${b.tagName.toLowerCase()} without a name`);
  for (const f of document.querySelectorAll("figure"))
    if (!f.querySelector("figcaption") || !f.querySelector("table")) out.push("chart without a caption or data table");
  for (const c of document.querySelectorAll("canvas"))
    if (!c.closest("[aria-hidden=true]")) out.push("canvas not hidden from screen readers");
  if (document.querySelectorAll("main h1").length !== 1) out.push("not one h1");
  if (!document.querySelector("a.skip[href='#main']")) out.push("no skip link");
  return out;
}"""


def _accessible(page: Any, name: str) -> None:
    """What a screen reader and a keyboard need: every control named, tables with captions and header cells,
    every chart with a caption and its numbers in a table (the canvas hidden), one h1, a skip link."""
    problems = page.evaluate(_A11Y)
    assert problems == [], f"{name}: {problems}"


def _shot(page: Any, name: str) -> None:
    page.wait_for_timeout(150)  # let uPlot draw after the data is in (a frame); not a synchronisation wait
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# ------------------------------------------------------------------------------------------------ no session
def _concrete(path: str, bundle: str) -> str:
    return path.replace("{bundle}", bundle).replace("{name}", "console.js")


def test_no_data_without_a_session_on_any_route(base: str, console_ws: tuple[Workspace, str, str]) -> None:
    ws, production, _ = console_ws
    guarded = [e for e in ENDPOINTS if e.name not in PUBLIC]
    assert {e.name for e in ENDPOINTS if e.scope is None} == PUBLIC  # nothing else is open
    assert len(guarded) >= 14
    cookies = [None, "propensity_console=not-a-session"]
    for e in guarded:
        url = (
            base
            + _concrete(e.path, production)
            + ("?customer_id=c1&action=buy_7d" if e.method == "GET" else "")
        )
        for cookie in cookies:
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {ADMIN}",
            }  # an API key is no session
            if cookie:
                headers["Cookie"] = cookie
            status, head, body = _request(url, method=e.method, headers=headers,
                                          body=b'{"reason": "no session", "target": {}}' if e.method == "POST" else None)  # fmt: skip
            where = f"{e.method} {e.path} (cookie={cookie})"
            if e.ok_content_type == "text/html":
                assert status == 303 and head["location"].startswith("/console/login?next="), where
            else:
                assert status == 401, where
            assert json.loads(body)["error"]["code"] in ("unauthorized", "sign_in"), where
            assert production.encode() not in body and b"buy_7d" not in body, where
    assert Registry(ws).production() == production  # nothing moved
    # The open routes give no data either: the sign-in page, and the vendored assets.
    status, _, body = _request(f"{base}/console/login")
    assert status == 200 and b"API key" in body and b"buy_7d" not in body


# ------------------------------------------------------------------------------------------------ the browser
def test_sign_in_and_every_page(base: str, context: Any, console_ws: tuple[Workspace, str, str],
                                timings: dict[str, float]) -> None:  # fmt: skip
    page = context.new_page()
    page.goto(f"{base}/console")
    assert "/console/login" in page.url  # redirected to sign in
    page.fill("#key", "wrong-key")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text(".error")
    _shot(page, "login")
    _sign_in(page, base, ADMIN)
    cookie = next(c for c in context.cookies() if c["name"] == "propensity_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable by scripts
    _ws, production, _candidate = console_ws
    for path, name in [("/console", "overview"), ("/console/models", "models"), (f"/console/models/{production}", "model"),
                       ("/console/monitoring", "monitoring"), ("/console/experiments", "experiments"),
                       ("/console/targeting?action=buy_7d", "targeting")]:  # fmt: skip
        _open(page, base + path, name, timings)
        assert page.locator("main h1").count() == 1 and page.locator("nav[aria-label=Console]").count() == 1
        _accessible(page, name)
        _shot(page, name)
    # The model page: every candidate, and why the champion won when the bundle records it.
    _open(page, f"{base}/console/models/{production}", "model")
    info = read_manifest(Registry(_ws).path(production)).actions["buy_7d"]
    champion = getattr(info, "champion", None)  # a field once the procedure's manifest lands, an extra before
    rows = page.locator("#candidates tbody tr")
    why = page.inner_text("#champion-why")
    if champion:
        assert champion["why"] in why
        assert rows.count() >= len(info.candidates)
    else:
        assert "records no candidates" in why and rows.count() == 2  # the model and its logistic baseline
    _open(page, f"{base}/console", "overview")
    text = page.inner_text("main")
    assert production[:14] in text and "buy_7d" in text and "campaign" in text
    _open(page, f"{base}/console/customers", "customers", timings)
    page.fill("#customer-id", "c1")
    page.click("#lookup button")
    page.wait_for_selector("#customer table")
    assert "c1" in page.inner_text("#status")  # this key may see identifiers
    assert page.locator("#customer table").count() >= 3
    _accessible(page, "customers")
    _shot(page, "customers")
    page.close()


def _pool_scores(ws: Workspace, action: str) -> np.ndarray:
    store = open_score_store(ws)
    rows = store.read_run(store.latest_run(status="complete").run_id)
    rows = rows.filter(pc.equal(rows.column("action"), action))
    rows = rows.filter(
        pc.and_(pc.fill_null(rows.column("eligible"), False), pc.is_valid(rows.column("score")))
    )
    rows = rows.filter(pc.invert(pc.fill_null(pc.equal(rows.column("holdout_group"), "control"), False)))
    return rows.column("score").to_numpy(zero_copy_only=False)


def _numbers(page: Any) -> dict[str, float]:
    return {
        k: float(page.get_attribute(f"#out-{k}", "data-value"))
        for k in ("threshold", "reached", "expected", "profit")
    }


def test_targeting_slider_matches_the_score_table(
    base: str, context: Any, console_ws: tuple[Workspace, str, str]
) -> None:
    ws = console_ws[0]
    scores = _pool_scores(ws, "buy_7d")
    page = context.new_page()
    _sign_in(page, base, VIEWER, next_path="/console/targeting?action=buy_7d")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#cost", "1.5")
    page.fill("#value", "12")
    slider = page.locator("#slider")
    slider.focus()
    seen = []
    for keys in (["Home"], ["ArrowRight"] * 3, ["PageUp"] * 2, ["End"]):
        for k in keys:
            page.keyboard.press(k)
        n = _numbers(page)
        seen.append(n)
        # Every figure shown is the score table's: customers at or above the threshold, their probabilities.
        at = scores >= n["threshold"]
        assert n["reached"] == at.sum()
        assert n["expected"] == pytest.approx(scores[at].sum(), rel=1e-9)
        assert n["profit"] == pytest.approx(12 * scores[at].sum() - 1.5 * at.sum(), rel=1e-9)
    assert seen[0]["reached"] < seen[1]["reached"] < seen[-1]["reached"] == len(scores)
    # The marked best point is the profit-maximising one (the same curve, computed below the server).
    view = targeting_view(ws, "buy_7d")
    best = profit(view["curve"], cost=1.5, value=12.0)["best"]
    assert best is not None and best["threshold"] >= 1.5 / 12 - 1e-9
    assert int(page.get_attribute("#best", "data-index")) == best["index"]
    page.click("#go-best")
    assert _numbers(page)["reached"] == best["reached"]
    # Top k%: 10% of the pool, ties at the cut included.
    page.check("#mode-top")
    slider.focus()
    page.evaluate("s => { s.value = 100; s.dispatchEvent(new Event('input')); }", slider.element_handle())
    n = _numbers(page)
    k = int(np.ceil(0.1 * len(scores) - 1e-9))
    assert n["reached"] == (scores >= np.sort(scores)[::-1][k - 1]).sum()
    # Read-only: no saving.
    assert page.locator("#save").count() == 0
    page.close()


def test_saved_target_is_what_activate_publishes(
    base: str, context: Any, console_ws: tuple[Workspace, str, str]
) -> None:
    ws = console_ws[0]
    page = context.new_page()
    _sign_in(page, base, ADMIN, next_path="/console/targeting?action=buy_7d")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#cost", "1")
    page.fill("#value", "30")
    page.click("#go-best")
    n = _numbers(page)
    page.fill("#save-name", "buy_console")
    page.check("input[name=destination][value=campaign]")
    page.check("#as-policy")
    page.click("#save")
    page.wait_for_selector("#save-status.ok")
    assert "campaign will publish only its customers" in page.inner_text("#save-status")
    _shot(page, "targeting-saved")
    page.close()
    text = (ws.root / "propensity.yaml").read_text()
    assert text.startswith("# The console tests' project")  # the user's comment survives
    spec = Workspace.open(ws.root).spec
    target = next(t for t in spec.targets if t.name == "buy_console")
    assert target.threshold == pytest.approx(n["threshold"]) and target.saved_by == "ana"
    assert spec.destinations[0].target == "buy_console"
    assert spec.policies.actions["buy_7d"].threshold == pytest.approx(n["threshold"])
    result = activate(Workspace.open(ws.root))  # what `propensity activate` runs, with the spec as saved
    assert result.ok, result.to_json()
    run_id = open_score_store(ws).latest_run(status="complete").run_id
    with (ws.root / "exports" / "campaign" / run_id / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n["reached"]
    assert {r["action"] for r in rows} == {"buy_7d"}
    assert all(float(r["score"]) >= n["threshold"] - 1e-12 and r["holdout_group"] != "control" for r in rows)


def test_promote_and_roll_back_as_admin(
    base: str, context: Any, console_ws: tuple[Workspace, str, str]
) -> None:
    ws, production, candidate = console_ws
    page = context.new_page()
    _sign_in(page, base, ADMIN, next_path=f"/console/models/{candidate}")
    page.wait_for_selector("body[data-ready=true]")
    assert "challenger" in page.inner_text("main") or "champion" in page.inner_text("main")
    page.fill("#promote-reason", "console test: the seed-11 model")
    page.check("#promote-force")  # it lacks churn_30d, so the gate refuses it unless overridden
    page.click("#promote-button")
    page.wait_for_selector("#promote-status.ok")
    registry = Registry(ws)
    assert registry.production() == candidate
    event = registry.history()[-1]
    assert (
        event["event"] == "promote"
        and event["by"] == "ana"
        and event["reason"] == "console test: the seed-11 model"
    )
    served = json.loads(_request(f"{base}/readyz")[2])
    assert served["model_version"] == candidate  # swapped into the running server
    page.goto(f"{base}/console/models")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#rollback-reason", "console test: back to the first model")
    page.click("#rollback-button")
    page.wait_for_selector("#rollback-status.ok")
    assert registry.production() == production
    event = registry.history()[-1]
    assert event["event"] == "rollback" and event["reason"] == "console test: back to the first model"
    assert json.loads(_request(f"{base}/readyz")[2])["model_version"] == production
    page.close()


def test_read_only_and_lookup_roles_are_refused(
    base: str, context: Any, console_ws: tuple[Workspace, str, str]
) -> None:
    ws, production, candidate = console_ws
    page = context.new_page()
    _sign_in(page, base, VIEWER, next_path=f"/console/models/{candidate}")
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#promote-form").count() == 0 and "read-only" in page.inner_text("header")
    for url, body in [(f"/console/api/models/{candidate}/promote", {"reason": "not allowed", "force": True}),
                      ("/console/api/models/rollback", {"reason": "not allowed"}),
                      ("/console/api/targets", {"target": {"name": "x", "action": "buy_7d", "threshold": 0.1}})]:  # fmt: skip
        status = page.evaluate(
            """async ([url, body]) => (await fetch(url, {method: "POST", body: JSON.stringify(body),
                 headers: {"Content-Type": "application/json",
                           "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content}})).status""",
            [url, body],
        )
        assert status == 403, url
    assert page.locator("nav a[href='/console/customers']").count() == 0  # no customers permission
    assert page.goto(f"{base}/console/customers").status == 403
    # Without the CSRF token even an admin's session cannot change anything.
    _sign_in(page, base, ADMIN)
    status = page.evaluate("""async (url) => (await fetch(url, {method: "POST", body: '{"reason": "no token"}',
                               headers: {"Content-Type": "application/json"}})).status""",
                           "/console/api/models/rollback")  # fmt: skip
    assert status == 403 and Registry(ws).production() == production
    # Lookup without the identifiers scope: the customer's id and identifying attributes are masked.
    _sign_in(page, base, LOOKUP, next_path="/console/customers?customer_id=c1")
    page.wait_for_selector("#customer table")
    assert "c1" not in page.inner_text("#status") and "••" in page.inner_text("#status")
    page.context.clear_cookies()
    page.close()


def test_propensity_console_alone(console_ws: tuple[Workspace, str, str]) -> None:
    """``propensity console``'s app: the same pages and sign-in, without a scoring service."""
    from starlette.testclient import TestClient
    from tests.server.console_fixtures import KEYS

    from propensity.server.console import create_console_app
    from propensity.serving.auth import KeyRing

    ws = console_ws[0]
    with TestClient(create_console_app(ws, KeyRing.parse_env(KEYS)), base_url="https://testserver") as c:
        assert c.get("/console/api/overview").status_code == 401
        r = c.post("/console/login", data={"key": VIEWER, "next": "/console/models"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/models"
        assert "httponly" in r.headers["set-cookie"].lower() and "secure" in r.headers["set-cookie"].lower()
        body = c.get("/console/api/overview").json()
        assert body["served"] is None and body["bundles"]["actions"]
        assert c.get("/console/api/customers", params={"customer_id": "c1"}).status_code == 403
        c.post("/console/logout")
        assert c.get("/console/api/overview").status_code == 401  # the session is gone
    # Without keys, authentication is off: a local admin, as for the API.
    with TestClient(create_console_app(ws, KeyRing()), base_url="https://testserver") as c:
        assert c.get("/console/api/session").json() == {
            "name": "local", "role": "admin", "scopes": ["admin", "console", "customers", "identifiers"], "local": True}  # fmt: skip
