"""/docs works offline: the page loads Swagger UI from the server itself (vendored, unmodified, licence kept),
and names no other host."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from starlette.testclient import TestClient

from propensity.server import ServerState, create_app
from propensity.server.ops import DOCS_ASSETS
from propensity.serving.service import ScoringService
from propensity.serving.store import InMemoryStore

SHA256 = {
    "swagger-ui-bundle.js": "d9bbb469128e88a974c78e76457c3910babb4649447d901af19a60335a09ee1e",
    "swagger-ui.css": "b024df29b02b4943bf95cb835fce9d19d4559c14e374b0dd36a89b27a223a2da",
    "favicon-32x32.png": "3ed612f41e050ca5e7000cad6f1cbe7e7da39f65fca99c02e99e6591056e5837",
}


def _client() -> TestClient:
    state = ServerState(service=ScoringService(InMemoryStore([])))
    return TestClient(create_app(state), raise_server_exceptions=False)


def test_the_docs_page_loads_everything_from_this_server() -> None:
    with _client() as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        urls = re.findall(r'(?:src|href|url)\s*[=:]\s*"([^"]+)"', page.text)
        assert urls and all(u.startswith("/") for u in urls), urls  # no CDN, no other host
        assert "validatorUrl: null" in page.text  # the online validator badge would call out
        for url in urls:
            answer = client.get(url)
            assert answer.status_code == 200, url
        js = client.get("/docs/assets/swagger-ui-bundle.js")
        assert js.headers["content-type"].startswith("text/javascript") and len(js.content) > 1_000_000
        assert client.get("/docs/assets/secrets.txt").status_code == 404
        assert client.get("/docs/assets/..%2Fops.py").status_code == 404
        assert "/docs/assets/{name}" in client.get("/openapi.json").json()["paths"]


def test_the_vendored_files_are_unmodified_and_licensed() -> None:
    folder = resources.files("propensity.server").joinpath("static", "swagger-ui")
    for name in DOCS_ASSETS:
        assert hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest() == SHA256[name], name
    assert "Apache License" in folder.joinpath("LICENSE").read_text(encoding="utf-8")
    assert "5.32.0" in folder.joinpath("VENDORED.md").read_text(encoding="utf-8")
