"""The console's route table: pages, their data endpoints, sign-in and the vendored assets.

Every page and data endpoint needs a session (:mod:`propensity.server.console.sessions`): without one a page
redirects to the sign-in page and a data endpoint answers 401. Only the sign-in page and the assets are open.
Handlers only route and render: the numbers come from the packages below (``monitoring.views``,
``experiments.targeting``, ``experiments.report``, ``scoring.lookup``, ``activation.targets``, the registry).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from propensity.config.decisions import TargetSettings
from propensity.core.errors import PropensityError
from propensity.server.console import pages
from propensity.server.console.sessions import COOKIE, LOCAL, Session, Sessions
from propensity.server.endpoints import Endpoint
from propensity.server.errors import JSON, ApiError, invalid
from propensity.serving.auth import KeyRing, UnauthorizedError
from propensity.workspace import Workspace

log = logging.getLogger("propensity.console")
ASSETS = Path(__file__).parent / "assets"
MAX_FORM_BYTES = 16 * 1024


@dataclass
class ConsoleState:
    """What the console's handlers share: the workspace folder (reopened when propensity.yaml changes), the key
    ring, the session table and, under ``propensity serve``, the scoring service (to swap a promoted model in,
    show the canary and score a customer live)."""

    root: Path
    keys: KeyRing
    service: Any = None
    sessions: Sessions = field(init=False)
    _ws: Workspace | None = field(default=None, init=False)
    _mtime: float = field(default=-1.0, init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.root / ".propensity" / "console" / "sessions.sqlite", self.keys)

    def workspace(self) -> Workspace:
        spec = self.root / "propensity.yaml"
        mtime = spec.stat().st_mtime if spec.exists() else 0.0
        if self._ws is None or mtime != self._mtime:
            self._ws, self._mtime = Workspace.open(self.root), mtime
        return self._ws


def console_state(request: Request) -> ConsoleState:
    """The app's console state: set by ``propensity console``, or made once from the API server's state."""
    state: ConsoleState | None = getattr(request.app.state, "console", None)
    if state is None:
        server = request.app.state.server
        if server.workspace is None:
            raise ApiError(503, "no_workspace", "the console needs a workspace; start the server with -w")
        state = ConsoleState(server.workspace.root, server.keys, server.service)
        request.app.state.console = state
    return state


def session_of(request: Request) -> Session | None:
    state = console_state(request)
    if not state.keys.enabled:
        return LOCAL
    return state.sessions.get(request.cookies.get(COOKIE))


_NEEDS = {"console": "a console key", "admin": "the admin role", "customers": "the customers permission"}


async def _check(request: Request, scope: str, *, page: bool) -> None:
    session = await run_in_threadpool(session_of, request)
    if session is None:
        if page:
            target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
            raise ApiError(
                303, "sign_in", "sign in first", headers={"Location": f"/console/login?next={target}"}
            )
        raise ApiError(401, "unauthorized", "sign in to the console first (/console/login)")
    if not session.may(scope):
        raise ApiError(
            403, "forbidden", f"this needs {_NEEDS.get(scope, scope)}; {session.name} is {session.role}"
        )
    if request.method == "POST" and not session.local:
        sent = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token; reload the page")
    request.state.session = session


async def page_guard(request: Request, scope: str) -> None:
    await _check(request, scope, page=True)


async def data_guard(request: Request, scope: str) -> None:
    await _check(request, scope, page=False)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS), status,
                    media_type=JSON, headers={"Cache-Control": "no-store"})  # fmt: skip


def _problem(exc: PropensityError, status: int = 409, code: str = "conflict") -> ApiError:
    return ApiError(status, code, str(exc))


# ------------------------------------------------------------------------------------------------ sign-in
def _safe_next(value: str | None) -> str:
    return (
        value
        if value and value.startswith("/console") and "//" not in value and "\\" not in value
        else "/console"
    )


async def login_page(request: Request) -> Response:
    state = console_state(request)
    if not state.keys.enabled:
        return RedirectResponse(_safe_next(request.query_params.get("next")), 303)
    insecure = request.url.scheme != "https" and request.url.hostname not in ("127.0.0.1", "localhost", "::1")
    return HTMLResponse(pages.login(next_url=_safe_next(request.query_params.get("next")), error=None,
                                    insecure=insecure))  # fmt: skip


async def login(request: Request) -> Response:
    state = console_state(request)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "body_too_large", "the sign-in form is too large")
    form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    next_url = _safe_next(form.get("next"))
    if not state.keys.enabled:
        return RedirectResponse(next_url, 303)
    try:
        key = state.keys.identify(form.get("key", "").strip())
    except UnauthorizedError:
        return HTMLResponse(
            pages.login(next_url=next_url, error="That key is not valid.", insecure=False), 401
        )
    if not (key.scopes & {"console", "admin"}):
        message = f"The key {key.name!r} has no console scope (it has: {', '.join(sorted(key.scopes))})."
        return HTMLResponse(pages.login(next_url=next_url, error=message, insecure=False), 403)
    token, session = await run_in_threadpool(state.sessions.open, key)
    log.info("console sign-in: %s (%s)", key.name, session.role)
    response = RedirectResponse(next_url, 303)
    response.set_cookie(COOKIE, token, max_age=int(session.expires - time.time()), path="/console", secure=True,
                        httponly=True, samesite="strict")  # fmt: skip
    return response


async def logout(request: Request) -> Response:
    state = console_state(request)
    await run_in_threadpool(state.sessions.close, request.cookies.get(COOKIE))
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(COOKIE, path="/console", secure=True, httponly=True, samesite="strict")
    return response


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    path = ASSETS / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise ApiError(404, "not_found", f"no console asset {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


# ------------------------------------------------------------------------------------------------ pages
def _page(name: str, title: str) -> Any:
    async def handler(request: Request) -> Response:
        session: Session = request.state.session
        params = dict(request.path_params)
        return HTMLResponse(pages.shell(name, title, session, params), headers={"Cache-Control": "no-store"})

    handler.__name__ = f"page_{name}"
    return handler


# ------------------------------------------------------------------------------------------------ data
async def session_info(request: Request) -> Response:
    s: Session = request.state.session
    return _json({"name": s.name, "role": s.role, "scopes": sorted(s.scopes), "local": s.local})


def _canary(state: ConsoleState) -> dict[str, Any] | None:
    canary = getattr(state.service, "canary", None) if state.service is not None else None
    if canary is None:
        return None
    return {"model_version": canary.loaded.model.version, "share": canary.share}


async def overview_data(request: Request) -> Response:
    from propensity.monitoring.views import overview

    state = console_state(request)
    body = await run_in_threadpool(lambda: overview(state.workspace(), canary=_canary(state)))
    served = getattr(state.service, "model", None) if state.service is not None else None
    body["served"] = None if served is None else served.version
    return _json(body)


async def targeting_data(request: Request) -> Response:
    from propensity.experiments.targeting import NoRunError, targeting_view

    state = console_state(request)
    action = request.query_params.get("action") or None
    try:
        body = await run_in_threadpool(lambda: targeting_view(state.workspace(), action))
    except NoRunError as exc:
        raise _problem(exc, 404, "no_run") from None
    return _json(body)


class SaveTarget(BaseModel):
    """Body of ``POST /console/api/targets``: the target, where to send it, whether it becomes the policy."""

    model_config = ConfigDict(extra="forbid")

    target: dict[str, Any]
    destinations: list[Annotated[str, StringConstraints(max_length=100)]] = Field(
        default_factory=list, max_length=50
    )
    as_policy: bool = False
    cut: float | None = Field(default=None, ge=0.0, le=1.0)


async def save_target(request: Request) -> Response:
    from pydantic import ValidationError

    from propensity.activation.targets import TargetError
    from propensity.activation.targets import save_target as save

    state = console_state(request)
    session: Session = request.state.session
    try:
        body = SaveTarget.model_validate(await _read_json(request))
        target = TargetSettings.model_validate(body.target)
    except ValidationError as exc:
        raise invalid(exc) from None
    try:
        spec = await run_in_threadpool(lambda: save(state.workspace(), target, destinations=body.destinations,
                                                    as_policy=body.as_policy, cut=body.cut, by=session.name))  # fmt: skip
    except TargetError as exc:
        raise ApiError(422, "invalid_field", str(exc), field="destinations") from None
    except PropensityError as exc:  # the spec would not load (SpecError names the key)
        raise ApiError(422, "invalid_spec", str(exc)) from None
    log.info("console: %s saved target %s (%s)", session.name, target.name, target.rule())
    saved = next(t for t in spec.targets if t.name == target.name)
    return _json({"saved": saved.model_dump(exclude_none=True),
                  "destinations": [d.name for d in spec.destinations if d.target == target.name]})  # fmt: skip


async def _read_json(request: Request) -> Any:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES * 4:
            raise ApiError(413, "body_too_large", "the body is too large")
    try:
        return json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", field="body") from None


async def models_data(request: Request) -> Response:
    from propensity.monitoring.views import models_list

    state = console_state(request)
    return _json({"bundles": await run_in_threadpool(lambda: models_list(state.workspace()))})


async def model_data(request: Request) -> Response:
    from propensity.monitoring.views import model_view
    from propensity.registry.bundle import BundleNotFoundError

    state = console_state(request)
    try:
        body = await run_in_threadpool(lambda: model_view(state.workspace(), request.path_params["bundle"]))
    except BundleNotFoundError as exc:
        raise _problem(exc, 404, "not_found") from None
    return _json(body)


class Move(BaseModel):
    """Body of a promotion or rollback from the console: why (recorded in the registry's history)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=1000)]
    force: bool = False


async def promote(request: Request) -> Response:
    from pydantic import ValidationError

    from propensity.registry.bundle import BundleNotFoundError, CorruptBundleError
    from propensity.registry.gate import PromotionRefusedError
    from propensity.registry.gate import promote as gate_promote
    from propensity.registry.registry import RegistryError
    from propensity.serving.models import promote_and_load

    state = console_state(request)
    session: Session = request.state.session
    try:
        body = Move.model_validate(await _read_json(request))
    except ValidationError as exc:
        raise invalid(exc) from None
    ref = request.path_params["bundle"]
    ws = state.workspace()
    if state.service is not None:
        model, gate = await run_in_threadpool(
            lambda: promote_and_load(ws, ref, force=body.force, reason=body.reason, by=session.name)
        )
        state.service.swap(model)
    else:
        try:
            result = await run_in_threadpool(
                lambda: gate_promote(ws, ref, force=body.force, reason=body.reason, by=session.name)
            )
        except BundleNotFoundError as exc:
            raise _problem(exc, 404, "not_found") from None
        except PromotionRefusedError as exc:
            raise _problem(exc, 409, "promotion_refused") from None
        except (RegistryError, CorruptBundleError) as exc:
            raise _problem(exc) from None
        gate = result.to_json()
    log.info("console: %s promoted %s", session.name, ref)
    return _json({"promoted": ref, "gate": gate})


async def rollback(request: Request) -> Response:
    from pydantic import ValidationError

    from propensity.registry.bundle import CorruptBundleError
    from propensity.registry.registry import Registry, RegistryError
    from propensity.serving.models import rollback_and_load

    state = console_state(request)
    session: Session = request.state.session
    try:
        body = Move.model_validate(await _read_json(request))
    except ValidationError as exc:
        raise invalid(exc) from None
    ws = state.workspace()
    if state.service is not None:
        model = await run_in_threadpool(lambda: rollback_and_load(ws, reason=body.reason, by=session.name))
        state.service.swap(model)
        to = model.version
    else:
        try:
            _, to = await run_in_threadpool(
                lambda: Registry(ws).rollback(reason=body.reason, by=session.name)
            )
        except (RegistryError, CorruptBundleError) as exc:
            raise _problem(exc) from None
    log.info("console: %s rolled production back to %s", session.name, to)
    return _json({"production": to})


async def monitoring_data(request: Request) -> Response:
    from propensity.monitoring.views import monitoring_view

    state = console_state(request)
    return _json(await run_in_threadpool(lambda: monitoring_view(state.workspace())))


async def experiments_data(request: Request) -> Response:
    from propensity.experiments.report import experiments_view

    state = console_state(request)
    return _json(await run_in_threadpool(lambda: experiments_view(state.workspace())))


class CustomerQuery(BaseModel):
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]


