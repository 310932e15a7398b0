"""Authentication and authorization of the serving process (FastAPI dependencies over `ControlPlane`).

Credentials, in the order they are looked at:
- `Authorization: Bearer qm_<id>_<secret>` (API clients, tests, the stream from non-browser clients);
- the `qm_session` cookie (browsers): `POST /auth/login {token}` checks the token once and sets an HttpOnly,
  SameSite=Strict cookie holding a signed credential that names the token (never the token itself), valid
  `SESSION_TTL_S` and never past the token; revoking the token ends every session made from it;
- on the WebSocket only, `?ticket=` from `POST /v1/auth/ticket`: signed, valid `TICKET_TTL_S`, single use in
  this process; a long-lived token never goes into a URL (URLs land in logs).

Every check reads the token's state and its member's role from the database, so revocation, expiry, a role
change and a removal apply to the next request. A cookie-authenticated unsafe request (POST/PUT/PATCH/DELETE)
must come from an allowed Origin (the page's own, or `cors_origins`).

Failed attempts are rate limited per client address and per token id (`FailureLimiter`): past the limit
the caller gets 429 with Retry-After before any hash is computed, so guessing secrets of a known token id
(or exhausting the CPU with argon2 checks) is bounded. Limits are per process.

Roles: `require("editor")` etc. answer 403 to a member whose role is too low; objects of another workspace
are never looked up outside the caller's workspace, so they answer 404.
"""

from __future__ import annotations

import http.cookies
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from qmachina_assets.core.control import AuthError, ControlPlane, Principal, QuotaExceeded, role_rank
from qmachina_assets.core.control.plane import ENV_URL as CONTROL_ENV_URL
from qmachina_assets.core.control.tokens import parse_token

SESSION_COOKIE = "qm_session"
SESSION_TTL_S = 12 * 3600.0
TICKET_TTL_S = 60.0
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """No Origin (non-browser client), a listed origin, or the page's own origin (same host:port)."""
    if not origin:
        return True
    origin = origin.rstrip("/")
    return origin in allowed or (host is not None and urlsplit(origin).netloc == host)


class FailureLimiter:
    """At most `limit` failed authentications per `window_s` per key (client address, token id)."""

    def __init__(self, limit: int = 10, window_s: float = 60.0):
        self.limit = limit
        self.window_s = window_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def blocked_for(self, *keys: str) -> float:
        """Seconds until `keys` may try again (0: not blocked)."""
        now = time.monotonic()
        with self._lock:
            waits = [q[0] + self.window_s - now for k in keys if len(q := self._recent(k, now)) >= self.limit]
        return max(waits, default=0.0)

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)
            if len(self._fails) > 100_000:  # bounded memory under a spray of addresses
                self._fails = {k: q for k, q in self._fails.items() if q and q[-1] > now - self.window_s}


def http_error(status: int, message: str, **extra: Any) -> HTTPException:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if "retry_after" in extra:
        headers = {"Retry-After": str(max(1, int(extra.pop("retry_after") + 0.999)))}
    return HTTPException(status_code=status, detail={"message": message, **extra}, headers=headers)


def quota_error(exc: QuotaExceeded) -> HTTPException:
    headers = None
    if exc.resets_at is not None:
        headers = {"Retry-After": str(max(1, int(exc.resets_at.timestamp() - time.time())))}
    return HTTPException(status_code=429, detail=exc.detail(), headers=headers)


