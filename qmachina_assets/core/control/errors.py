"""Errors of the control plane. The serving app maps them to HTTP statuses: `AuthError` 401,
`NotFoundError` 404 (also for another workspace's objects, so ids do not leak), `ForbiddenError` 403,
`QuotaExceeded` 429, `ControlError` 409/422."""

from __future__ import annotations

import datetime as dt


class ControlError(Exception):
    """A refused control-plane operation (the message says why); nothing was written."""


class NotFoundError(ControlError):
    """No such object in this workspace."""


class ForbiddenError(ControlError):
    """The caller's role does not allow the operation."""


class AuthError(ControlError):
    """The credential is missing, malformed, unknown, expired or revoked (`reason` names which)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class AppendOnlyError(ControlError):
    """An UPDATE/DELETE on the audit log (refused in code and by database triggers)."""


class QuotaExceeded(ControlError):
    """A workspace quota would be exceeded: which, its limit, what is used, and when it resets
    (`resets_at` None: when a running job or stream ends)."""

    def __init__(self, quota: str, limit: float, used: float, requested: float, resets_at: dt.datetime | None):
        when = f"resets at {resets_at.isoformat()}" if resets_at else "frees up when a running one ends"
        super().__init__(f"quota {quota} exceeded: {used:g} used + {requested:g} requested > limit {limit:g} "
                         f"({when})")
        self.quota = quota
        self.limit = limit
        self.used = used
        self.requested = requested
        self.resets_at = resets_at

    def detail(self) -> dict:
        return {"message": str(self), "quota": self.quota, "limit": self.limit, "used": self.used,
                "requested": self.requested,
                "resets_at": self.resets_at.isoformat() if self.resets_at else None}
