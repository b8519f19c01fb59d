"""The console's HTML: one shell per page (landmarks, navigation, headings, live regions) that the page's script
fills from its data endpoint, and the sign-in form. Every asset is served by the server itself
(``/console/assets/``): no CDN, no fonts or images from the network."""

from __future__ import annotations

import html
import json
from typing import Any

from propensity.server.console.sessions import Session

NAV = [
    ("overview", "/console", "Overview"),
    ("targeting", "/console/targeting", "Targeting"),
    ("models", "/console/models", "Models"),
    ("monitoring", "/console/monitoring", "Monitoring"),
    ("experiments", "/console/experiments", "Experiments"),
    ("customers", "/console/customers", "Customers"),
]


def _head(title: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)} · propensity console</title>"
        '<link rel="stylesheet" href="/console/assets/uPlot.min.css">'
        '<link rel="stylesheet" href="/console/assets/console.css">'
    )


def shell(name: str, title: str, session: Session, params: dict[str, Any]) -> str:
    """A page: header with navigation and the signed-in user, an empty ``main`` its script fills."""
    active = "models" if name == "model" else name
    links = []
    for key, href, label in NAV:
        if key == "customers" and not session.may("customers"):
            continue
        current = ' aria-current="page"' if key == active else ""
        links.append(f'<li><a href="{href}"{current}>{label}</a></li>')
    who = (
        '<span class="badge warn">authentication is off: local use only</span>'
        if session.local
        else f'<span class="who">{html.escape(session.name)} · <span class="role">{session.role}</span></span>'
        '<form method="post" action="/console/logout" class="inline">'
        '<button type="submit">Sign out</button></form>'
    )
    boot = json.dumps({"page": name, "params": params, "role": session.role,
                       "scopes": sorted(session.scopes)}).replace("</", "<\\/")  # fmt: skip
    return (
        _head(title)
        + f'<meta name="csrf-token" content="{html.escape(session.csrf)}">'
        + "</head><body>"
        + '<a class="skip" href="#main">Skip to content</a>'
        + '<header><span class="brand">propensity</span>'
        + f'<nav aria-label="Console"><ul>{"".join(links)}</ul></nav><div class="user">{who}</div></header>'
        + f'<main id="main" tabindex="-1"><h1>{html.escape(title)}</h1>'
        + '<div id="status" role="status" aria-live="polite" class="status">Loading…</div>'
        + '<div id="content"></div></main>'
        + f'<script id="boot" type="application/json">{boot}</script>'
        + '<script src="/console/assets/uPlot.iife.min.js"></script>'
        + '<script src="/console/assets/console.js"></script>'
        + "</body></html>"
    )


def login(*, next_url: str, error: str | None, insecure: bool) -> str:
    problem = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    warning = (
        '<p class="warn" role="note">This page is not served over HTTPS: the browser will not keep the secure '
        "session cookie. Serve the console behind TLS, or open it on localhost.</p>"
        if insecure
        else ""
    )
    return (
        _head("Sign in")
        + '</head><body class="login"><main id="main"><h1>propensity console</h1>'
        + problem
        + warning
        + '<form method="post" action="/console/login">'
        + f'<input type="hidden" name="next" value="{html.escape(next_url)}">'
        + '<label for="key">API key</label>'
        + '<input id="key" name="key" type="password" autocomplete="current-password" required autofocus '
        'aria-describedby="key-help">'
        + '<p id="key-help" class="help">A key with the <code>console</code> scope (read-only) or '
        "<code>admin</code> (promote, roll back, save targets). Your administrator configures keys with "
        "<code>--api-keys</code> or <code>PROPENSITY_API_KEYS</code>.</p>"
        + '<button type="submit">Sign in</button></form></main></body></html>'
    )
