"""What every `/v1` router shares: path parameter types, error models, the registry, lake and caller
dependencies.

`ApiContext` holds the injected registry and control-plane factories, lake and configs (tests) or reads them
from the app's `ServingSettings`; routers take their dependencies from it, so one Registry and one
ControlPlane are opened per app. `ctx.caller()` / `ctx.role("admin")` are the authenticated caller (see
`qmachina_serving.auth`); `build_router` puts `ctx.authenticate` on the whole `/v1` router.
"""

from __future__ import annotations

import inspect
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

from qmachina_assets.core.control import ControlError, ControlPlane, NotFoundError, Principal, QuotaExceeded
from qmachina_assets.core.control.models import DEFAULT_WORKSPACE
from qmachina_assets.core.paths import configs_root
from qmachina_assets.core.registry import PreflightError, Registry, RegistryError, UnknownVersionError
from qmachina_assets.core.registry.preflight import PreflightIssue
from qmachina_serving.auth import Auth, app_auth, quota_error

NAME_RE = r"^[a-z0-9][a-z0-9_]*$"  # specs.NAME_PATTERN: aliases, version ids, experiment names, signals
# NAME_RE without the `sv_` prefix reserved for version ids (no look-ahead: pydantic's regex engine has none)
ALIAS_RE = r"^(?:[a-rt-z0-9][a-z0-9_]*|s|s[a-uw-z0-9_][a-z0-9_]*|sv|sv[a-z0-9][a-z0-9_]*)$"
VERSION_ID_RE = r"^sv_[0-9a-f]{16}$"
RUN_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
DATASET_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # one path component: no '/', cannot start with '.'

RegistryFactory = Callable[[], Registry]
ControlFactory = Callable[[], ControlPlane]

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


def control_call(fn: Callable[[], Any]) -> Any:
    """Run a ControlPlane call, mapping its errors: 404 not found (also another workspace's), 429 quota,
    409 refused, 503 database down."""
    try:
        return fn()
    except NotFoundError as exc:
        raise not_found(str(exc)) from exc
    except QuotaExceeded as exc:
        raise quota_error(exc) from exc
    except ControlError as exc:
        raise refused(exc) from exc
    except SQLAlchemyError as exc:
        raise HTTPException(status_code=503, detail=f"control plane unavailable: {type(exc).__name__}") from exc


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
                 configs: Path | None = None, control_factory: ControlFactory | None = None) -> None:
        self.registry_factory = registry_factory
        self.lake = lake
        self.configs = configs
        self.lock = threading.Lock()
        self._registry: Registry | None = None
        self._auth = Auth(control_factory) if control_factory is not None else None

    # -- the caller --

    def get_auth(self, request: Request) -> Auth:
        return self._auth if self._auth is not None else app_auth(request.app)

    def get_control(self, request: Request) -> ControlPlane:
        return self.get_auth(request).control

    def authenticate(self, request: Request) -> Principal:
        """Dependency of the whole `/v1` router: 401 without a valid credential."""
        return self.get_auth(request).principal(request)

    def caller(self) -> Any:
        """`Annotated[Principal, ...]`: the authenticated caller (any role)."""
        return Annotated[Principal, Depends(self.authenticate)]

    def role(self, role: str) -> Any:
        """`Annotated[Principal, ...]`: the caller, who must hold `role` or higher (403 otherwise)."""

        def dep(request: Request) -> Principal:
            return self.get_auth(request).require(role)(request)

        dep.__name__ = f"require_{role}"
        return Annotated[Principal, Depends(dep)]

    def control_dep(self) -> Any:
        return Annotated[ControlPlane, Depends(self.get_control)]

    def visible(self, request: Request, principal: Principal, kind: str, names: list[str]) -> set[str]:
        """Which experiments/datasets of `names` the caller's workspace sees (`ControlPlane.visible`)."""
        return control_call(lambda: self.get_control(request).visible(principal.workspace, kind, names,
                                                                      DEFAULT_WORKSPACE))

    def owned(self, kind: str, param: Any, param_name: str = "name") -> Any:
        """`Annotated[str, ...]` of the path parameter `param_name` naming an experiment/dataset of the caller's
        workspace (404 otherwise, the same answer as for a name that does not exist)."""

        def dep(request: Request, principal: Principal, **path: str) -> str:
            name = path[param_name]
            if name not in self.visible(request, principal, kind, [name]):
                raise not_found(f"no {kind} {name!r}")
            return name

        P = inspect.Parameter
        dep.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
            P("request", P.POSITIONAL_OR_KEYWORD, annotation=Request),
            P("principal", P.KEYWORD_ONLY, annotation=self.caller()),
            P(param_name, P.KEYWORD_ONLY, annotation=param)])
        return Annotated[str, Depends(dep)]

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