def cookie_value(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    jar = http.cookies.SimpleCookie()
    try:
        jar.load(cookie_header)
    except http.cookies.CookieError:
        return None
    m = jar.get(SESSION_COOKIE)
    return m.value if m is not None else None


class Auth:
    """Authenticates requests against one `ControlPlane` (from `control`, called lazily once)."""

    def __init__(self, control: Callable[[], ControlPlane], limiter: FailureLimiter | None = None):
        self._control_factory = control
        self._control: ControlPlane | None = None
        self._lock = threading.Lock()
        self.limiter = limiter or FailureLimiter()
        self._used_tickets: dict[str, float] = {}

    @property
    def control(self) -> ControlPlane:
        with self._lock:
            if self._control is None:
                self._control = self._control_factory()
            return self._control

    def close(self) -> None:
        if self._control is not None:
            self._control.close()

    # -- the credential checks (sync: they read the database and may hash) --

    def check(self, *, client: str, authorization: str | None = None, cookie: str | None = None,
              ticket: str | None = None) -> tuple[Principal, str]:
        """(principal, how) from the first credential present; HTTPException 401/429 otherwise."""
        cp = self.control
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            tid = parse_token(token) if scheme.lower() == "bearer" else None
            keys = (f"addr:{client}", f"tok:{tid}") if tid else (f"addr:{client}",)
            if tid is None or cp.verified.get(token) != tid:  # a cached token skips the limiter
                wait = self.limiter.blocked_for(*keys)
                if wait > 0:
                    raise http_error(429, "too many failed authentications; try again later",
                                     quota="auth_failures", retry_after=wait)
            try:
                if scheme.lower() != "bearer":
                    raise AuthError("malformed", "expected the Authorization scheme Bearer")
                return cp.authenticate(token), "bearer"
            except AuthError as exc:
                self.limiter.fail(*keys)
                raise http_error(401, str(exc), reason=exc.reason) from exc
        for value, purpose in ((cookie, "session"), (ticket, "ticket")):
            if value is None:
                continue
            wait = self.limiter.blocked_for(f"addr:{client}")
            if wait > 0:
                raise http_error(429, "too many failed authentications; try again later", quota="auth_failures",
                                 retry_after=wait)
            try:
                principal, nonce = cp.redeem(value, purpose)
                if purpose == "ticket":
                    self._spend(nonce)
                return principal, purpose
            except AuthError as exc:
                self.limiter.fail(f"addr:{client}")
                raise http_error(401, str(exc), reason=exc.reason) from exc
        raise http_error(401, "authentication required: Authorization: Bearer <token> (or log in at /login.html)",
                         reason="missing")

    def _spend(self, nonce: str) -> None:
        now = time.time()
        with self._lock:
            self._used_tickets = {n: t for n, t in self._used_tickets.items() if t > now}
            if nonce in self._used_tickets:
                raise AuthError("reused", "this stream ticket was used already (tickets are single use)")
            self._used_tickets[nonce] = now + TICKET_TTL_S + 5

    # -- FastAPI dependencies --

    def principal(self, request: Request) -> Principal:
        """Dependency: the authenticated caller of an HTTP request."""
        client = request.client.host if request.client else "unknown"
        principal, how = self.check(client=client, authorization=request.headers.get("authorization"),
                                    cookie=request.cookies.get(SESSION_COOKIE))
        if how == "session" and request.method in UNSAFE_METHODS:
            settings = request.app.state.settings
            if not origin_allowed(request.headers.get("origin"), request.headers.get("host"),
                                  settings.cors_origins):
                raise http_error(403, "cross-origin request refused for a cookie session")
        request.state.principal = principal
        return principal

    def require(self, role: str) -> Callable[[Request], Principal]:
        """Dependency factory: the caller, who must hold `role` or a higher one (else 403)."""
        rank = role_rank(role)

        def dep(request: Request) -> Principal:
            p = getattr(request.state, "principal", None) or self.principal(request)
            if role_rank(p.role) < rank:
                raise http_error(403, f"{role} role required (you are {p.role} in {p.workspace})",
                                 required=role, role=p.role)
            return p

        dep.__name__ = f"require_{role}"
        return dep


def app_auth(app: Any) -> Auth:
    """The `Auth` of an app (or of its `state`), made on first use from its settings: the control plane in
    `control_url`, else the registry's database (`registry_url`, else SQLite in the lake)."""
    state = getattr(app, "state", app)
    auth = getattr(state, "auth", None)
    if auth is None:
        settings = state.settings
        auth = Auth(lambda: ControlPlane(url=settings.control_url or os.environ.get(CONTROL_ENV_URL)
                                         or settings.registry_url, lake=settings.lake))
        state.auth = auth
    return auth
