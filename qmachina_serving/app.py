"""The FastAPI application: probes, the replay stream, its statistics.

Endpoints:
- `GET /healthz` — the process is up (200 always).
- `GET /readyz` — 200 when the instrument lock loads, the lake exists, the registry answers and the
  engine kernels are loaded; 503 with the failing checks otherwise.
- `WS /v1/stream?serving=<alias|version id>[&date=YYYY-MM-DD][&start=HH:MM[:SS]][&end=HH:MM[:SS]][&speed=x]`
  — see `protocol` (messages, close codes) and `session` (sharing, pacing, slow clients). `start`/`end`
  are ET wall times on the (UTC) partition date, defaulting to the published pipeline's capture window
  (none: first record / end of data); `date` defaults to its first capture date; `speed` to 1.
- `GET /v1/stream/stats` — live sessions (subscribers, bins sent, skipped, dropped, pacer lateness).

The REST surface of SPEC §8.5 (registry versions/aliases, diff, activation) is a later issue: add its
routers in `create_app` next to `stream_router`; they can reuse `app.state.source` / `app.state.settings`.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from qmachina_serving.protocol import CloseCode, StreamError
from qmachina_serving.replay import parse_query, plan_replay, warm_kernels
from qmachina_serving.session import StreamHub
from qmachina_serving.settings import ServingSettings
from qmachina_serving.source import RegistrySource, VersionSource

log = logging.getLogger("qmachina_serving")

probe_router = APIRouter()
stream_router = APIRouter(prefix="/v1")


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """No Origin (non-browser client), a listed origin, or the page's own origin (same host:port)."""
    if not origin:
        return True
    origin = origin.rstrip("/")
    return origin in allowed or (host is not None and urlsplit(origin).netloc == host)


@probe_router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probe_router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    ok, checks = await _readiness(request.app)
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


async def _readiness(app: FastAPI) -> tuple[bool, dict[str, str]]:
    checks: dict[str, str] = {}
    checks["warm"] = "ok" if app.state.hub.ready else app.state.warm_error or "loading engine kernels and registry"
    lake = app.state.settings.lake
    checks["lake"] = "ok" if lake.is_dir() else f"{lake}: not a directory"
    try:
        await asyncio.wait_for(asyncio.to_thread(app.state.source.check), timeout=5.0)
        checks["registry"] = "ok"
    except Exception as exc:  # reported, not raised
        checks["registry"] = f"{type(exc).__name__}: {exc}"
    return all(v == "ok" for v in checks.values()), checks


@stream_router.get("/stream/stats")
async def stream_stats(request: Request) -> dict[str, Any]:
    return request.app.state.hub.stats()


async def _close(ws: WebSocket, err: StreamError) -> None:
    try:
        await ws.send_text(err.message_json())
        await ws.close(code=int(err.code), reason=err.reason)
    except Exception:  # the client is gone already
        pass


@stream_router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    app = ws.app
    settings: ServingSettings = app.state.settings
    hub: StreamHub = app.state.hub
    if not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"), settings.cors_origins):
        await ws.close(code=CloseCode.ORIGIN_FORBIDDEN)  # before accept: HTTP 403 at the handshake
        return
    await ws.accept()
    try:
        req = parse_query(ws.query_params.multi_items(), settings.max_speed)
        if not hub.ready:
            raise StreamError(CloseCode.UNAVAILABLE, "server not ready (loading the engine)")
        version = await asyncio.to_thread(app.state.source.resolve, req.serving)
        plan = await asyncio.to_thread(plan_replay, version, req, settings.lake)
        session, sub = hub.join(version, plan, ws)
    except StreamError as err:
        await _close(ws, err)
        return
    try:
        while True:  # client messages are ignored; this notices the disconnect
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
    except Exception:  # closed under us (dropped, shutdown)
        pass
    finally:
        session.leave(sub)


def create_app(settings: ServingSettings | None = None, *, source: VersionSource | None = None) -> FastAPI:
    """The serving app. `source` defaults to the registry (settings.registry_url / QMACHINA_REGISTRY_URL,
    else the SQLite registry in the lake)."""
    settings = settings or ServingSettings()
    lake = settings.lake
    src = source or RegistrySource(settings.registry_url, lake)
    hub = StreamHub(settings, lake)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def warm() -> None:
            try:
                from qmachina_assets.core.instrument import locked_instrument

                await asyncio.to_thread(lambda: warm_kernels(locked_instrument()))
                await asyncio.to_thread(src.check)  # opens the registry (imports, migrations) before clients
                hub.ready = True
            except Exception as exc:  # readiness reports it
                app.state.warm_error = f"{type(exc).__name__}: {exc}"
                log.exception("engine warm-up failed")

        task = asyncio.get_running_loop().create_task(warm())
        try:
            yield
        finally:
            task.cancel()
            await hub.shutdown()
            close = getattr(src, "close", None)
            if close is not None:
                close()

    app = FastAPI(title="qMachina serving", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.source = src
    app.state.hub = hub
    app.state.warm_error = None
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "authorization"])
    app.include_router(probe_router)
    app.include_router(stream_router)
    return app
