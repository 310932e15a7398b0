"""Control plane (above registry): who may do what to which workspace's objects, within which limits, and
the append-only record of what they did. Takes the registry's database family (SQLite default, Postgres
with one variable); gives `ControlPlane` (workspaces, members, API tokens, quotas, resource ownership, jobs,
audit) to the CLI and the serving process. No web framework here: authentication in HTTP terms lives in
`qmachina_serving.auth`."""

from qmachina_assets.core.control.errors import (
    AppendOnlyError,
    AuthError,
    ControlError,
    ForbiddenError,
    NotFoundError,
    QuotaExceeded,
)
from qmachina_assets.core.control.models import ROLES
from qmachina_assets.core.control.plane import (
    AuditEvent,
    ControlPlane,
    JobRecord,
    Member,
    Principal,
    Quotas,
    TokenInfo,
    Usage,
    Workspace,
    role_rank,
)

__all__ = [
    "ROLES", "AppendOnlyError", "AuditEvent", "AuthError", "ControlError", "ControlPlane", "ForbiddenError",
    "JobRecord", "Member", "NotFoundError", "Principal", "QuotaExceeded", "Quotas", "TokenInfo", "Usage",
    "Workspace", "role_rank",
]
