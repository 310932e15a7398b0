"""The control plane: workspaces, members, API tokens, quotas, resource ownership, jobs and the audit.

Storage is SQLAlchemy 2.x Core on the registry's database family, by default the registry's own database
(`QMACHINA_CONTROL_URL` > `QMACHINA_REGISTRY_URL` > SQLite `{lake}/registry/serving_registry.sqlite`), so
one variable moves both to Postgres; its own Alembic environment and version table, migrated on open.
Nothing here imports a web framework: the CLI and the serving process share it.

Invariants:
- **Audit in the same transaction**: every mutating method writes its `audit_events` row in the transaction
  of the change (actor, action, target, sha256 of the canonical payload, a secret-free summary); a failure
  leaves neither. The audit is append-only: no code path updates or deletes it, the engine refuses such
  statements and database triggers refuse them too.
- **Writers serialize**: SQLite transactions start with `BEGIN IMMEDIATE`; on Postgres rows that are
  counted (quota checks) are locked per workspace with an advisory lock.
- **Roles**: a token acts as its member's current role (a role change or removal applies to existing
  tokens at once); removing a member revokes their tokens. A workspace always keeps one owner.
- **Isolation**: every lookup is by (workspace, key); another workspace's objects are `NotFoundError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy.engine import make_url

from qmachina_assets.core.control.errors import (
    AppendOnlyError,
    AuthError,
    ControlError,
    NotFoundError,
    QuotaExceeded,
)
from qmachina_assets.core.control.models import (
    ALEMBIC_VERSION_TABLE,
    APPEND_ONLY_TABLES,
    ROLES,
    api_tokens,
    audit_events,
    jobs,
    signing_keys,
    workspace_members,
    workspace_quotas,
    workspace_resources,
    workspaces,
)
from qmachina_assets.core.control.tokens import (
    VerifiedCache,
    hash_token,
    new_token,
    parse_token,
    sign,
    unsign,
    verify_token,
)
from qmachina_assets.core.paths import lake_root
from qmachina_assets.core.registry.database import (
    append_only_guard,
    ensure_sqlite_dir,
    make_engine,
    normalize_url,
    schema_revision,
    upgrade_schema,
    write_connection,
)
from qmachina_assets.core.registry.registry import ENV_URL as REGISTRY_ENV_URL
from qmachina_assets.core.registry.registry import default_url
from qmachina_assets.core.research.specs import NAME_PATTERN

ENV_URL = "QMACHINA_CONTROL_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x514D_434F_4E54  # pg advisory key of the schema upgrade ("QMCONT")
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
RESOURCE_KINDS = ("experiment", "dataset")
ACTIVE_JOB_STATES = ("queued", "started")

Role = Literal["viewer", "editor", "admin", "owner"]
ResourceKind = Literal["experiment", "dataset"]


def role_rank(role: str) -> int:
    return ROLES.index(role)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def day_bounds(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the UTC day holding `now`: daily quotas reset at UTC midnight."""
    start = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + dt.timedelta(days=1)


def payload_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
                          .encode()).hexdigest()


def check_workspace_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > 64 or not re.fullmatch(NAME_PATTERN, name):
        raise ControlError(f"workspace {name!r}: expected {NAME_PATTERN} (at most 64 characters)")
    return name


def check_user(user: str) -> str:
    if not isinstance(user, str) or not USER_RE.match(user):
        raise ControlError(f"user {user!r}: expected {USER_RE.pattern}")
    return user


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ControlError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


# ---- records ---------------------------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class Workspace(_Record):
    name: str
    created_at: dt.datetime
    created_by: str


class Member(_Record):
    workspace: str
    user: str
    role: Role
    added_at: dt.datetime
    added_by: str


class TokenInfo(_Record):
    """A token as lists show it (never the secret)."""

    token_id: str
    workspace: str
    user: str
    label: str
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    revoked_by: str | None

    def state(self, now: dt.datetime | None = None) -> Literal["active", "expired", "revoked"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or _now()):
            return "expired"
        return "active"


