"""Real workspaces and tokens for tests (no bypass): `seed_access` creates a workspace with one member per
role and a real API token each, in the control plane of a lake (or a database URL); `Access` gives the
headers, an authenticated TestClient and the WebSocket headers.

    access = seed_access(lake)                       # workspace "default": owner, admin, editor, viewer
    client = access.client(app, "admin")             # TestClient sending Authorization: Bearer ...
    connect(uri, additional_headers=access.ws_headers("viewer"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient

from qmachina_assets.core.control import ROLES, ControlPlane
from qmachina_assets.core.control.models import DEFAULT_WORKSPACE


@dataclass(frozen=True)
class Access:
    workspace: str
    tokens: dict[str, str]  # role -> token of the member named after the role
    token_ids: dict[str, str] = field(default_factory=dict)

    def headers(self, role: str = "owner") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    ws_headers = headers  # websockets' `additional_headers`

    def client(self, app, role: str = "owner", **kw) -> TestClient:
        c = TestClient(app, **kw)
        c.headers.update(self.headers(role))
        return c


def seed_access(lake: Path | None = None, *, url: str | None = None, workspace: str = DEFAULT_WORKSPACE,
                roles: tuple[str, ...] = ROLES) -> Access:
    """A workspace (created if missing) with a member `<role>` (or `<workspace>_<role>` outside the default
    workspace) and one token per role in `roles`."""
    tokens, ids = {}, {}
    with ControlPlane(url=url, lake=lake) as cp:
        if workspace not in {w.name for w in cp.list_workspaces()}:
            cp.create_workspace(workspace, actor="tests", owner=_user(workspace, "owner"))
        members = {m.user for m in cp.members(workspace)}
        for role in roles:
            user = _user(workspace, role)
            if user not in members:
                cp.add_member(workspace, user, role, actor="tests")
            info, token = cp.create_token(workspace, user, actor="tests", label=f"tests {role}")
            tokens[role], ids[role] = token, info.token_id
    return Access(workspace, tokens, ids)


def _user(workspace: str, role: str) -> str:
    return role if workspace == DEFAULT_WORKSPACE else f"{workspace}_{role}"


def rest_client(lake: Path, configs: Path | None = None, role: str = "viewer", registry_factory=None) -> TestClient:
    """A TestClient of a bare app with the `/v1` router over `lake` (its registry and control plane), sending a
    real `role` token of the default workspace (`seed_access`)."""
    from fastapi import FastAPI

    from qmachina_serving.api import build_router

    app = FastAPI()
    app.include_router(build_router(registry_factory, lake, configs, control_factory=lambda: ControlPlane(lake=lake)))
    return seed_access(lake, roles=(role,)).client(app, role)
