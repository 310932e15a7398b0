"""`GET /v1/audit` (admin): the workspace's audit, oldest first — the control plane's rows (members, tokens,
quotas, jobs, registrations) and the serving registry's alias history (promote, register, activate,
rollback) in one list. Filters: `action` (exact, or a prefix ending in `.`: `member.`, `serving.`),
`actor` (a user, or the exact actor string), `target` (`alias:live`, `member:bob`, `token:qm_...`),
`since`/`until` (ISO times), `limit` (the newest `limit` rows)."""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from qmachina_assets.core.control import AuditEvent
from qmachina_assets.core.registry import AliasEvent
from qmachina_serving.api.common import DOWN, ApiContext, control_call, registry_call

FILTER = r"^[A-Za-z0-9_.:@+\[\] -]*$"


def registry_event(e: AliasEvent) -> AuditEvent:
    return AuditEvent(id=f"s{e.id}", source="registry", workspace=e.workspace, actor=e.actor,
                      action=f"serving.{e.action}", target=f"alias:{e.alias}", payload_sha256=None,
                      detail={"from_version": e.from_version, "to_version": e.to_version, "reason": e.reason},
                      at=e.at)


def _keep(e: AuditEvent, action: str | None, actor: str | None, target: str | None, since: dt.datetime | None,
          until: dt.datetime | None) -> bool:
    if action and not (e.action.startswith(action) if action.endswith(".") else e.action == action):
        return False
    if actor and not (e.actor == actor or e.actor.startswith(f"{actor} [")):
        return False
    if target and e.target != target:
        return False
    return not ((since and e.at < since) or (until and e.at >= until))


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter(tags=["audit"])
    Admin = ctx.role("admin")
    Control = ctx.control_dep()
    Reg = ctx.registry_dep()

    @r.get("/audit", response_model=list[AuditEvent], responses=DOWN)
    def audit(
        who: Admin,
        cp: Control,
        reg: Reg,
        action: Annotated[str | None, Query(max_length=64, pattern=FILTER)] = None,
        actor: Annotated[str | None, Query(max_length=128, pattern=FILTER)] = None,
        target: Annotated[str | None, Query(max_length=256, pattern=FILTER)] = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> list[AuditEvent]:
        since, until = (None if t is None else t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in (since, until))
        rows = control_call(lambda: cp.audit(who.workspace, action=action, actor=actor, target=target,
                                             since=since, until=until, limit=limit))
        rows += [ev for e in registry_call(lambda: reg.history(None, who.workspace))
                 if _keep(ev := registry_event(e), action, actor, target, since, until)]
        rows.sort(key=lambda e: (e.at, e.id))
        return rows[-limit:]

    return r