class Principal(_Record):
    """Who is calling: a member of one workspace acting with their current role through one token."""

    workspace: str
    user: str
    role: Role
    token_id: str

    @property
    def actor(self) -> str:
        """What the audit (and the registry's alias audit) records as the actor."""
        return f"{self.user} [{self.token_id}]"

    def allows(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)


class Quotas(BaseModel):
    """Per-workspace limits. Daily limits reset at UTC midnight."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_jobs: int = Field(4, ge=0, le=10_000)
    max_param_sets_per_day: int = Field(20_000, ge=0, le=100_000_000)
    max_cpu_seconds_per_day: float = Field(36_000.0, ge=0, le=1e9)
    max_concurrent_streams: int = Field(50, ge=0, le=100_000)


class Usage(_Record):
    concurrent_jobs: int
    param_sets_today: int
    cpu_seconds_today: float
    day_resets_at: dt.datetime


class AuditEvent(_Record):
    id: str  # `a<n>` for control rows, `s<n>` for the registry's alias rows
    source: Literal["control", "registry"]
    workspace: str | None
    actor: str
    action: str
    target: str
    payload_sha256: str | None
    detail: dict[str, Any]
    at: dt.datetime


class JobRecord(_Record):
    job_id: str
    workspace: str
    kind: str
    target: str
    session_id: str | None
    created_by: str
    status: str
    param_sets: int
    estimated_cpu_seconds: float
    cpu_seconds: float | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    detail: dict[str, Any]


def _rec(model: type[BaseModel], row: Any) -> Any:
    m = dict(row._mapping)
    for k, v in m.items():
        if isinstance(v, dt.datetime):
            m[k] = _utc(v)
    if "detail" in m and isinstance(m["detail"], str):
        m["detail"] = json.loads(m["detail"])
    return model.model_validate(m)


# ---- the control plane -----------------------------------------------------------------------------


class ControlPlane:
    """`ControlPlane(url=None, lake=None)`: `url` > `QMACHINA_CONTROL_URL` > `QMACHINA_REGISTRY_URL` > the
    registry's SQLite file under `lake`. The schema is upgraded to Alembic head on open."""

    def __init__(self, url: str | None = None, lake: Path | str | None = None, *, migrate: bool = True):
        self.lake = Path(lake).resolve() if lake is not None else lake_root()
        raw = url or os.environ.get(ENV_URL) or os.environ.get(REGISTRY_ENV_URL) or default_url(self.lake)
        self.url = normalize_url(raw)
        ensure_sqlite_dir(self.url)
        self.engine = make_engine(self.url, append_only_guard(APPEND_ONLY_TABLES, AppendOnlyError))
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ControlError(f"{make_url(self.url).render_as_string()}: supported databases are SQLite and "
                               "PostgreSQL")
        self.verified = VerifiedCache()
        self._signing_key: bytes | None = None
        if migrate:
            upgrade_schema(self.engine, MIGRATIONS_DIR, _MIGRATION_LOCK)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ControlPlane({make_url(self.url).render_as_string()!r})"

    def revision(self) -> str | None:
        return schema_revision(self.engine, ALEMBIC_VERSION_TABLE)

    # -- plumbing --

    @contextlib.contextmanager
    def write(self, workspace: str | None = None) -> Iterator[Connection]:
        """One write transaction; on Postgres it holds the workspace's advisory lock (quota checks)."""
        with self.engine.connect() as conn:
            write_connection(conn)
            with conn.begin():
                if workspace is not None and self.dialect == "postgresql":
                    key = int(hashlib.sha256(f"qmachina.workspace:{workspace}".encode()).hexdigest()[:15], 16)
                    conn.execute(select(func.pg_advisory_xact_lock(key)))
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @staticmethod
    def audit_row(conn: Connection, *, workspace: str | None, actor: str, action: str, target: str,
                  payload: Any, detail: dict[str, Any] | None = None) -> int:
        """Append one audit row inside the caller's transaction (`payload` is hashed, `detail` stored)."""
        res = conn.execute(insert(audit_events).values(
            workspace=workspace, actor=actor[:128], action=action, target=target[:256],
            payload_sha256=payload_hash(payload), detail=json.dumps(detail or {}, sort_keys=True, default=str),
            at=_now()))
        return int(res.inserted_primary_key[0])

    def _workspace(self, conn: Connection, name: str) -> None:
        if conn.execute(select(workspaces.c.name).where(workspaces.c.name == name)).first() is None:
            raise NotFoundError(f"no workspace {name!r}")

    # -- workspaces --

    def create_workspace(self, name: str, *, actor: str, owner: str | None = None,
                         quotas: Quotas | None = None) -> Workspace:
        """A new workspace with default (or given) quotas and, if named, its first owner."""
        check_workspace_name(name)
        if owner is not None:
            check_user(owner)
        q = quotas or Quotas()
        with self.write(name) as conn:
            if conn.execute(select(workspaces.c.name).where(workspaces.c.name == name)).first() is not None:
                raise ControlError(f"workspace {name!r} exists already")
            at = _now()
            conn.execute(insert(workspaces).values(name=name, created_at=at, created_by=actor))
            conn.execute(insert(workspace_quotas).values(workspace=name, updated_at=at, updated_by=actor,
                                                         **q.model_dump()))
            self.audit_row(conn, workspace=name, actor=actor, action="workspace.create", target=f"workspace:{name}",
                           payload={"name": name, "owner": owner, "quotas": q.model_dump()},
                           detail={"owner": owner})
            if owner is not None:
                self._add_member(conn, name, owner, "owner", actor)
            return Workspace(name=name, created_at=at, created_by=actor)

    def list_workspaces(self) -> list[Workspace]:
        with self.read() as conn:
            return [_rec(Workspace, r) for r in conn.execute(select(workspaces).order_by(workspaces.c.name))]

    def get_workspace(self, name: str) -> Workspace:
        with self.read() as conn:
            row = conn.execute(select(workspaces).where(workspaces.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no workspace {name!r}")
        return _rec(Workspace, row)

    # -- members --

    def _member_row(self, conn: Connection, workspace: str, user: str) -> Any:
        return conn.execute(select(workspace_members).where(and_(workspace_members.c.workspace == workspace,
                                                                 workspace_members.c.user == user))).first()

    def _add_member(self, conn: Connection, workspace: str, user: str, role: str, actor: str) -> Member:
        at = _now()
        conn.execute(insert(workspace_members).values(workspace=workspace, user=user, role=role, added_at=at,
                                                      added_by=actor))
        self.audit_row(conn, workspace=workspace, actor=actor, action="member.add", target=f"member:{user}",
                       payload={"user": user, "role": role}, detail={"role": role})
        return Member(workspace=workspace, user=user, role=role, added_at=at, added_by=actor)

    def add_member(self, workspace: str, user: str, role: str, *, actor: str) -> Member:
        check_user(user)
        check_role(role)
        with self.write(workspace) as conn:
            self._workspace(conn, workspace)
            if self._member_row(conn, workspace, user) is not None:
                raise ControlError(f"{user!r} is a member of {workspace!r} already (change the role instead)")
            return self._add_member(conn, workspace, user, role, actor)

    def set_role(self, workspace: str, user: str, role: str, *, actor: str) -> Member:
        check_role(role)
        with self.write(workspace) as conn:
            row = self._member_row(conn, workspace, user)
            if row is None:
                raise NotFoundError(f"no member {user!r} in workspace {workspace!r}")
            if row.role == "owner" and role != "owner":
                self._keep_an_owner(conn, workspace, user)
            if row.role != role:
                conn.execute(update(workspace_members)
                             .where(and_(workspace_members.c.workspace == workspace,
                                         workspace_members.c.user == user)).values(role=role))
                self.audit_row(conn, workspace=workspace, actor=actor, action="member.role",
                               target=f"member:{user}", payload={"user": user, "role": role},
                               detail={"from": row.role, "to": role})
            return Member(workspace=workspace, user=user, role=role, added_at=_utc(row.added_at),
                          added_by=row.added_by)

    def remove_member(self, workspace: str, user: str, *, actor: str) -> int:
        """Remove a member and revoke their tokens (returns how many were revoked)."""
        with self.write(workspace) as conn:
            row = self._member_row(conn, workspace, user)
            if row is None:
                raise NotFoundError(f"no member {user!r} in workspace {workspace!r}")
            if row.role == "owner":
                self._keep_an_owner(conn, workspace, user)
            conn.execute(workspace_members.delete().where(and_(workspace_members.c.workspace == workspace,
                                                               workspace_members.c.user == user)))
            at = _now()
            res = conn.execute(update(api_tokens).where(and_(api_tokens.c.workspace == workspace,
                                                             api_tokens.c.user == user,
                                                             api_tokens.c.revoked_at.is_(None)))
                               .values(revoked_at=at, revoked_by=actor))
            self.audit_row(conn, workspace=workspace, actor=actor, action="member.remove", target=f"member:{user}",
                           payload={"user": user}, detail={"role": row.role, "tokens_revoked": res.rowcount})
        self.verified = VerifiedCache()  # their tokens may be cached
        return res.rowcount

    def _keep_an_owner(self, conn: Connection, workspace: str, user: str) -> None:
        others = conn.execute(select(func.count()).select_from(workspace_members).where(and_(
            workspace_members.c.workspace == workspace, workspace_members.c.role == "owner",
            workspace_members.c.user != user))).scalar_one()
        if others == 0:
            raise ControlError(f"{user!r} is the last owner of {workspace!r}: add another owner first")

    def members(self, workspace: str) -> list[Member]:
        with self.read() as conn:
            self._workspace(conn, workspace)
            rows = conn.execute(select(workspace_members).where(workspace_members.c.workspace == workspace)
                                .order_by(workspace_members.c.user)).all()
        return [_rec(Member, r) for r in rows]

    # -- tokens --

    def create_token(self, workspace: str, user: str, *, actor: str, label: str = "",
                     expires_in: dt.timedelta | None = dt.timedelta(days=90)) -> tuple[TokenInfo, str]:
        """A new token for a member: (its record, the token itself — shown once, never stored)."""
        if expires_in is not None and expires_in <= dt.timedelta(0):
            raise ControlError("expires_in: must be positive (or None for no expiry)")
        label = (label or "").strip()[:128]
        tid, token = new_token()
        hashed = hash_token(token)
        at = _now()
        exp = at + expires_in if expires_in is not None else None
        with self.write(workspace) as conn:
            self._workspace(conn, workspace)
            if self._member_row(conn, workspace, user) is None:
                raise NotFoundError(f"no member {user!r} in workspace {workspace!r}")
            values = {"token_id": tid, "workspace": workspace, "user": user, "label": label, "created_at": at,
                      "created_by": actor, "expires_at": exp, "revoked_at": None, "revoked_by": None}
            conn.execute(insert(api_tokens).values(secret_hash=hashed, **values))
            self.audit_row(conn, workspace=workspace, actor=actor, action="token.create", target=f"token:{tid}",
                           payload={"user": user, "label": label, "expires_at": exp},
                           detail={"user": user, "label": label, "expires_at": exp})
        return TokenInfo(**values), token

    def revoke_token(self, workspace: str, token_id: str, *, actor: str) -> TokenInfo:
        with self.write(workspace) as conn:
            row = conn.execute(select(api_tokens).where(and_(api_tokens.c.workspace == workspace,
                                                             api_tokens.c.token_id == token_id))).first()
            if row is None:
                raise NotFoundError(f"no token {token_id!r} in workspace {workspace!r}")
            if row.revoked_at is None:
                conn.execute(update(api_tokens).where(api_tokens.c.token_id == token_id)
                             .values(revoked_at=_now(), revoked_by=actor))
                self.audit_row(conn, workspace=workspace, actor=actor, action="token.revoke",
                               target=f"token:{token_id}", payload={"token_id": token_id},
                               detail={"user": row.user})
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
        self.verified.forget(token_id)
        return _rec(TokenInfo, row)

    def tokens(self, workspace: str, user: str | None = None) -> list[TokenInfo]:
        q = select(*[c for c in api_tokens.c if c.name != "secret_hash"]).where(api_tokens.c.workspace == workspace)
        if user is not None:
            q = q.where(api_tokens.c.user == user)
        with self.read() as conn:
            self._workspace(conn, workspace)
            return [_rec(TokenInfo, r) for r in conn.execute(q.order_by(api_tokens.c.created_at))]

    # -- authentication --

    def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token; AuthError(reason) when malformed, unknown, expired, revoked or
        its user is no longer a member."""
        tid = parse_token(token)
        if tid is None:
            raise AuthError("malformed", "malformed token (expected qm_<id>_<secret>)")
        if self.verified.get(token) != tid:
            with self.read() as conn:
                stored = conn.execute(select(api_tokens.c.secret_hash)
                                      .where(api_tokens.c.token_id == tid)).scalar_one_or_none()
            if not verify_token(stored, token):
                raise AuthError("unknown", "unknown token")
            self.verified.put(token, tid)
        return self.principal(tid)

    def principal(self, token_id: str) -> Principal:
        """The principal a token id acts as now (its state and membership read from the database)."""
        with self.read() as conn:
            row = conn.execute(select(api_tokens.c.workspace, api_tokens.c.user, api_tokens.c.expires_at,
                                      api_tokens.c.revoked_at, workspace_members.c.role)
                               .select_from(api_tokens.outerjoin(workspace_members, and_(
                                   workspace_members.c.workspace == api_tokens.c.workspace,
                                   workspace_members.c.user == api_tokens.c.user)))
                               .where(api_tokens.c.token_id == token_id)).first()
        if row is None:
            raise AuthError("unknown", "unknown token")
        if row.revoked_at is not None:
            raise AuthError("revoked", f"token {token_id} was revoked")
        if row.expires_at is not None and _utc(row.expires_at) <= _now():
            raise AuthError("expired", f"token {token_id} expired at {_utc(row.expires_at).isoformat()}")
        if row.role is None:
            raise AuthError("not_member", f"token {token_id}: its user is no longer a member of the workspace")
        return Principal(workspace=row.workspace, user=row.user, role=row.role, token_id=token_id)

    def signing_key(self) -> bytes:
        """The deployment's HMAC key for cookies and tickets (created once, stored in the database)."""
        if self._signing_key is None:
            with self.write() as conn:
                row = conn.execute(select(signing_keys.c.secret).where(signing_keys.c.id == 1)).first()
                if row is None:
                    secret = secrets.token_hex(32)
                    conn.execute(insert(signing_keys).values(id=1, secret=secret, created_at=_now()))
                else:
                    secret = row.secret
            self._signing_key = bytes.fromhex(secret)
        return self._signing_key

    def issue(self, principal: Principal, purpose: str, ttl_s: float) -> tuple[str, int]:
        """A signed credential (session cookie, stream ticket) for the principal's token."""
        return sign(self.signing_key(), principal.token_id, purpose, ttl_s)

    def redeem(self, value: str, purpose: str) -> tuple[Principal, str]:
        """(principal, nonce) of a signed credential; AuthError when forged, expired or its token is not."""
        got = unsign(self.signing_key(), value, purpose)
        if got is None:
            raise AuthError("malformed", f"invalid or expired {purpose}")
        return self.principal(got[0]), got[1]

    # -- quotas and usage --

    def quotas(self, workspace: str) -> Quotas:
        with self.read() as conn:
            row = conn.execute(select(workspace_quotas).where(workspace_quotas.c.workspace == workspace)).first()
        if row is None:
            raise NotFoundError(f"no workspace {workspace!r}")
        return Quotas.model_validate({k: getattr(row, k) for k in Quotas.model_fields})

    def set_quotas(self, workspace: str, quotas: Quotas, *, actor: str) -> Quotas:
        with self.write(workspace) as conn:
            before = conn.execute(select(workspace_quotas)
                                  .where(workspace_quotas.c.workspace == workspace)).first()
            if before is None:
                raise NotFoundError(f"no workspace {workspace!r}")
            conn.execute(update(workspace_quotas).where(workspace_quotas.c.workspace == workspace)
                         .values(updated_at=_now(), updated_by=actor, **quotas.model_dump()))
            self.audit_row(conn, workspace=workspace, actor=actor, action="quota.set",
                           target=f"workspace:{workspace}", payload=quotas.model_dump(),
                           detail={"from": {k: getattr(before, k) for k in Quotas.model_fields},
                                   "to": quotas.model_dump()})
        return quotas

    def _usage(self, conn: Connection, workspace: str, now: dt.datetime) -> Usage:
        start, end = day_bounds(now)
        running = conn.execute(select(func.count()).select_from(jobs).where(and_(
            jobs.c.workspace == workspace, jobs.c.status.in_(ACTIVE_JOB_STATES)))).scalar_one()
        sets, cpu = conn.execute(select(func.coalesce(func.sum(jobs.c.param_sets), 0),
                                        func.coalesce(func.sum(func.coalesce(jobs.c.cpu_seconds,
                                                                             jobs.c.estimated_cpu_seconds)), 0.0))
                                 .where(and_(jobs.c.workspace == workspace, jobs.c.created_at >= start))).one()
        return Usage(concurrent_jobs=int(running), param_sets_today=int(sets), cpu_seconds_today=float(cpu),
                     day_resets_at=end)

    def usage(self, workspace: str) -> Usage:
        with self.read() as conn:
            self._workspace(conn, workspace)
            return self._usage(conn, workspace, _now())

    def check_job_quota(self, conn: Connection, workspace: str, param_sets: int, cpu_seconds: float) -> None:
        """Raise QuotaExceeded if one more job of this size would exceed a quota (inside a `write(workspace)`
        transaction, so concurrent launches cannot both pass)."""
        q = Quotas.model_validate({k: v for k, v in conn.execute(
            select(workspace_quotas).where(workspace_quotas.c.workspace == workspace)).one()._mapping.items()
            if k in Quotas.model_fields})
        now = _now()
        u = self._usage(conn, workspace, now)
        if u.concurrent_jobs + 1 > q.max_concurrent_jobs:
            raise QuotaExceeded("concurrent_jobs", q.max_concurrent_jobs, u.concurrent_jobs, 1, None)
        if u.param_sets_today + param_sets > q.max_param_sets_per_day:
            raise QuotaExceeded("param_sets_per_day", q.max_param_sets_per_day, u.param_sets_today, param_sets,
                                u.day_resets_at)
        if u.cpu_seconds_today + cpu_seconds > q.max_cpu_seconds_per_day:
            raise QuotaExceeded("cpu_seconds_per_day", q.max_cpu_seconds_per_day, u.cpu_seconds_today,
                                cpu_seconds, u.day_resets_at)

    def check_stream_quota(self, workspace: str, open_streams: int) -> None:
        """Raise QuotaExceeded if one more stream would exceed the workspace's concurrent streams."""
        limit = self.quotas(workspace).max_concurrent_streams
        if open_streams + 1 > limit:
            raise QuotaExceeded("concurrent_streams", limit, open_streams, 1, None)

    # -- jobs (the rows quotas count; the jobs API of the serving app writes them) --

    def add_job(self, conn: Connection, *, job_id: str, workspace: str, kind: str, target: str, created_by: str,
                param_sets: int, estimated_cpu_seconds: float, session_id: str | None = None,
                detail: dict[str, Any] | None = None, status: str = "queued") -> None:
        """Insert a job row (inside the caller's `write(workspace)` transaction, after `check_job_quota`)."""
        at = _now()
        conn.execute(insert(jobs).values(job_id=job_id, workspace=workspace, kind=kind, target=target,
                                         session_id=session_id, created_by=created_by, status=status,
                                         param_sets=param_sets, estimated_cpu_seconds=estimated_cpu_seconds,
                                         cpu_seconds=None, created_at=at, updated_at=at, finished_at=None,
                                         detail=json.dumps(detail or {}, sort_keys=True, default=str)))

    def set_job_status(self, job_id: str, status: str, *, cpu_seconds: float | None = None,
                       detail: dict[str, Any] | None = None) -> None:
        at = _now()
        values: dict[str, Any] = {"status": status, "updated_at": at}
        if status not in ACTIVE_JOB_STATES:
            values["finished_at"] = at
        if cpu_seconds is not None:
            values["cpu_seconds"] = cpu_seconds
        if detail is not None:
            values["detail"] = json.dumps(detail, sort_keys=True, default=str)
        with self.write() as conn:
            conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(**values))

    def job(self, workspace: str, job_id: str) -> JobRecord:
        with self.read() as conn:
            row = conn.execute(select(jobs).where(and_(jobs.c.workspace == workspace,
                                                       jobs.c.job_id == job_id))).first()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        return _rec(JobRecord, row)

    def jobs(self, workspace: str, status: str | None = None, limit: int = 200) -> list[JobRecord]:
        q = select(jobs).where(jobs.c.workspace == workspace)
        if status is not None:
            q = q.where(jobs.c.status == status)
        with self.read() as conn:
            return [_rec(JobRecord, r) for r in conn.execute(q.order_by(jobs.c.created_at.desc()).limit(limit))]

    # -- resources (which workspace an experiment or dataset registration belongs to) --

    def register_resource(self, workspace: str, kind: ResourceKind, name: str, *, actor: str,
                          conn: Connection | None = None) -> bool:
        """Record that `name` belongs to `workspace` (True if new). An experiment has one owner workspace;
        a dataset (content-addressed, shared bytes) may be registered in several."""
        if kind not in RESOURCE_KINDS:
            raise ControlError(f"resource kind {kind!r}: expected one of {RESOURCE_KINDS}")
        if conn is None:
            with self.write(workspace) as c:
                return self.register_resource(workspace, kind, name, actor=actor, conn=c)
        self._workspace(conn, workspace)
        owners = set(conn.execute(select(workspace_resources.c.workspace).where(and_(
            workspace_resources.c.kind == kind, workspace_resources.c.name == name))).scalars())
        if workspace in owners:
            return False
        if kind == "experiment" and owners:
            raise ControlError(f"experiment {name!r} belongs to another workspace")
        conn.execute(insert(workspace_resources).values(kind=kind, name=name, workspace=workspace, created_at=_now(),
                                                        created_by=actor))
        self.audit_row(conn, workspace=workspace, actor=actor, action=f"{kind}.register", target=f"{kind}:{name}",
                       payload={"kind": kind, "name": name})
        return True

    def visible(self, workspace: str, kind: ResourceKind, names: list[str], default_workspace: str) -> set[str]:
        """Which of `names` the workspace sees: those registered to it; the default workspace also sees the
        ones registered nowhere (made outside the control plane: CLI, Dagster UI, the demo)."""
        with self.read() as conn:
            rows = conn.execute(select(workspace_resources.c.name, workspace_resources.c.workspace)
                                .where(workspace_resources.c.kind == kind)).all()
        owners: dict[str, set[str]] = {}
        for n, w in rows:
            owners.setdefault(n, set()).add(w)
        return {n for n in names if workspace in owners.get(n, set())
                or (workspace == default_workspace and n not in owners)}

    # -- audit --

    def audit(self, workspace: str | None, *, action: str | None = None, actor: str | None = None,
              target: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
              limit: int = 500) -> list[AuditEvent]:
        """Control audit rows of a workspace (None: every workspace), oldest first; filters are exact matches
        (action also by prefix with a trailing `.`: `member.`)."""
        q = select(audit_events)
        if workspace is not None:
            q = q.where(audit_events.c.workspace == workspace)
        if action:
            q = q.where(audit_events.c.action.startswith(action, autoescape=True) if action.endswith(".")
                        else audit_events.c.action == action)
        if actor:
            q = q.where(or_(audit_events.c.actor == actor, audit_events.c.actor.startswith(f"{actor} [",
                                                                                           autoescape=True)))
        if target:
            q = q.where(audit_events.c.target == target)
        if since:
            q = q.where(audit_events.c.at >= since)
        if until:
            q = q.where(audit_events.c.at < until)
        with self.read() as conn:
            rows = conn.execute(q.order_by(audit_events.c.id.desc()).limit(limit)).all()
        out = []
        for r in reversed(rows):
            out.append(AuditEvent(id=f"a{r.id}", source="control", workspace=r.workspace, actor=r.actor,
                                  action=r.action, target=r.target, payload_sha256=r.payload_sha256,
                                  detail=json.loads(r.detail), at=_utc(r.at)))
        return out

    def count_rows(self) -> dict[str, int]:
        """Rows per control table (the attack tests compare it before and after)."""
        from qmachina_assets.core.control.models import metadata

        with self.read() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in metadata.sorted_tables}
