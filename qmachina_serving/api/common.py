"""What every `/v1` router shares: path parameter types, error models, the registry and lake dependencies.

`ApiContext` holds the injected registry factory, lake and configs (tests) or reads them from the app's
`ServingSettings`; routers take their dependencies from it, so one Registry is opened per app.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from qmachina_assets.core.paths import configs_root
from qmachina_assets.core.registry import PreflightError, Registry, RegistryError, UnknownVersionError
from qmachina_assets.core.registry.preflight import PreflightIssue

NAME_RE = r"^[a-z0-9][a-z0-9_]*$"  # specs.NAME_PATTERN: aliases, version ids, experiment names, signals
# NAME_RE without the `sv_` prefix reserved for version ids (no look-ahead: pydantic's regex engine has none)
ALIAS_RE = r"^(?:[a-rt-z0-9][a-z0-9_]*|s|s[a-uw-z0-9_][a-z0-9_]*|sv|sv[a-z0-9][a-z0-9_]*)$"
VERSION_ID_RE = r"^sv_[0-9a-f]{16}$"
RUN_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
DATASET_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # one path component: no '/', cannot start with '.'

RegistryFactory = Callable[[], Registry]

Alias = Annotated[str, PathParam(pattern=ALIAS_RE, max_length=64, description="an alias (not `sv_...`)",
                                  examples=["live"])]
AliasOrId = Annotated[str, PathParam(pattern=NAME_RE, max_length=64, description="a version id or an alias",
                                      examples=["live"])]
ExperimentName = Annotated[str, PathParam(pattern=NAME_RE, max_length=64, examples=["flow_score_sweep"])]
RunId = Annotated[str, PathParam(pattern=RUN_ID_RE, max_length=160)]
DatasetId = Annotated[str, PathParam(pattern=DATASET_ID_RE, max_length=200)]

RegistryFactory = Callable[[], Registry]

Alias = Annotated[str, PathParam(pattern=ALIAS_RE, max_length=64, description="an alias (not `sv_...`)",
                                  examples=["live"])]
AliasOrId = Annotated[str, PathParam(pattern=NAME_RE, max_length=64, description="a version id or an alias",
                                      examples=["live"])]
ExperimentName = Annotated[str, PathParam(pattern=NAME_RE, max_length=64, examples=["flow_score_sweep"])]
RunId = Annotated[str, PathParam(pattern=RUN_ID_RE, max_length=160)]
DatasetId = Annotated[str, PathParam(pattern=DATASET_ID_RE, max_length=200)]


class ErrorDetail(BaseModel):
    detail: Any


class RefusedDetail(BaseModel):
    message: str
    subject: str | None = None
    issues: list[PreflightIssue] = []


class Refused(BaseModel):
    detail: RefusedDetail


NOT_FOUND = {404: {"model": ErrorDetail}}
REFUSED = {404: {"model": ErrorDetail}, 409: {"model": Refused}}
DOWN = {503: {"model": ErrorDetail}}  # the registry database cannot be reached


def clean(v: Any) -> Any:
    """JSON-safe value: non-finite floats -> None (recursively)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    return v


def metric(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def json_obj(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return clean(obj) if isinstance(obj, dict) else None


def split(v: Any) -> list[str]:
    return [x for x in str(v or "").split(",") if x]


def str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=what)


def refused(exc: Exception) -> HTTPException:
    if isinstance(exc, PreflightError):
        detail = RefusedDetail(message=str(exc), subject=exc.subject, issues=exc.issues)
    else:
        detail = RefusedDetail(message=str(exc))
    return HTTPException(status_code=409, detail=detail.model_dump(mode="json"))


def registry_call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except UnknownVersionError as exc:
        raise not_found(str(exc)) from exc
    except (PreflightError, RegistryError) as exc:  # refused write, nothing to roll back to, integrity
        raise refused(exc) from exc
    except SQLAlchemyError as exc:  # the database is unreachable or failing: not the client's fault, not a bug
        raise unavailable(exc) from exc


def unavailable(exc: Exception) -> HTTPException:
    return HTTPException(status_code=503, detail=f"serving registry unavailable: {type(exc).__name__}: {exc}")


def open_registry(factory: Callable[[], Registry]) -> Registry:
    try:
        return factory()
    except (SQLAlchemyError, OSError, RegistryError) as exc:
        raise unavailable(exc) from exc


def matches(pattern: str, s: str) -> bool:
    return re.fullmatch(pattern, s) is not None


class ApiContext:
    """Where the routers get the lake, the configs tree and the (one, lazily opened) Registry."""

    def __init__(self, registry_factory: RegistryFactory | None = None, lake: Path | None = None,
                 configs: Path | None = None) -> None:
        self.registry_factory = registry_factory
        self.lake = lake
        self.configs = configs
        self.lock = threading.Lock()
        self._registry: Registry | None = None

    def get_lake(self, request: Request) -> Path:
        return Path(self.lake) if self.lake is not None else request.app.state.settings.lake

    def get_configs(self) -> Path:
        return Path(self.configs) if self.configs is not None else configs_root()

    def get_registry(self, request: Request) -> Registry:
        with self.lock:
            if self.registry_factory is not None:
                if self._registry is None:
                    self._registry = open_registry(self.registry_factory)
                return self._registry
            reg = getattr(request.app.state, "rest_registry", None)
            if reg is None:
                settings = request.app.state.settings
                reg = open_registry(lambda: Registry(url=settings.registry_url, lake=settings.lake))
                request.app.state.rest_registry = reg
            return reg

    def registry_dep(self) -> Any:
        return Annotated[Registry, Depends(self.get_registry)]

    def lake_dep(self) -> Any:
        return Annotated[Path, Depends(self.get_lake)]
