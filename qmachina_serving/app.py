"""The FastAPI application: probes, the replay stream, its statistics.

Endpoints:
- `GET /healthz` — the process is up (200 always).
- `GET /readyz` — 200 when the instrument lock loads, the lake exists, the registry answers and the
  engine kernels are loaded; 503 with the failing checks otherwise.
- `WS /v1/stream?serving=<alias|version id>[&date=YYYY-MM-DD][&start=HH:MM[:SS]][&end=HH:MM[:SS]][&speed=x]`
  — see `protocol` (messages, close codes) and `session` (sharing, pacing, slow clients). `start`/`end`
  are ET wall times on the (UTC) partition date, defaulting to the published pipeline's capture window
  (none: first record / end of data); `date` defaults to the latest day with live records in that window
  (`replay.plan_replay`); `speed` to 1.
- `GET /v1/stream/stats` — live sessions (subscribers, direct writers, bins sent, skipped, dropped, pacer
  lateness = fan-out time - deadline, all_written = deadline -> last subscriber's frame written, over the
  bins every subscriber received) and totals of finished sessions.
- The REST surface under `/v1` (`rest.router`: serving versions/aliases/diff/activate/rollback,
  experiments, datasets), from `app.state.settings`.
- The browser client (`web/dist`, built by `make web-build`) at `/`: `/` (viewer, `?serving=…`),
  `/registry.html`, `/experiments.html`. One process serves API, stream and UI, so the pages use
  same-origin URLs and need no CORS. Without a build, `/` answers 404 naming the command that makes it.

More routers go in `create_app` next to these; they can reuse `app.state.source` / `app.state.settings`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from qmachina_assets.core.control import Principal, QuotaExceeded
from qmachina_serving.api import router as rest_router
from qmachina_serving.auth import app_auth, cookie_value, origin_allowed
from qmachina_serving.settings import ServingSettings
from qmachina_serving.stream.live import LiveHub, parse_live_query
from qmachina_serving.stream.protocol import CloseCode, StreamError
from qmachina_serving.stream.replay import parse_query, plan_replay, warm_kernels
from qmachina_serving.stream.session import StreamHub
from qmachina_serving.stream.source import RegistrySource, VersionSource

log = logging.getLogger("qmachina_serving")

def _authenticate(request: Request) -> Principal:
    return app_auth(request.app).principal(request)


def _admin(request: Request) -> Principal:
    return app_auth(request.app).require("admin")(request)


probe_router = APIRouter()
stream_router = APIRouter(prefix="/v1", dependencies=[Depends(_authenticate)])  # authenticated by construction


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
def stream_stats(request: Request, who: Annotated[Principal, Depends(_admin)]) -> dict[str, Any]:
    """Admins: the process's stream sessions (version ids, counters; no client identities)."""
    return {**request.app.state.hub.stats(), "live": request.app.state.live_hub.stats()}


class StreamEndpoint:
    """`WS /v1/stream` as a raw ASGI endpoint in front of FastAPI (other scopes pass through).

    Subscribers write with uvicorn's own ASGI `send`: Starlette's WebSocket wrapper and the exception
    middleware's send wrappers cost ~15 % of the fan-out's CPU (200 clients x 2 messages per bin)."""

    def __init__(self, app: Any, path: str = "/v1/stream"):
        self.app = app
        self.path = path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state if "app" in scope else None
        if state is None:  # called outside the FastAPI app (should not happen): let it answer
            await self.app(scope, receive, send)
            return
        await stream(scope, receive, send, state)


