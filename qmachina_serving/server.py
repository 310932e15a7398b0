"""`serve(host, port)`: run the serving app under uvicorn (what `qmachina serve` calls).

One process, one event loop: sessions live in memory, so run a single worker per instrument lock and
scale out with more processes behind a load balancer that pins a stream key to one of them. The
WebSocket protocol is uvicorn's sans-I/O `websockets` implementation with permessage-deflate OFF:
compressing a dense Arrow frame once per client per send cost ~15x the whole fan-out
(notes/serving.md).
"""

from __future__ import annotations

import sys
from typing import Any

from qmachina_serving.settings import ServingSettings


def uvicorn_config_kwargs(settings: ServingSettings) -> dict[str, Any]:
    return {"ws": "websockets-sansio", "ws_per_message_deflate": False,
            "ws_ping_interval": settings.ws_ping_interval_s, "ws_ping_timeout": settings.ws_ping_timeout_s,
            "log_level": settings.log_level, "access_log": settings.access_log, "lifespan": "on"}


def serve(host: str | None = None, port: int | None = None, *, settings: ServingSettings | None = None,
          **overrides: Any) -> None:
    """Serve until interrupted. `host`/`port`/`overrides` take precedence over `settings` (default: the
    environment, `QMACHINA_SERVING_*`)."""
    import uvicorn

    from qmachina_serving.app import create_app

    base = settings or ServingSettings()
    update = {k: v for k, v in {"host": host, "port": port, **overrides}.items() if v is not None}
    cfg = ServingSettings.model_validate({**base.model_dump(), **update}) if update else base
    sys.setswitchinterval(0.001)  # producer threads hand the GIL back to the event loop sooner
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, **uvicorn_config_kwargs(cfg))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m qmachina_serving", description="qMachina serving process")
    ap.add_argument("--host", default=None)
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--log-level", default=None)
    args = ap.parse_args(argv)
    serve(args.host, args.port, log_level=args.log_level)
    return 0
