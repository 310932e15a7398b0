"""Attacks on the serving process's access control (issue 17). Every case runs against the real app
(`create_app`: REST, login, the WebSocket stream) over a lake whose SQLite database holds the registry and
the control plane, and compares the whole database (every row of every table) and the lake's file tree
before and after: nothing an attacker does may change either.

Cases: no / malformed / expired / revoked / removed-member tokens on every route; every route of one
workspace tried from another with the first's real ids; role escalation (viewer, editor, admin on every
admin/owner route, with bodies that would change something); SQL injection strings in every path
parameter and filter; path traversal in spec names; oversized bodies; the WebSocket without credentials,
with forged/reused tickets and with another workspace's alias or version; brute force on a token id
(rate limited); a cross-site cookie-authenticated POST.

The outcome matrix is written to `test-artifacts/security/attack_matrix.md` (QMACHINA_SECURITY_ARTIFACTS
overrides) and printed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from qmachina_assets.core.control import ControlPlane
from qmachina_assets.core.control import plane as planemod
from qmachina_assets.core.control import studio as studio_sessions
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry import Registry
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.evaluation import METRIC_NAMES
from qmachina_serving.app import create_app
from qmachina_serving.settings import ServingSettings
from tests.support.auth import Access, seed_access

SERVING = PROJECT_ROOT / "configs" / "serving"
EXP, EXP_B = "flow_score_sweep", "b_private_sweep"
INJECTIONS = ("' OR '1'='1", "1; DROP TABLE audit_events; --", '" OR 1=1 --', "%' --", "live' UNION SELECT * FROM "
              "api_tokens --", "\\x00", "admin [qm_aaaaaaaaaa]' OR 'x'='x")
TRAVERSALS = ("..", "../..", "../registry", "..%2F..%2Fregistry", "%2e%2e", "....//....//etc", "/etc/passwd",
              "..\\..\\registry", ".hidden")

MATRIX: list[tuple[str, str, int, str]] = []  # (case, target, attempts, outcome)


def record(case: str, target: str, attempts: int, outcome: str) -> None:
    MATRIX.append((case, target, attempts, outcome))


@pytest.fixture(scope="module", autouse=True)
def _write_matrix() -> Iterator[None]:
    yield
    out = Path(os.environ.get("QMACHINA_SECURITY_ARTIFACTS", PROJECT_ROOT / "test-artifacts" / "security"))
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| case | target | attempts | outcome (database and lake unchanged in every case) |",
             "|---|---|---|---|", *(f"| {c} | {t} | {n} | {o} |" for c, t, n, o in MATRIX)]
    (out / "attack_matrix.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


# ---- the world --------------------------------------------------------------------------------------


def _rows(sweep_id: str, experiment: str, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row = {"sweep_id": sweep_id, "experiment": experiment, "test_date": "2024-01-03", "run_id": f"{sweep_id}-{i}",
               "param_hash": f"p{i}", "signal": "flow_score", "params_json": json.dumps({"threshold": i}),
               "selected": i == 0, "threshold": float(i), "tp_ticks": 4.0, "sl_ticks": 4.0, "cooldown_bins": 0.0}
        for tag in ("is", "oos"):
            for m in METRIC_NAMES:
                row[f"{tag}_{m}"] = float(i)
        rows.append(row)
    return rows


class World:
    def __init__(self, root: Path):
        self.lake = root / "lake"
        with Registry(lake=self.lake) as reg:
            def reg_id(spec: str, reason: str) -> str:
                return reg.register(SERVING / spec, alias="live", actor="t", reason=reason,
                                    expected_version_id=reg.current("live")).version.version_id

            self.v1, self.v2 = reg_id("vp_flow_score.yaml", "a"), reg_id("vp_derivative.yaml", "b")
            self.vb = reg.register(SERVING / "ema_ensemble.yaml", alias="b_live", actor="t", reason="b's",
                                   workspace="team_b", expected_version_id=None).version.version_id
        sweeps.append_results(self.lake, pa.Table.from_pylist(_rows("aaaa111122223333", EXP, 2)))
        sweeps.append_results(self.lake, pa.Table.from_pylist(_rows("bbbb111122223333", EXP_B, 2)))
        self.run_a, self.run_b = "aaaa111122223333-0", "bbbb111122223333-0"
        ds = self.lake / "research" / "datasets" / "ds_default_only"
        ds.mkdir(parents=True)
        (ds / "manifest.json").write_text("{}")  # exists (409 when read) for default, invisible to team_b
        self.a = seed_access(self.lake)  # default: owner, admin, editor, viewer
        self.b = seed_access(self.lake, workspace="team_b")
        with ControlPlane(lake=self.lake) as cp:
            cp.register_resource("team_b", "experiment", EXP_B, actor="t")
            cp.register_resource("default", "dataset", "ds_default_only", actor="t")
            cp.signing_key()  # created once, before any snapshot
            # a studio session and a job row of the default workspace: their real ids for the cross-workspace test
            self.sid = studio_sessions.create_session(cp, "default", actor="t", title="a's").session_id
            self.job_id = "j_" + "a" * 16
            with cp.write("default") as conn:
                cp.add_job(conn, job_id=self.job_id, workspace="default", kind="experiment", target=EXP,
                           created_by="t", param_sets=1, estimated_cpu_seconds=1.0, status="success",
                           detail={"runs": ["r1"]})

    def app(self) -> Any:
        app = create_app(ServingSettings(lake_dir=self.lake, web_dir=self.lake / "no_web",
                                         cors_origins=["http://pages.test"]))
        app.state.hub.ready = True  # the stream's checks run (no engine warm-up needed to refuse)
        return app

    def snapshot(self) -> dict[str, Any]:
        """Every row of every table, and the lake's files (the database files aside)."""
        engine = sa.create_engine(f"sqlite:///{self.lake / 'registry' / 'serving_registry.sqlite'}")
        try:
            with engine.connect() as conn:
                tables = {t: sorted(map(repr, conn.exec_driver_sql(f'SELECT * FROM "{t}"').all()))
                          for t in sa.inspect(conn).get_table_names()}
        finally:
            engine.dispose()
        files = sorted((str(p.relative_to(self.lake)), p.stat().st_size) for p in self.lake.rglob("*")
                       if p.is_file() and ".sqlite" not in p.name)
        return {"tables": tables, "files": files}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("attacks"))