class BodyLimit:
    """HTTP request bodies above `max_bytes` answer 413 before the app reads (or buffers) more of them: a
    declared Content-Length over the limit at once, a chunked body as soon as it passes the limit (the app
    then sees a disconnect and whatever it would answer is dropped)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0
        started = refused = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes and not started:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: dict[str, Any]) -> None:
            nonlocal started
            if refused:
                return
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": {"message": f"request body larger than {self.max_bytes} bytes"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _Socket:
    """The raw ASGI `send` under the name subscribers use."""

    __slots__ = ("send",)

    def __init__(self, send: Any):
        self.send = send


async def stream(scope: dict[str, Any], receive: Any, send: Any, state: Any) -> None:
    settings: ServingSettings = state.settings
    hub: StreamHub = state.hub
    if (await receive())["type"] != "websocket.connect":
        return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
    if not origin_allowed(headers.get("origin"), headers.get("host"), settings.cors_origins):
        await send({"type": "websocket.close", "code": int(CloseCode.ORIGIN_FORBIDDEN)})  # before accept: 403
        return
    await send({"type": "websocket.accept"})
    counted: str | None = None  # the workspace whose open-stream count this connection holds
    try:
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        ticket = next((v for k, v in query if k == "ticket"), None)
        query = [(k, v) for k, v in query if k != "ticket"]
        client = (scope.get("client") or ("unknown", 0))[0]
        principal = await asyncio.to_thread(stream_principal, state, headers, ticket, client)
        source = [v for k, v in query if k == "source"]
        live = source[-1:] == ["live"]
        if source and source[-1] not in ("live", "replay"):
            raise StreamError(CloseCode.BAD_REQUEST, f"source {source[-1]!r}: expected replay or live")
        if live:
            alias = parse_live_query(query)
        else:
            req = parse_query([(k, v) for k, v in query if k != "source" or v != "replay"], settings.max_speed)
        if not hub.ready:
            raise StreamError(CloseCode.UNAVAILABLE, "server not ready (loading the engine)")
        counted = await reserve_stream(state, principal.workspace)
        if live:
            # the alias must exist in the caller's workspace (4404 otherwise); its frames come from Redis
            await asyncio.to_thread(state.source.resolve, alias, principal.workspace)
            session, sub = await state.live_hub.join(principal.workspace, alias, _Socket(send))
        else:
            version = await asyncio.to_thread(state.source.resolve, req.serving, principal.workspace)
            plan = await asyncio.to_thread(plan_replay, version, req, settings.lake)
            session, sub = hub.join(version, plan, _Socket(send))
    except StreamError as err:
        release_stream(state, counted)
        try:
            await send({"type": "websocket.send", "text": err.message_json()})
            await send({"type": "websocket.close", "code": int(err.code), "reason": err.reason})
        except Exception:  # the client is gone already
            pass
        return
    except BaseException:
        release_stream(state, counted)
        raise
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass  # client messages are ignored; this notices the disconnect
    except Exception:  # closed under us (dropped, shutdown)
        pass
    finally:
        session.leave(sub)
        release_stream(state, counted)


def stream_principal(state: Any, headers: dict[str, str], ticket: str | None, client: str) -> Principal:
    """The stream's caller: a Bearer header, the session cookie or a single-use ticket (StreamError 4401 /
    4429 otherwise)."""
    auth = app_auth(state)
    try:
        return auth.check(client=client, authorization=headers.get("authorization"),
                          cookie=cookie_value(headers.get("cookie")), ticket=ticket)[0]
    except HTTPException as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
        code = CloseCode.UNAUTHORIZED if exc.status_code == 401 else CloseCode.TOO_MANY
        raise StreamError(code, str(detail.get("message")), {k: v for k, v in detail.items()
                                                             if k != "message"}) from exc


async def reserve_stream(state: Any, workspace: str) -> str:
    """Count one more open stream of `workspace` against its quota (StreamError 4429 when it is reached)."""
    counts: dict[str, int] = state.open_streams
    n = counts.get(workspace, 0)
    counts[workspace] = n + 1  # reserved before the (threaded) quota read: concurrent joins cannot both pass
    try:
        await asyncio.to_thread(app_auth(state).control.check_stream_quota, workspace, n)
    except QuotaExceeded as exc:
        release_stream(state, workspace)
        raise StreamError(CloseCode.TOO_MANY, str(exc), exc.detail()) from exc
    except BaseException:
        release_stream(state, workspace)
        raise
    return workspace


def release_stream(state: Any, workspace: str | None) -> None:
    if workspace is not None:
        state.open_streams[workspace] = max(0, state.open_streams.get(workspace, 1) - 1)


def mount_web(app: FastAPI, web: Path) -> None:
    """Serve the built client at `/` (after every API route, so those win); a clear 404 when not built."""
    if (web / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web, html=True), name="web")
        return

    @app.get("/", include_in_schema=False)
    async def no_client() -> JSONResponse:
        return JSONResponse({"detail": f"the browser client is not built: {web}/index.html is missing "
                                       "(run `make web-build`, or set QMACHINA_SERVING_WEB_DIR)"}, status_code=404)


def create_app(settings: ServingSettings | None = None, *, source: VersionSource | None = None) -> FastAPI:
    """The serving app. `source` defaults to the registry (settings.registry_url / QMACHINA_REGISTRY_URL,
    else the SQLite registry in the lake)."""
    settings = settings or ServingSettings()
    lake = settings.lake
    src = source or RegistrySource(settings.registry_url, lake)
    hub = StreamHub(settings, lake)
    live_hub = LiveHub(settings, hub)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def warm() -> None:
            try:
                from qmachina_assets.core.instrument import locked_instrument

                await asyncio.to_thread(lambda: warm_kernels(locked_instrument()))
                await asyncio.to_thread(src.check)  # opens the registry (imports, migrations) before clients
                # Everything loaded so far (numba, pyarrow, SQLAlchemy, ...: ~140k objects) lives as long as the
                # process: keep it out of the cyclic GC, whose full passes over it paused the loop for tens of ms.
                gc.collect()
                gc.freeze()
                hub.ready = True
            except Exception as exc:  # readiness reports it
                app.state.warm_error = f"{type(exc).__name__}: {exc}"
                log.exception("engine warm-up failed")

        task = asyncio.get_running_loop().create_task(warm())
        try:
            yield
        finally:
            task.cancel()
            await live_hub.shutdown()
            await hub.shutdown()
            close = getattr(src, "close", None)
            if close is not None:
                close()
            app_auth(app).close()

    app = FastAPI(title="qMachina serving", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.source = src
    app.state.hub = hub
    app.state.live_hub = live_hub
    app.state.warm_error = None
    app.state.open_streams = {}
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "authorization"])
    app.include_router(probe_router)
    app.include_router(stream_router)
    app.include_router(rest_router)
    mount_web(app, settings.web)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(StreamEndpoint)  # outermost user middleware: receives uvicorn's own send
    return app