async def customer_data(request: Request) -> Response:
    from pydantic import ValidationError

    from propensity.scoring.lookup import customer_view

    state = console_state(request)
    session: Session = request.state.session
    try:
        query = CustomerQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise invalid(exc) from None
    reveal = session.may("identifiers")
    body = await run_in_threadpool(lambda: customer_view(state.workspace(), query.customer_id, reveal=reveal))
    body["live"] = None
    if state.service is not None and state.service.model is not None:
        try:
            live = await state.service.apredict(query.customer_id, explain=True)
            live.pop("customer_id", None)
            body["live"] = live
        except Exception:  # a store that is down: the stored scores still answer
            log.warning("console: live scoring failed", exc_info=True)
    return _json(body)


# ------------------------------------------------------------------------------------------------ the table
_PAGES = [
    ("/console", "overview", "Overview"),
    ("/console/targeting", "targeting", "Targeting"),
    ("/console/models", "models", "Models"),
    ("/console/models/{bundle}", "model", "Model"),
    ("/console/monitoring", "monitoring", "Monitoring"),
    ("/console/experiments", "experiments", "Experiments"),
]


def _ep(
    path: str, method: str, name: str, handler: Any, summary: str, scope: str | None, *, page: bool = False
) -> Endpoint:
    return Endpoint(path, method, name, handler, summary, scope=scope, in_schema=False,
                    guard=None if scope is None else (page_guard if page else data_guard),
                    ok_content_type="text/html" if page else JSON)  # fmt: skip