@pytest.fixture
def app(world):
    a = world.app()
    yield a
    _close(a)


def _close(app) -> None:
    auth = getattr(app.state, "auth", None)
    if auth is not None:
        auth.close()
    app.state.source.close()


@pytest.fixture
def unchanged(world) -> Iterator[None]:
    """The database and the lake are exactly as before the test."""
    before = world.snapshot()
    yield
    after = world.snapshot()
    for t in before["tables"]:
        assert after["tables"][t] == before["tables"][t], f"table {t} changed"
    assert after == before


@contextlib.contextmanager
def _client(app, access: Access | None = None, role: str = "owner", address: str = "testclient"
            ) -> Iterator[TestClient]:
    """A client of `app` (without its lifespan: no engine warm-up), sending `access`'s token of `role`."""
    c = TestClient(app, client=(address, 50000))
    if access is not None:
        c.headers.update(access.headers(role))
    yield c


def _routes(app) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route under /v1, whoever added it (from the app's OpenAPI schema)."""
    return sorted((m.upper(), p) for p, item in app.openapi()["paths"].items() if p.startswith("/v1")
                  for m in item if m in ("get", "post", "put", "patch", "delete"))


def _fill(path: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        path = path.replace("{" + k + "}", quote(v, safe=""))
    return path.replace("{", "x").replace("}", "x") if "{" in path else path


ID_PARAMS = ("alias", "version_id", "name", "run_id", "dataset_id", "user", "token_id", "job_id", "sid")
#: Routes that create an object of the caller's own workspace (the cross-workspace test leaves them out: they
#: name no one's id and would change the tables it checks are unchanged).
CREATES = {("POST", "/v1/studio/sessions"), ("POST", "/v1/jobs")}


def _names_an_id(path: str) -> bool:
    """A route addressing one object of a workspace (global things such as AutoML templates and shipped Gold DSL
    specs are not)."""
    return path == "/v1/serving/diff" or any("{" + p + "}" in path for p in ID_PARAMS)


def _ids(world: World, access: Access) -> dict[str, str]:
    """Real ids of the default workspace (what another workspace's attacker would try)."""
    return {"alias": "live", "version_id": world.v1, "name": EXP, "run_id": world.run_a,
            "dataset_id": "ds_default_only", "user": "viewer", "token_id": access.token_ids["viewer"],
            "job_id": world.job_id, "sid": world.sid}


# ---- authentication --------------------------------------------------------------------------------


def test_every_v1_route_needs_a_valid_credential(world, app):
    routes = _routes(app)
    assert len(routes) >= 20  # serving, experiments, datasets, workspace, audit, auth, stream stats (+ newer ones)
    with ControlPlane(lake=world.lake) as cp:
        expired, t_exp = cp.create_token("default", "viewer", actor="t", expires_in=dt.timedelta(seconds=30))
        revoked, t_rev = cp.create_token("default", "viewer", actor="t")
        cp.revoke_token("default", revoked.token_id, actor="t")
        cp.add_member("default", "leaver", "admin", actor="t")
        _, t_gone = cp.create_token("default", "leaver", actor="t")
        cp.remove_member("default", "leaver", actor="t")
        with cp.write() as conn:
            conn.execute(sa.update(planemod.api_tokens).where(planemod.api_tokens.c.token_id == expired.token_id)
                         .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    creds = {
        "none": {},
        "malformed: not a qm token": {"Authorization": "Bearer hunter2"},
        "malformed: wrong scheme": {"Authorization": f"Basic {world.a.tokens['owner']}"},
        "malformed: truncated": {"Authorization": f"Bearer {world.a.tokens['owner'][:-3]}"},
        "malformed: cookie garbage": {"Cookie": "qm_session=v1.qm_aaaaaaaaaa.session.9999999999.x.y"},
        "expired token": {"Authorization": f"Bearer {t_exp}"},
        "revoked token": {"Authorization": f"Bearer {t_rev}"},
        "removed member's token": {"Authorization": f"Bearer {t_gone}"},
    }
    snap = world.snapshot()  # the tokens above are the test's set-up; the attacks start here
    ids = _ids(world, world.a)
    for label, headers in creds.items():
        app2 = world.app()
        codes = {}
        for i, (method, path) in enumerate(routes):
            # each request from its own address: the failure rate limiter (tested below) stays out of the way
            with _client(app2, address=f"10.1.{i // 250}.{i % 250}") as c:
                r = c.request(method, _fill(path, ids), headers=headers, json={})
            codes[(method, path)] = r.status_code
            assert r.status_code == 401, (label, method, path, r.status_code, r.text)
            assert "WWW-Authenticate" in r.headers
        _close(app2)
        record("authentication", label, len(codes), "401 on every /v1 route")
    assert world.snapshot() == snap
    # the open probes stay open
    with _client(app) as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code in (200, 503)


# ---- isolation between workspaces ------------------------------------------------------------------


def test_another_workspace_is_not_found_with_real_ids(world, app, unchanged):
    """team_b's owner tries every route with default's real ids: 404, and list routes leak nothing."""
    ids = {**_ids(world, world.a), "step": "data"}
    bodies = {"/v1/serving/diff": {"a": world.v1, "b": "live"},
              "/v1/serving/aliases/{alias}/activate": {"version_id": world.v1, "reason": "take it",
                                                       "expected_version_id": world.v2},
              "/v1/serving/aliases/{alias}/rollback": {"reason": "take it", "expected_version_id": world.v2},
              "/v1/workspace/members/{user}": {"role": "owner"},
              "/v1/workspace/tokens/{token_id}/revoke": {},
              "/v1/studio/sessions/{sid}/promote": {"alias": "take_it"},
              "/v1/studio/sessions/{sid}/steps/{step}": {"payload": {"pipeline": "es_rth_1h"}},
              "/v1/studio/sessions/{sid}/yaml": {"serving_yaml": "name: x", "experiment_yaml": "serving: x"},
              "/v1/studio/sessions/{sid}/gold/validate": {"spec_yaml": "version: 1"},
              "/v1/studio/sessions/{sid}/gold/preview": {"spec_yaml": "version: 1"}}
    secrets = [world.v1, world.v2, world.run_a, "ds_default_only", world.a.token_ids["viewer"], "'viewer'"]
    n = 0
    with _client(app, world.b, "owner") as c:
        for method, path in _routes(app):
            if (method, path) in CREATES:
                continue
            url = _fill(path, ids)
            r = c.request(method, url, json=bodies.get(path, {}))
            n += 1
            if _names_an_id(path):  # routes naming a workspace's object (in the path or the body)
                assert r.status_code == 404, (method, path, r.status_code, r.text)
            else:
                assert r.status_code < 500, (method, path, r.text)
                leaked = [s for s in secrets if s in r.text]
                assert not leaked, (method, path, leaked)
        # and the list routes hold team_b's own things only
        assert [a["name"] for a in c.get("/v1/serving/aliases").json()] == ["b_live"]
        assert {v["version_id"] for v in c.get("/v1/serving/versions").json()} == {world.vb}
        assert [e["name"] for e in c.get("/v1/experiments").json()] == [EXP_B]
        assert c.get("/v1/datasets").json() == []
        assert {e["workspace"] for e in c.get("/v1/audit").json()} == {"team_b"}
        assert {m["user"] for m in c.get("/v1/workspace/members").json()} == {f"team_b_{r}" for r in
                                                                               ("owner", "admin", "editor",
                                                                                "viewer")}
    with _client(app, world.a, "owner") as c:  # and the other way round
        assert c.get(f"/v1/serving/versions/{world.vb}").status_code == 404
        assert c.get("/v1/serving/aliases/b_live").status_code == 404
        assert c.get(f"/v1/experiments/{EXP_B}/runs").status_code == 404
        assert c.get(f"/v1/experiments/{EXP_B}/runs/{world.run_b}").status_code == 404
        assert c.post("/v1/serving/aliases/live/activate",
                      json={"version_id": world.vb, "reason": "x", "expected_version_id": world.v2}).status_code == 404
        assert c.post(f"/v1/workspace/tokens/{world.b.token_ids['viewer']}/revoke").status_code == 404
        assert c.get("/v1/datasets/ds_default_only").status_code == 409  # it exists (and is broken) for default
        n += 8
    record("cross-workspace", "every /v1 route with the other workspace's real ids", n,
           "404 on every route naming an id; lists show own objects only")


# ---- authorization by role -------------------------------------------------------------------------

ADMIN_ROUTES = {("POST", "/v1/serving/aliases/{alias}/activate"), ("POST", "/v1/serving/aliases/{alias}/rollback"),
                ("PUT", "/v1/workspace/quotas"), ("GET", "/v1/audit"), ("GET", "/v1/stream/stats")}
OWNER_ROUTES = {("POST", "/v1/workspace/members"), ("PUT", "/v1/workspace/members/{user}"),
                ("DELETE", "/v1/workspace/members/{user}"), ("POST", "/v1/workspace/tokens")}


def _escalation_bodies(world: World) -> dict[str, Any]:
    return {"/v1/serving/aliases/{alias}/activate": {"version_id": world.v1, "reason": "escalate",
                                                     "expected_version_id": world.v2},
            "/v1/serving/aliases/{alias}/rollback": {"reason": "escalate", "expected_version_id": world.v2},
            "/v1/workspace/quotas": {"max_concurrent_jobs": 1000, "max_param_sets_per_day": 10**8,
                                     "max_cpu_seconds_per_day": 1e9, "max_concurrent_streams": 1000},
            "/v1/workspace/members": {"user": "mallory", "role": "owner"},
            "/v1/workspace/members/{user}": {"role": "owner"},
            "/v1/workspace/tokens": {"user": "owner", "label": "stolen"}}


def test_role_escalation_is_refused(world, app, unchanged):
    ids = {**_ids(world, world.a), "user": "editor"}
    bodies = _escalation_bodies(world)
    routes = set(_routes(app))
    assert routes >= ADMIN_ROUTES | OWNER_ROUTES
    for role in ("viewer", "editor", "admin"):
        targets = sorted(OWNER_ROUTES if role == "admin" else ADMIN_ROUTES | OWNER_ROUTES)
        with _client(app, world.a, role) as c:
            for method, path in targets:
                r = c.request(method, _fill(path, ids), json=bodies.get(path, {}))
                assert r.status_code == 403, (role, method, path, r.status_code, r.text)
                assert r.json()["detail"]["role"] == role
            # a member revokes only their own tokens
            r = c.post(f"/v1/workspace/tokens/{world.a.token_ids['owner']}/revoke")
            assert r.status_code == 404, r.text
            own = c.get("/v1/workspace/tokens").json()
            assert {t["user"] for t in own} == {role}  # not the others' tokens
        record("role escalation", f"{role} on {'owner' if role == 'admin' else 'admin + owner'} routes",
               len(targets) + 2, "403 naming the required role; others' tokens not listed, not revocable (404)")


# ---- injection and traversal -----------------------------------------------------------------------


def test_sql_injection_in_every_path_parameter_and_filter(world, app, unchanged):
    n = 0
    with _client(app, world.a, "owner") as c:  # the most powerful caller reaches every handler
        for s in INJECTIONS:
            for method, path in _routes(app):
                if "{" not in path:
                    continue
                values = dict.fromkeys((*ID_PARAMS, "template", "spec"), s)
                r = c.request(method, _fill(path, values), json={"reason": s, "version_id": s, "role": "viewer"})
                n += 1
                assert r.status_code in (404, 405, 422), (s, method, path, r.status_code, r.text)
            for q in ({"action": s}, {"actor": s}, {"target": s}, {"since": s}):
                r = c.get("/v1/audit", params=q)
                n += 1
                assert r.status_code == 422, (q, r.status_code)
            for q in ({"signal": s}, {"test_date": s}, {"sort": s}, {"order": s}, {"min_oos_trades": s}):
                r = c.get(f"/v1/experiments/{EXP}/runs", params=q)
                n += 1
                assert r.status_code == 422, (q, r.status_code)
            r = c.post("/v1/serving/diff", json={"a": s, "b": "live"})
            n += 1
            assert r.status_code == 422
            r = c.post("/auth/login", json={"token": s})
            n += 1
            assert r.status_code in (401, 422)
        record("SQL injection", "every path parameter, audit and runs filters, diff body, login token", n,
               "404/422 (401 at login); never 5xx")


def test_path_traversal_in_names(world, app, unchanged):
    n = 0
    with _client(app, world.a, "owner") as c:
        for t in TRAVERSALS:
            for url in (f"/v1/experiments/{t}/runs", f"/v1/experiments/{quote(t, safe='')}/runs",
                        f"/v1/experiments/{EXP}/runs/{quote(t, safe='')}", f"/v1/datasets/{quote(t, safe='')}",
                        f"/v1/serving/versions/{quote(t, safe='')}", f"/v1/serving/aliases/{quote(t, safe='')}",
                        f"/v1/experiments/{EXP}/runs/{quote(t, safe='')}/equity",
                        f"/v1/studio/gold/specs/{quote(t, safe='')}", f"/v1/studio/gold/specs/{t}"):
                r = c.get(url)
                n += 1
                assert r.status_code in (404, 405, 422), (url, r.status_code, r.text)
                assert "root:" not in r.text
        r = c.get("/../../../../etc/passwd")
        n += 1
        assert r.status_code == 404 and "root:" not in r.text
    record("path traversal", "experiment names, run ids, dataset ids, versions, aliases, gold specs, static files", n,
           "404/422; nothing outside the lake read")


def test_oversized_bodies(world, app, unchanged):
    big = "x" * (2 * 1024 * 1024)
    n = 0
    with _client(app, world.a, "owner") as c:
        for method, url, body in (("POST", "/auth/login", {"token": big}),
                                  ("POST", "/v1/serving/diff", {"a": big, "b": "live"}),
                                  ("POST", "/v1/workspace/members", {"user": big, "role": "viewer"}),
                                  ("POST", "/v1/serving/aliases/live/rollback", {"reason": big}),
                                  ("PUT", "/v1/workspace/quotas", {"max_concurrent_jobs": 1, "pad": big})):
            r = c.request(method, url, json=body)
            n += 1
            assert r.status_code == 413, (url, r.status_code)

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(40):
                yield b"x" * 65536

        r = c.post("/v1/serving/aliases/live/rollback", content=chunks(), headers={"content-type": "application/json"})
        n += 1
        assert r.status_code == 413
    record("oversized bodies", "login, diff, members, rollback, quotas; chunked", n, "413 before parsing")


# ---- the stream ------------------------------------------------------------------------------------


def _ws(app, query: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with _client(app) as c, c.websocket_connect(f"/v1/stream?{query}", headers=headers or {}) as ws:
        msg = json.loads(ws.receive_text())
        try:
            ws.receive_text()
        except WebSocketDisconnect as exc:
            msg["close"] = exc.code
        return msg


def test_websocket_credentials_and_isolation(world, app, unchanged):
    cases = [
        ("no credentials", "serving=live", {}, 4401),
        ("token in the URL (not accepted)", f"serving=live&token={world.a.tokens['viewer']}", {}, 4401),
        ("forged ticket", "serving=live&ticket=v1.qm_aaaaaaaaaa.ticket.9999999999.n.sig", {}, 4401),
        ("malformed bearer", "serving=live", {"Authorization": "Bearer nope"}, 4401),
        ("another workspace's alias", "serving=b_live", world.a.headers("viewer"), 4404),
        ("another workspace's version id", f"serving={world.vb}", world.a.headers("viewer"), 4404),
        ("from team_b: default's alias", "serving=live", world.b.headers("viewer"), 4404),
        ("from team_b: default's version id", f"serving={world.v1}", world.b.headers("viewer"), 4404),
    ]
    for label, query, headers, code in cases:
        got = _ws(app, query, headers)
        assert got["type"] == "error" and got["code"] == code, (label, got)
        assert world.a.tokens["viewer"] not in json.dumps(got)
        record("WebSocket", label, 1, f"error + close {code}")
    with _client(app) as c:  # a ticket is single use and names its token's workspace only
        t = c.post("/v1/auth/ticket", headers=world.b.headers("viewer")).json()["ticket"]
    assert _ws(app, f"serving=live&ticket={t}")["code"] == 4404  # team_b's ticket cannot reach default's alias
    assert _ws(app, f"serving=b_live&ticket={t}")["code"] == 4401  # and it was spent
    record("WebSocket", "ticket: another workspace's alias, then reuse", 2, "4404, then 4401 (single use)")


def test_stream_quota_refuses_with_what_and_when(world, app):
    with ControlPlane(lake=world.lake) as cp:
        cp.set_quotas("team_b", cp.quotas("team_b").model_copy(update={"max_concurrent_streams": 0}), actor="t")
    try:
        got = _ws(app, "serving=b_live", world.b.headers("viewer"))
        assert got["code"] == 4429 and got["quota"] == "concurrent_streams" and got["limit"] == 0
        assert got["resets_at"] is None and "frees up" in got["message"]
        record("quota", "concurrent streams of team_b (limit 0)", 1, "error 4429 naming the quota and its reset")
    finally:
        with ControlPlane(lake=world.lake) as cp:
            cp.set_quotas("team_b", planemod.Quotas(), actor="t")


# ---- brute force, CSRF -------------------------------------------------------------------------------


def test_brute_force_on_a_token_id_is_rate_limited(world, unchanged):
    app = world.app()
    try:
        tid = world.a.token_ids["viewer"]
        statuses = []
        with _client(app) as c:
            cached = world.a.headers("owner")
            assert c.get("/v1/auth/me", headers=cached).status_code == 200  # verified once: cached
            for i in range(12):
                guess = f"{tid}_{'A' * 42}{'BCDEFGHIJKLMN'[i]}"
                statuses.append(c.get("/v1/auth/me", headers={"Authorization": f"Bearer {guess}"}).status_code)
            blocked = c.get("/v1/auth/me", headers=world.a.headers("viewer"))  # the real token of that id
            login = c.post("/auth/login", json={"token": world.a.tokens["viewer"]})
            still = c.get("/v1/auth/me", headers=cached)
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429], statuses
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
        assert blocked.json()["detail"]["quota"] == "auth_failures"
        assert login.status_code == 429
        assert still.status_code == 200  # an already verified token keeps working
        record("brute force", f"12 guessed secrets for token id {tid[:5]}…", 14,
               "401 ×10, then 429 with Retry-After (also for the real secret and /auth/login); cached tokens "
               "unaffected")
    finally:
        _close(app)


def test_cross_site_cookie_post_is_refused(world, app, unchanged):
    with _client(app) as c:
        r = c.post("/auth/login", json={"token": world.a.tokens["viewer"]})
        assert r.status_code == 200
        cookie = r.cookies.get("qm_session")
        assert cookie and world.a.tokens["viewer"] not in cookie
        assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
        c.cookies.set("qm_session", cookie)
        assert c.get("/v1/auth/me").json()["user"] == "viewer"  # the session works for reads ...
        evil = c.post("/v1/auth/ticket", headers={"Origin": "http://evil.test"})
        assert evil.status_code == 403  # ... but a cross-site POST riding on it is refused
        assert c.post("/v1/auth/ticket", headers={"Origin": "http://pages.test"}).status_code == 200
        forged = cookie.rsplit(".", 1)[0] + ".AAAA"
        c.cookies.set("qm_session", forged)
        assert c.get("/v1/auth/me").status_code == 401
    record("CSRF / cookie", "cross-site POST with a session cookie; forged cookie signature", 2, "403; 401")


def test_audit_has_no_write_path(world, app, unchanged):
    with _client(app, world.a, "owner") as c:
        codes = [c.request(m, "/v1/audit").status_code for m in ("POST", "PUT", "PATCH", "DELETE")]
    assert codes == [405] * 4
    record("audit tampering", "POST/PUT/PATCH/DELETE /v1/audit", 4, "405 (no such route); rows append-only in the "
                                                                    "database too")
