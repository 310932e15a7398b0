"""`/v1/serving/...`: published versions, aliases, their audit history, diffs, activate and rollback."""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from qmachina_assets.core.registry import AliasEvent, AliasRecord, PublishedVersion, VersionSummary
from qmachina_assets.core.registry.snapshot import SnapshotDiff
from qmachina_serving.api.common import (
    DOWN,
    NAME_RE,
    NOT_FOUND,
    REFUSED,
    VERSION_ID_RE,
    Alias,
    AliasOrId,
    ApiContext,
    clean,
    not_found,
    registry_call,
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiffRequest(_Body):
    a: str = Field(pattern=NAME_RE, max_length=64, description="version id or alias", examples=["live"])
    b: str = Field(pattern=NAME_RE, max_length=64, description="version id or alias", examples=["live"])


class _Who(_Body):
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="kept in the audit",
                        examples=["roll back: worse fills"])
    actor: str = Field(min_length=1, max_length=128, pattern=r"\S",
                       description="who makes the change, as the client claims it: the API has no authentication "
                                   "yet, so the audit records this claim (issue 17 takes the actor from the "
                                   "authenticated token instead)", examples=["ops"])
    expected_version_id: str | None = Field(pattern=VERSION_ID_RE,
                                            description="the version the alias points at as the client last read "
                                                        "it (null: a new alias); the change is a compare-and-swap "
                                                        "on it, 409 when another writer moved the alias",
                                            examples=["sv_0123456789abcdef"])


class ActivateRequest(_Who):
    version_id: str = Field(pattern=VERSION_ID_RE)


class RollbackRequest(_Who):
    pass


class AliasChange(BaseModel):
    alias: str
    version_id: str  # where the alias points now
    changed: bool  # False: it already pointed there (no audit row)
    event: AliasEvent | None


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter()
    Reg = ctx.registry_dep()

    @r.get("/serving/versions", response_model=list[VersionSummary], responses=DOWN, tags=["serving"])
    def list_versions(reg: Reg) -> list[VersionSummary]:
        return registry_call(reg.list_versions)

    @r.get("/serving/versions/{version_id}", response_model=PublishedVersion, responses=REFUSED | DOWN,
           tags=["serving"])
    def show_version(version_id: AliasOrId, reg: Reg) -> PublishedVersion:
        return registry_call(lambda: reg.resolve(version_id))

    @r.get("/serving/aliases", response_model=list[AliasRecord], responses=DOWN, tags=["serving"])
    def list_aliases(reg: Reg) -> list[AliasRecord]:
        return registry_call(reg.list_aliases)

    @r.get("/serving/aliases/{alias}", response_model=AliasRecord, responses=NOT_FOUND | DOWN, tags=["serving"])
    def show_alias(alias: Alias, reg: Reg) -> AliasRecord:
        for a in registry_call(reg.list_aliases):
            if a.name == alias:
                return a
        raise not_found(f"no alias {alias!r}")

    @r.get("/serving/aliases/{alias}/history", response_model=list[AliasEvent], responses=NOT_FOUND | DOWN,
           tags=["serving"])
    def alias_history(alias: Alias, reg: Reg) -> list[AliasEvent]:
        events = registry_call(lambda: reg.history(alias))
        if not events:
            raise not_found(f"no alias {alias!r}")
        return events

    @r.post("/serving/diff", response_model=SnapshotDiff, responses=REFUSED | DOWN, tags=["serving"])
    def diff(body: DiffRequest, reg: Reg) -> SnapshotDiff:
        d = registry_call(lambda: reg.diff(body.a, body.b))
        return SnapshotDiff.model_validate(clean(d.model_dump(mode="json")))

    @r.post("/serving/aliases/{alias}/activate", response_model=AliasChange, responses=REFUSED | DOWN, tags=["serving"])
    def activate(alias: Alias, body: Annotated[ActivateRequest, Body()], reg: Reg) -> AliasChange:
        ev = registry_call(lambda: reg.activate(alias, body.version_id, actor=body.actor, reason=body.reason,
                                                expected_version_id=body.expected_version_id))
        return AliasChange(alias=alias, version_id=body.version_id, changed=ev is not None, event=ev)

    @r.post("/serving/aliases/{alias}/rollback", response_model=AliasChange, responses=REFUSED | DOWN, tags=["serving"])
    def rollback(alias: Alias, body: Annotated[RollbackRequest, Body()], reg: Reg) -> AliasChange:
        ev = registry_call(lambda: reg.rollback(alias, actor=body.actor, reason=body.reason,
                                                expected_version_id=body.expected_version_id))
        return AliasChange(alias=alias, version_id=ev.to_version, changed=True, event=ev)

    return r
