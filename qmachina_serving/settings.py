"""Configuration of the serving process, from the environment (`QMACHINA_SERVING_*`) or keyword arguments.

Shared project variables keep their meaning: `QMACHINA_LAKE_DIR` (the lake: bronze partitions, engine
checkpoints, the SQLite registry) and `QMACHINA_REGISTRY_URL` (a Postgres registry) apply when
`lake_dir` / `registry_url` are not set here; `QMACHINA_INSTRUMENT_CONFIG_PATH` is the instrument lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from qmachina_assets.core.paths import PROJECT_ROOT, lake_root


class ServingSettings(BaseSettings):
    """Every knob of `qmachina serve`; env names are `QMACHINA_SERVING_<FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="QMACHINA_SERVING_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8002, ge=0, le=65535)
    lake_dir: Path | None = Field(None, description="default: QMACHINA_LAKE_DIR, else lake/ in the checkout")
    registry_url: str | None = Field(None, description="default: QMACHINA_REGISTRY_URL, else SQLite in the lake")
    control_url: str | None = Field(None, description="workspaces, tokens, audit (default: QMACHINA_CONTROL_URL, "
                                                      "else the registry's database)")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins allowed for REST (CORS) and for the WebSocket (Origin check); comma "
                    "separated or a JSON list in the environment. `*` is refused. Same-origin pages and "
                    "clients sending no Origin (non-browser) are always allowed.")
    web_dir: Path | None = Field(None, description="the built browser client served at / (default: web/dist in "
                                                  "the checkout; `make web-build` writes it)")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="where `qmachina live` publishes the live "
                                                                     "streams (`source=live`)")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger HTTP request bodies answer 413")
    # ---- fan-out -------------------------------------------------------------------------------
    client_queue_bins: int = Field(64, ge=1, description="bins queued per client before skip-ahead")
    max_stall_s: float = Field(2.0, gt=0, description="a client with queued bins and no completed send for "
                                                        "this long is dropped (close 4429)")
    close_grace_s: float = Field(1.0, gt=0, description="after a drop, time the client gets to read the 4429 "
                                                        "close frame before its socket is aborted")
    send_buffer_bytes: int = Field(1 << 20, ge=0, description="SO_SNDBUF of each stream socket (bounds the kernel "
                                                              "memory one dead reader pins; 0: the OS default)")
    direct_write: bool = Field(True, description="write each bin's pre-built frames with one transport write "
                                                  "per client (wire.DirectWriter); False: two ASGI sends")
    max_sessions: int = Field(32, ge=1)
    max_subscribers: int = Field(2000, ge=1)
    # ---- replay --------------------------------------------------------------------------------
    max_speed: float = Field(1000.0, gt=0)
    lead_in_s: float = Field(0.1, ge=0, description="wall time between a new session's first ready bin and "
                                                     "its first deadline (co-subscribers join meanwhile)")
    ahead_bins: int = Field(128, ge=8, description="encoded bins a session keeps ready ahead of its clock")
    feed_records: int = Field(4096, ge=64, description="records per engine call (bounds one GIL hold)")
    inline_warmup_records: int = Field(
        250_000, ge=0, description="a checkpoint miss needing more records than this before the start is "
                                   "built in a worker process, so a long warm-up never stalls other sessions")
    # ---- jobs (Dagster runs) --------------------------------------------------------------------
    dagster_url: str = Field("http://127.0.0.1:3000", description="the Dagster webserver the jobs API launches "
                                                                  "runs through (GraphQL)")
    dagster_location: str = "qmachina"
    job_budget_cpu_s: float = Field(3600.0, gt=0, description="a job whose estimated cost (parameter sets x "
                                                              "days x cost per set-day) exceeds this is refused")
    job_wall_time_s: float = Field(3600.0, gt=0, description="default and maximum wall-time budget of a run")
    job_cost_per_set_day_s: float = Field(0.05, gt=0, description="cost per set-day used until sweeps in the "
                                                                  "lake have measured one")
    # ---- uvicorn -------------------------------------------------------------------------------
    ws_ping_interval_s: float | None = 20.0
    ws_ping_timeout_s: float | None = 20.0
    log_level: str = "info"
    access_log: bool = False

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            s = v.strip()
            v = json.loads(s) if s.startswith("[") else [x.strip() for x in s.split(",") if x.strip()]
        if isinstance(v, list | tuple):
            out = [str(x).rstrip("/") for x in v]
            if any(x == "*" or "*" in x for x in out):
                raise ValueError("cors_origins: list the allowed origins explicitly; '*' is not accepted")
            return out
        return v

    @property
    def web(self) -> Path:
        return Path(self.web_dir).resolve() if self.web_dir is not None else PROJECT_ROOT / "web" / "dist"

    @property
    def lake(self) -> Path:
        return Path(self.lake_dir).resolve() if self.lake_dir is not None else lake_root()
