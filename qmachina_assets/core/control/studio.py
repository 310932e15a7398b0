"""Model Studio sessions in the control plane: a session belongs to a workspace and moves through gated steps
(a step can be committed only when every step before it is); each commit is kept in the decision log and
audited. Re-committing a step replaces its payload (later steps stay as they were: the page shows what changed).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, insert, select, update

from qmachina_assets.core.control.errors import ControlError, NotFoundError
from qmachina_assets.core.control.models import studio_decisions, studio_sessions
from qmachina_assets.core.control.plane import ControlPlane

STEPS: tuple[str, ...] = ("data", "gold", "signal", "evaluation", "run", "compare", "promote")


class StepState(BaseModel):
    payload: dict[str, Any]
    committed_at: dt.datetime
    committed_by: str


class StudioSession(BaseModel):
    session_id: str
    workspace: str
    title: str
    status: str  # draft | in_progress | promoted
    steps: dict[str, StepState]
    next_step: str | None  # the first step not committed yet
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class Decision(BaseModel):
    id: int
    step: str
    payload: dict[str, Any]
    actor: str
    at: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _session(row: Any) -> StudioSession:
    steps = {k: StepState.model_validate(v) for k, v in json.loads(row.steps).items()}
    return StudioSession(session_id=row.session_id, workspace=row.workspace, title=row.title, status=row.status,
                         steps=steps, next_step=next((s for s in STEPS if s not in steps), None),
                         created_by=row.created_by, created_at=_utc(row.created_at), updated_at=_utc(row.updated_at))


def create_session(cp: ControlPlane, workspace: str, *, actor: str, title: str = "") -> StudioSession:
    sid = uuid.uuid4().hex[:12]
    now = _now()
    with cp.write(workspace) as conn:
        cp._workspace(conn, workspace)
        conn.execute(insert(studio_sessions).values(session_id=sid, workspace=workspace, title=title[:200] or sid,
                                                    status="draft", steps="{}", created_by=actor, created_at=now,
                                                    updated_at=now))
        cp.audit_row(conn, workspace=workspace, actor=actor, action="studio.create", target=f"studio:{sid}",
                     payload={"title": title})
    return get_session(cp, workspace, sid)


def get_session(cp: ControlPlane, workspace: str, session_id: str) -> StudioSession:
    with cp.read() as conn:
        row = conn.execute(select(studio_sessions).where(and_(studio_sessions.c.workspace == workspace,
                                                              studio_sessions.c.session_id == session_id))).first()
    if row is None:
        raise NotFoundError(f"no studio session {session_id!r}")
    return _session(row)


def list_sessions(cp: ControlPlane, workspace: str, limit: int = 100) -> list[StudioSession]:
    with cp.read() as conn:
        rows = conn.execute(select(studio_sessions).where(studio_sessions.c.workspace == workspace)
                            .order_by(studio_sessions.c.updated_at.desc()).limit(limit)).all()
    return [_session(r) for r in rows]


def commit_step(cp: ControlPlane, workspace: str, session_id: str, step: str, payload: dict[str, Any], *,
                actor: str, status: str | None = None) -> StudioSession:
    """Commit `step` (ControlError when an earlier step is not committed); logged and audited."""
    if step not in STEPS:
        raise ControlError(f"unknown step {step!r} (steps: {', '.join(STEPS)})")
    now = _now()
    with cp.write(workspace) as conn:
        row = conn.execute(select(studio_sessions).where(and_(studio_sessions.c.workspace == workspace,
                                                              studio_sessions.c.session_id == session_id))).first()
        if row is None:
            raise NotFoundError(f"no studio session {session_id!r}")
        steps = json.loads(row.steps)
        missing = [s for s in STEPS[:STEPS.index(step)] if s not in steps]
        if missing:
            raise ControlError(f"step {step!r} needs {', '.join(repr(m) for m in missing)} committed first")
        steps[step] = {"payload": payload, "committed_at": now.isoformat(), "committed_by": actor}
        new_status = status or ("in_progress" if row.status == "draft" else row.status)
        conn.execute(update(studio_sessions).where(studio_sessions.c.session_id == session_id)
                     .values(steps=json.dumps(steps, sort_keys=True, default=str), status=new_status, updated_at=now))
        conn.execute(insert(studio_decisions).values(session_id=session_id, step=step, actor=actor, at=now,
                                                     payload=json.dumps(payload, sort_keys=True, default=str)))
        cp.audit_row(conn, workspace=workspace, actor=actor, action="studio.commit",
                     target=f"studio:{session_id}:{step}", payload=payload)
    return get_session(cp, workspace, session_id)


def decisions(cp: ControlPlane, workspace: str, session_id: str) -> list[Decision]:
    get_session(cp, workspace, session_id)  # 404 for another workspace's
    with cp.read() as conn:
        rows = conn.execute(select(studio_decisions).where(studio_decisions.c.session_id == session_id)
                            .order_by(studio_decisions.c.id)).all()
    return [Decision(id=r.id, step=r.step, payload=json.loads(r.payload), actor=r.actor, at=_utc(r.at)) for r in rows]
