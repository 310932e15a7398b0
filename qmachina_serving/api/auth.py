"""Logging in and who am I: `POST /auth/login {token}` (public, rate limited) sets the browser's session
cookie; `POST /auth/logout` clears it; `GET /v1/auth/me` names the caller; `POST /v1/auth/ticket` gives a
single-use stream ticket valid for a minute (for WebSocket clients that can send neither a header nor the
cookie)."""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

import datetime as dt

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from qmachina_assets.core.control.tokens import MAX_TOKEN_CHARS
from qmachina_serving.api.common import ApiContext
from qmachina_serving.auth import SESSION_COOKIE, SESSION_TTL_S, TICKET_TTL_S


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, description="an API token (qm_<id>_<secret>)")


class Me(BaseModel):
    workspace: str
    user: str
    role: str
    token_id: str
    session_expires_at: dt.datetime | None = None


class Ticket(BaseModel):
    ticket: str
    expires_at: dt.datetime
    usage: str = "WS /v1/stream?serving=...&ticket=<ticket> (single use)"


AUTH_ERRORS = {401: {"description": "missing, malformed, unknown, expired or revoked credential"},
               429: {"description": "too many failed attempts (Retry-After)"}}


def build_public(ctx: ApiContext) -> APIRouter:
    r = APIRouter(prefix="/auth", tags=["auth"])

    @r.post("/login", response_model=Me, responses=AUTH_ERRORS)
    def login(body: LoginRequest, request: Request, response: Response) -> Me:
        auth = ctx.get_auth(request)
        client = request.client.host if request.client else "unknown"
        principal, _ = auth.check(client=client, authorization=f"Bearer {body.token}")
        value, exp = auth.control.issue(principal, "session", SESSION_TTL_S)
        token_exp = next((t.expires_at for t in auth.control.tokens(principal.workspace, principal.user)
                          if t.token_id == principal.token_id), None)
        expires = dt.datetime.fromtimestamp(exp, dt.UTC)
        if token_exp is not None and token_exp < expires:
            value, exp = auth.control.issue(principal, "session", (token_exp - dt.datetime.now(dt.UTC)).total_seconds())
            expires = token_exp
        response.set_cookie(SESSION_COOKIE, value, max_age=int(exp - dt.datetime.now(dt.UTC).timestamp()),
                            httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
        return Me(**principal.model_dump(), session_expires_at=expires)

    @r.post("/logout", status_code=204)
    def logout(response: Response) -> Response:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        response.status_code = 204
        return response

    return r


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter(tags=["auth"])
    Caller = ctx.caller()

    @r.get("/auth/me", response_model=Me, responses=AUTH_ERRORS)
    def me(who: Caller) -> Me:
        return Me(**who.model_dump())

    @r.post("/auth/ticket", response_model=Ticket, responses=AUTH_ERRORS)
    def ticket(who: Caller, request: Request) -> Ticket:
        value, exp = ctx.get_control(request).issue(who, "ticket", TICKET_TTL_S)
        return Ticket(ticket=value, expires_at=dt.datetime.fromtimestamp(exp, dt.UTC))

    return r
