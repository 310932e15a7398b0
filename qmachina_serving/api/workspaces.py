"""`/v1/workspace...`: the caller's workspace, its members (owner manages), API tokens (owner manages; a
member sees and revokes their own), quotas and usage (admin sets). Everything is the caller's workspace:
there is no workspace in the path, so no other workspace can be named."""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from qmachina_assets.core.control import Member, Quotas, TokenInfo, Usage
from qmachina_assets.core.control.plane import USER_RE
from qmachina_assets.core.control.tokens import TOKEN_ID_RE
from qmachina_serving.api.common import NOT_FOUND, REFUSED, ApiContext, control_call, not_found

User = Annotated[str, PathParam(pattern=USER_RE.pattern, max_length=128)]
TokenId = Annotated[str, PathParam(pattern=TOKEN_ID_RE, max_length=13)]
RoleName = Literal["viewer", "editor", "admin", "owner"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberRequest(_Body):
    user: str = Field(pattern=USER_RE.pattern, max_length=128)
    role: RoleName


class RoleRequest(_Body):
    role: RoleName


class TokenRequest(_Body):
    user: str = Field(pattern=USER_RE.pattern, max_length=128)
    label: str = Field("", max_length=128)
    expires_days: float | None = Field(90.0, gt=0, le=3650, description="null: never expires")


class TokenView(TokenInfo):
    state: Literal["active", "expired", "revoked"]


class NewToken(BaseModel):
    token: str = Field(description="shown once; store it now")
    info: TokenView


class WorkspaceView(BaseModel):
    name: str
    user: str
    role: str
    token_id: str
    quotas: Quotas
    usage: Usage


class Removed(BaseModel):
    removed: str
    tokens_revoked: int


class QuotaView(BaseModel):
    quotas: Quotas
    usage: Usage


def _view(t: TokenInfo) -> TokenView:
    return TokenView(**t.model_dump(), state=t.state_at())


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter(prefix="/workspace", tags=["workspace"])
    Caller, Admin, Owner = ctx.caller(), ctx.role("admin"), ctx.role("owner")
    Control = ctx.control_dep()

    @r.get("", response_model=WorkspaceView)
    def show(who: Caller, cp: Control) -> WorkspaceView:
        return WorkspaceView(name=who.workspace, user=who.user, role=who.role, token_id=who.token_id,
                             quotas=control_call(lambda: cp.quotas(who.workspace)),
                             usage=control_call(lambda: cp.usage(who.workspace)))

    @r.get("/members", response_model=list[Member])
    def members(who: Caller, cp: Control) -> list[Member]:
        return control_call(lambda: cp.members(who.workspace))

    @r.post("/members", response_model=Member, responses=REFUSED)
    def add_member(body: MemberRequest, who: Owner, cp: Control) -> Member:
        return control_call(lambda: cp.add_member(who.workspace, body.user, body.role, actor=who.actor))

    @r.put("/members/{user}", response_model=Member, responses=REFUSED)
    def set_role(user: User, body: RoleRequest, who: Owner, cp: Control) -> Member:
        return control_call(lambda: cp.set_role(who.workspace, user, body.role, actor=who.actor))

    @r.delete("/members/{user}", response_model=Removed, responses=REFUSED)
    def remove_member(user: User, who: Owner, cp: Control) -> Removed:
        n = control_call(lambda: cp.remove_member(who.workspace, user, actor=who.actor))
        return Removed(removed=user, tokens_revoked=n)

    @r.get("/tokens", response_model=list[TokenView])
    def tokens(who: Caller, cp: Control) -> list[TokenView]:
        """Every token of the workspace for an owner; your own tokens otherwise."""
        user = None if who.allows("owner") else who.user
        return [_view(t) for t in control_call(lambda: cp.tokens(who.workspace, user))]

    @r.post("/tokens", response_model=NewToken, responses=REFUSED)
    def create_token(body: TokenRequest, who: Owner, cp: Control) -> NewToken:
        exp = dt.timedelta(days=body.expires_days) if body.expires_days is not None else None
        info, token = control_call(lambda: cp.create_token(who.workspace, body.user, actor=who.actor,
                                                           label=body.label, expires_in=exp))
        return NewToken(token=token, info=_view(info))

    @r.post("/tokens/{token_id}/revoke", response_model=TokenView, responses=NOT_FOUND)
    def revoke_token(token_id: TokenId, who: Caller, cp: Control) -> TokenView:
        """An owner revokes any token of the workspace; a member their own."""
        if not who.allows("owner"):
            mine = {t.token_id for t in control_call(lambda: cp.tokens(who.workspace, who.user))}
            if token_id not in mine:
                raise not_found(f"no token {token_id!r} of yours")
        return _view(control_call(lambda: cp.revoke_token(who.workspace, token_id, actor=who.actor)))

    @r.get("/quotas", response_model=QuotaView)
    def quotas(who: Caller, cp: Control) -> QuotaView:
        return QuotaView(quotas=control_call(lambda: cp.quotas(who.workspace)),
                         usage=control_call(lambda: cp.usage(who.workspace)))

    @r.put("/quotas", response_model=QuotaView)
    def set_quotas(body: Quotas, who: Admin, cp: Control, request: Request) -> QuotaView:
        control_call(lambda: cp.set_quotas(who.workspace, body, actor=who.actor))
        return quotas(who, cp)

    return r
