"""The serving process serves the built browser client at `/`, behind every API route."""

from __future__ import annotations

from fastapi.testclient import TestClient

from qmachina_serving.app import create_app
from qmachina_serving.settings import ServingSettings


def _client(tmp_path, web) -> TestClient:
    lake = tmp_path / "lake"
    lake.mkdir(exist_ok=True)
    return TestClient(create_app(ServingSettings(lake_dir=lake, web_dir=web)))  # no lifespan: no engine warm-up


def test_client_pages_served_after_api_routes(tmp_path):
    web = tmp_path / "dist"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<html>viewer</html>")
    (web / "registry.html").write_text("<html>registry</html>")
    (web / "assets" / "app.js").write_text("console.log(1)")
    c = _client(tmp_path, web)
    assert c.get("/").text == "<html>viewer</html>"
    assert c.get("/registry.html").text == "<html>registry</html>"
    assert c.get("/assets/app.js").headers["content-type"].startswith("text/javascript")
    assert c.get("/healthz").json() == {"status": "ok"}  # API routes win over the static mount
    assert c.get("/nope.html").status_code == 404


def test_missing_build_is_named(tmp_path):
    c = _client(tmp_path, tmp_path / "not_built")
    r = c.get("/")
    assert r.status_code == 404 and "make web-build" in r.json()["detail"]
    assert c.get("/healthz").status_code == 200
