"""The control plane on SQLite and on the real Postgres: migrations, workspaces, members and roles, tokens
(hashed, shown once, expiry, revocation), signed cookies/tickets, quotas against job rows, resource
ownership, the audit written in the same transaction and append-only in code and in the database, the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys

import pytest
import sqlalchemy as sa

from qmachina_assets.core.control import (
    AppendOnlyError,
    AuthError,
    ControlError,
    ControlPlane,
    NotFoundError,
    QuotaExceeded,
    Quotas,
    tokens,
)
from qmachina_assets.core.control import plane as planemod
from qmachina_assets.core.control.models import ALEMBIC_VERSION_TABLE, metadata
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry.database import normalize_url
from tests.support.databases import scratch_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db_url(request, tmp_path):
    admin = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    with scratch_database(request.param, tmp_path, admin, prefix="qm_control") as url:
        yield url


@pytest.fixture
def cp(db_url, tmp_path):
    c = ControlPlane(url=db_url, lake=tmp_path / "lake")
    yield c
    c.close()


def test_migration_creates_the_models_and_reopens(db_url, tmp_path):
    with ControlPlane(url=db_url, lake=tmp_path) as c:
        assert c.revision() == "0002_studio_sessions"
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        with c.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": ALEMBIC_VERSION_TABLE,
                                                         "compare_type": True})
            assert compare_metadata(ctx, metadata) == []
    with ControlPlane(url=db_url, lake=tmp_path) as c:
        assert set(c.count_rows().values()) == {0}


def test_workspace_members_roles_and_audit(cp):
    cp.create_workspace("team_a", actor="admin", owner="alice")
    with pytest.raises(ControlError, match="exists"):
        cp.create_workspace("team_a", actor="admin", owner="alice")
    for bad in ("Team", "../x", "a b", "", "x" * 65):
        with pytest.raises(ControlError, match="workspace"):
            cp.create_workspace(bad, actor="admin")
    cp.add_member("team_a", "bob", "viewer", actor="alice")
    with pytest.raises(ControlError, match="already"):
        cp.add_member("team_a", "bob", "editor", actor="alice")
    with pytest.raises(ControlError, match="role"):
        cp.add_member("team_a", "carol", "root", actor="alice")
    with pytest.raises(NotFoundError):
        cp.add_member("nope", "carol", "viewer", actor="alice")
    assert cp.set_role("team_a", "bob", "admin", actor="alice").role == "admin"
    with pytest.raises(ControlError, match="last owner"):
        cp.set_role("team_a", "alice", "viewer", actor="alice")
    with pytest.raises(ControlError, match="last owner"):
        cp.remove_member("team_a", "alice", actor="alice")
    assert [(m.user, m.role) for m in cp.members("team_a")] == [("alice", "owner"), ("bob", "admin")]
    actions = [(e.action, e.target, e.actor) for e in cp.audit("team_a")]
    assert actions == [("workspace.create", "workspace:team_a", "admin"), ("member.add", "member:alice", "admin"),
                       ("member.add", "member:bob", "alice"), ("member.role", "member:bob", "alice")]
    assert cp.audit("team_a", action="member.")[-1].detail == {"from": "viewer", "to": "admin"}
    assert [e.action for e in cp.audit("team_a", actor="admin")] == ["workspace.create", "member.add"]
    assert cp.audit("other") == []
    # refused operations wrote nothing
    assert len(cp.audit(None)) == 4


def test_tokens_hashed_shown_once_expiry_revocation(cp):
    cp.create_workspace("team_a", actor="admin", owner="alice")
    cp.add_member("team_a", "bob", "viewer", actor="alice")
    info, token = cp.create_token("team_a", "bob", actor="alice", label="laptop")
    assert token.startswith(info.token_id + "_") and tokens.parse_token(token) == info.token_id
    with cp.read() as conn:  # only the argon2id hash is stored, and the audit holds no secret
        stored = conn.execute(sa.select(planemod.api_tokens.c.secret_hash)).scalar_one()
        dumped = json.dumps([list(r) for t in metadata.sorted_tables for r in conn.execute(sa.select(t))],
                            default=str)
    assert stored.startswith("$argon2id$") and token not in dumped
    assert token.removeprefix(info.token_id + "_") not in dumped  # the secret part (it may hold "_")
    p = cp.authenticate(token)
    assert (p.workspace, p.user, p.role, p.token_id) == ("team_a", "bob", "viewer", info.token_id)
    assert p.actor == f"bob [{info.token_id}]" and p.allows("viewer") and not p.allows("editor")
    cp.set_role("team_a", "bob", "editor", actor="alice")  # a role change applies to the existing token
    assert cp.authenticate(token).role == "editor"
    for bad, reason in ((token[:-1] + ("A" if token[-1] != "A" else "B"), "unknown"), ("qm_x", "malformed"),
                        ("Bearer " + token, "malformed"), ("", "malformed"), (token + "x", "malformed"),
                        ("qm_aaaaaaaaaa_" + "a" * 43, "unknown")):
        with pytest.raises(AuthError) as e:
            cp.authenticate(bad)
        assert e.value.reason == reason, bad
    cp.revoke_token("team_a", info.token_id, actor="alice")
    with pytest.raises(AuthError) as e:  # revocation beats the verified-token cache
        cp.authenticate(token)
    assert e.value.reason == "revoked"
    with pytest.raises(NotFoundError):  # another workspace's token id is not found
        cp.create_workspace("team_b", actor="admin", owner="zed")
        cp.revoke_token("team_b", info.token_id, actor="zed")
    # expiry
    info2, token2 = cp.create_token("team_a", "bob", actor="alice", expires_in=dt.timedelta(seconds=1))
    assert cp.authenticate(token2).user == "bob"
    with cp.write() as conn:
        conn.execute(sa.update(planemod.api_tokens).where(planemod.api_tokens.c.token_id == info2.token_id)
                     .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    with pytest.raises(AuthError) as e:
        cp.authenticate(token2)
    assert e.value.reason == "expired"
    # removing the member revokes the rest
    _, token3 = cp.create_token("team_a", "bob", actor="alice", expires_in=None)
    assert cp.remove_member("team_a", "bob", actor="alice") == 2  # the expired one and token3
    with pytest.raises(AuthError) as e:
        cp.authenticate(token3)
    assert e.value.reason == "revoked"
    with pytest.raises(NotFoundError):
        cp.create_token("team_a", "bob", actor="alice")
    states = {t.token_id: t.state_at() for t in cp.tokens("team_a")}
    assert sorted(states.values()) == ["revoked", "revoked", "revoked"]
    assert [e.action for e in cp.audit("team_a", action="token.")] == ["token.create", "token.revoke",
                                                                        "token.create", "token.create"]


def test_signed_session_and_ticket(cp):
    cp.create_workspace("team_a", actor="admin", owner="alice")
    info, token = cp.create_token("team_a", "alice", actor="admin")
    p = cp.authenticate(token)
    cookie, exp = cp.issue(p, "session", 60)
    secret = token.removeprefix(info.token_id + "_")  # token_urlsafe may itself contain "_"
    assert info.token_id in cookie and len(secret) >= 40 and secret not in cookie and exp > 0
    assert cp.redeem(cookie, "session")[0] == p
    for forged in (cookie[:-2] + "xx", cookie.replace("session", "ticket"), "v1." + "a" * 40, ""):
        with pytest.raises(AuthError):
            cp.redeem(forged, "session")
    ticket, _ = cp.issue(p, "ticket", -1)  # already expired
    with pytest.raises(AuthError):
        cp.redeem(ticket, "ticket")
    cp.revoke_token("team_a", info.token_id, actor="alice")
    with pytest.raises(AuthError, match="revoked"):  # only as valid as its token
        cp.redeem(cookie, "session")


def test_quotas_count_job_rows(cp):
    cp.create_workspace("team_a", actor="admin", owner="alice")
    cp.create_workspace("team_b", actor="admin", owner="zed")
    cp.set_quotas("team_a", Quotas(max_concurrent_jobs=2, max_param_sets_per_day=100, max_cpu_seconds_per_day=50,
                                   max_concurrent_streams=1), actor="alice")
    assert cp.quotas("team_a").max_param_sets_per_day == 100 and cp.quotas("team_b") == Quotas()

    def launch(job_id, sets, cpu, ws="team_a"):
        with cp.write(ws) as conn:
            cp.check_job_quota(conn, ws, sets, cpu)
            cp.add_job(conn, job_id=job_id, workspace=ws, kind="sweep", target="exp", created_by="alice",
                       param_sets=sets, estimated_cpu_seconds=cpu)

    launch("j1", 60, 10)
    with pytest.raises(QuotaExceeded) as e:
        launch("j2", 41, 10)
    assert e.value.quota == "param_sets_per_day" and e.value.used == 60 and e.value.limit == 100
    assert e.value.resets_at == planemod.day_bounds(dt.datetime.now(dt.UTC))[1]
    with pytest.raises(QuotaExceeded, match="cpu_seconds_per_day"):
        launch("j2", 1, 41)
    launch("j2", 40, 40)
    with pytest.raises(QuotaExceeded) as e:
        launch("j3", 0, 0)
    assert e.value.quota == "concurrent_jobs" and e.value.resets_at is None
    cp.set_job_status("j1", "success", cpu_seconds=1.0)  # actual CPU replaces the estimate
    u = cp.usage("team_a")
    assert (u.concurrent_jobs, u.param_sets_today, u.cpu_seconds_today) == (1, 100, 41.0)
    launch("z1", 100, 100, "team_b")  # other workspaces have their own counts
    with pytest.raises(NotFoundError):
        cp.job("team_a", "z1")
    assert [j.job_id for j in cp.jobs("team_a")] == ["j2", "j1"]
    cp.check_stream_quota("team_a", 0)
    with pytest.raises(QuotaExceeded, match="concurrent_streams"):
        cp.check_stream_quota("team_a", 1)
    assert cp.audit("team_a", action="quota.set")[0].detail["to"]["max_concurrent_jobs"] == 2


def test_resources_visibility(cp):
    cp.create_workspace("default", actor="admin", owner="alice")
    cp.create_workspace("team_b", actor="admin", owner="zed")
    assert cp.register_resource("team_b", "experiment", "exp_b", actor="zed")
    assert not cp.register_resource("team_b", "experiment", "exp_b", actor="zed")
    with pytest.raises(ControlError, match="another workspace"):
        cp.register_resource("default", "experiment", "exp_b", actor="alice")
    cp.register_resource("team_b", "dataset", "ds1", actor="zed")
    cp.register_resource("default", "dataset", "ds1", actor="alice")  # datasets may be shared
    names = ["exp_b", "exp_free"]
    assert cp.visible("default", "experiment", names, "default") == {"exp_free"}
    assert cp.visible("team_b", "experiment", names, "default") == {"exp_b"}
    assert cp.visible("team_b", "dataset", ["ds1", "ds2"], "default") == {"ds1"}
    assert cp.visible("default", "dataset", ["ds1", "ds2"], "default") == {"ds1", "ds2"}


def test_audit_is_written_with_the_change_or_not_at_all(cp, monkeypatch):
    cp.create_workspace("team_a", actor="admin", owner="alice")
    before = cp.count_rows()

    def boom(*a, **k):
        raise RuntimeError("crash after the change, before the audit row")

    monkeypatch.setattr(ControlPlane, "audit_row", staticmethod(boom))
    with pytest.raises(RuntimeError):
        cp.add_member("team_a", "bob", "viewer", actor="alice")
    with pytest.raises(RuntimeError):
        cp.create_token("team_a", "alice", actor="alice")
    with pytest.raises(RuntimeError):
        cp.set_quotas("team_a", Quotas(max_concurrent_jobs=1), actor="alice")
    assert cp.count_rows() == before
    assert cp.quotas("team_a") == Quotas()


def test_audit_is_append_only_in_code_and_in_the_database(cp, db_url):
    cp.create_workspace("team_a", actor="admin", owner="alice")
    before = cp.count_rows()
    assert not [m for m in dir(ControlPlane) if "audit" in m and any(w in m for w in ("delete", "update", "edit"))]
    for stmt in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events", 'delete from "audit_events"'):
        with pytest.raises(AppendOnlyError, match="append-only"), cp.engine.begin() as conn:
            conn.exec_driver_sql(stmt)
    raw = sa.create_engine(normalize_url(db_url))
    for stmt in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(sa.exc.DBAPIError, match="immutable"), raw.begin() as conn:
            conn.exec_driver_sql(stmt)
    if raw.dialect.name == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="immutable"), raw.begin() as conn:
            conn.exec_driver_sql("TRUNCATE audit_events")
    raw.dispose()
    assert cp.count_rows() == before


def test_cli_workspace_member_token(tmp_path):
    env = {**os.environ, "QMACHINA_LAKE_DIR": str(tmp_path / "lake")}
    env.pop("QMACHINA_REGISTRY_URL", None)
    env.pop("QMACHINA_CONTROL_URL", None)

    def q(*args, ok=True):
        p = subprocess.run([sys.executable, "-m", "qmachina_assets.cli", *args], env=env, capture_output=True,
                           text=True, cwd=PROJECT_ROOT)
        assert (p.returncode == 0) == ok, p.stdout + p.stderr
        return p

    tf = tmp_path / "owner.token"
    q("workspace", "create", "team_a", "--owner", "alice", "--token-file", str(tf))
    assert stat.S_IMODE(tf.stat().st_mode) == 0o600 and tokens.parse_token(tf.read_text().strip())
    q("member", "add", "team_a", "bob", "viewer")
    q("member", "role", "team_a", "bob", "editor")
    created = json.loads(q("token", "create", "team_a", "bob", "--label", "ci", "--json").stdout)
    assert tokens.parse_token(created["token"]) == created["token_id"]
    listed = json.loads(q("token", "list", "team_a", "--json").stdout)
    assert {t["token_id"]: t["state"] for t in listed}[created["token_id"]] == "active"
    assert created["token"] not in json.dumps(listed)
    q("token", "revoke", "team_a", created["token_id"])
    assert "revoked" in q("token", "list", "team_a").stdout
    assert "last owner" in q("member", "remove", "team_a", "alice", ok=False).stderr
    q("member", "remove", "team_a", "bob")
    ws = json.loads(q("workspace", "list", "--json").stdout)
    assert [(w["name"], [m["user"] for m in w["members"]]) for w in ws] == [("team_a", ["alice"])]
    with ControlPlane(lake=tmp_path / "lake") as c:
        actions = [e.action for e in c.audit("team_a")]
        assert actions == ["workspace.create", "member.add", "token.create", "member.add", "member.role",
                           "token.create", "token.revoke", "member.remove"]
        assert all(e.actor.startswith("cli") for e in c.audit("team_a"))
