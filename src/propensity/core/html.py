"""Shared pieces of the self-contained HTML reports (training, monitoring, experiments): the page style, a
table, and small SVG charts on a unit frame (x in [0, 1], y in [0, ymax]) without any plotting library."""

from __future__ import annotations

import html
from typing import Any

W, H, PAD, TOP = 320, 250, 36, 26  # TOP: room for each chart's visible title
COLORS = {"model": "#1f77b4", "baseline": "#ff7f0e", "oracle": "#2ca02c", "ideal": "#999999"}


def xy(x: float, y: float, ymax: float = 1.0) -> tuple[float, float]:
    return PAD + x * (W - PAD - 10), H - PAD - (y / ymax if ymax else 0) * (H - PAD - TOP)


def axes(title: str, xlabel: str, ylabel: str, ymax: float = 1.0) -> list[str]:
    x0, y0 = xy(0, 0, ymax)
    x1, y1 = xy(1, ymax, ymax)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{W / 2}" y="15" text-anchor="middle" font-size="12" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fafafa" stroke="#ccc"/>',
        f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>',
        f'<text x="10" y="{H / 2}" transform="rotate(-90 10 {H / 2})" text-anchor="middle" font-size="11">'
        f"{html.escape(ylabel)}</text>",
    ]
    for t in (0.0, 0.5, 1.0):
        x, _ = xy(t, 0, ymax)
        _, y = xy(0, t * ymax, ymax)
        parts.append(f'<text x="{x}" y="{y0 + 12}" text-anchor="middle" font-size="9">{t:g}</text>')
        parts.append(f'<text x="{x0 - 3}" y="{y + 3}" text-anchor="end" font-size="9">{t * ymax:.2g}</text>')
    return parts


def line(
    points: list[tuple[float, float]], color: str, ymax: float = 1.0, dash: str = "", dots: bool = False
) -> str:
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(x, y, ymax) for x, y in points))
    out = f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.8" {dash}/>'
    if dots:
        out += "".join(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>'
            for a, b in (xy(x, y, ymax) for x, y in points)
        )
    return out


def legend(items: list[tuple[str, str]], *, right: bool = False) -> str:
    """Line keys inside the plot, below its title: top-left, or (``right``) bottom-right, clear of curves that
    rise from the bottom-left."""
    x = W - 10 - 90 if right else PAD + 8
    y0 = H - PAD - 8 - 14 * len(items) if right else TOP + 8
    return "".join(
        f'<rect x="{x}" y="{y0 + 14 * i}" width="10" height="3" fill="{c}"/>'
        f'<text x="{x + 14}" y="{y0 + 4 + 14 * i}" font-size="10">{html.escape(t)}</text>'
        for i, (t, c) in enumerate(items)
    )


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:14px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:12px}
.note{color:#666;font-size:12px}.warn{color:#a40}
"""


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