ENDPOINTS: list[Endpoint] = [
    _ep("/console/login", "GET", "console_login_page", login_page, "Sign-in page", None),
    _ep("/console/login", "POST", "console_login", login, "Sign in with an API key", None),
    _ep("/console/assets/{name}", "GET", "console_asset", asset, "Vendored scripts and styles", None),
    _ep("/console/logout", "POST", "console_logout", logout, "Sign out (ends the session, if any)", None),
    *[
        _ep(path, "GET", f"console_page_{name}", _page(name, title), f"{title} page", "console", page=True)
        for path, name, title in _PAGES
    ],
    _ep(
        "/console/customers",
        "GET",
        "console_page_customers",
        _page("customers", "Customer lookup"),
        "Customer lookup page",
        "customers",
        page=True,
    ),
    _ep("/console/api/session", "GET", "console_session", session_info, "Who is signed in", "console"),
    _ep("/console/api/overview", "GET", "console_overview", overview_data, "Overview data", "console"),
    _ep("/console/api/targeting", "GET", "console_targeting", targeting_data, "Targeting data", "console"),
    _ep("/console/api/targets", "POST", "console_save_target", save_target, "Save a target", "admin"),
    _ep("/console/api/models", "GET", "console_models", models_data, "Bundles", "console"),
    _ep(
        "/console/api/models/rollback", "POST", "console_rollback", rollback, "Roll production back", "admin"
    ),
    _ep("/console/api/models/{bundle}", "GET", "console_model", model_data, "One bundle", "console"),
    _ep(
        "/console/api/models/{bundle}/promote",
        "POST",
        "console_promote",
        promote,
        "Promote a bundle",
        "admin",
    ),
    _ep(
        "/console/api/monitoring", "GET", "console_monitoring", monitoring_data, "Monitoring data", "console"
    ),
    _ep(
        "/console/api/experiments",
        "GET",
        "console_experiments",
        experiments_data,
        "Experiments data",
        "console",
    ),
    _ep("/console/api/customers", "GET", "console_customer", customer_data, "One customer", "customers"),
]

# Open to anyone: the sign-in page and form, sign-out (it only ends the caller's own session), the assets.
PUBLIC = frozenset({"console_login_page", "console_login", "console_logout", "console_asset"})
