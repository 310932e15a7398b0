"""Which Dagster executor runs the steps, chosen by configuration (environment), not by code.

`QMACHINA_EXECUTOR`:
- `multiprocess` (default): every step in its own process on this machine, `QMACHINA_MAX_CONCURRENT` at once (2);
- `in_process`: one process (debugging, tests);
- `celery`: each step is a Celery task on the Redis broker; `qmachina worker` processes (here or on other
  machines) run them. Workers must see the same lake (`QMACHINA_LAKE_DIR`, a shared mount), the same
  Dagster instance (Postgres via `QMACHINA_DAGSTER_PG_URL` across machines) and the same settings below.

Celery settings (`QMACHINA_CELERY_*`): `BROKER` and `BACKEND` (default the local Redis, db 0), `KEY_PREFIX`
(every broker/result key is prefixed, so several deployments or test runs share one Redis without seeing each
other's tasks), `RETRIES` (Dagster step retries the executor allows, default 2). Tasks are acknowledged late
and rejected when their worker dies, so a step whose worker was killed goes back to the queue (after
`VISIBILITY_TIMEOUT_S`) and runs again on a live worker; the partition writers are atomic (temp dir + rename)
and idempotent, so a partition is still written once, whole.
"""

from __future__ import annotations

from typing import Any, Literal

import dagster as dg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

CELERY_QUEUE = "dagster"  # dagster-celery's own queue name (make_app declares it)


class ExecutorSettings(BaseSettings):
    """`QMACHINA_EXECUTOR` and `QMACHINA_MAX_CONCURRENT`."""

    model_config = SettingsConfigDict(env_prefix="QMACHINA_", extra="ignore")

    executor: Literal["multiprocess", "in_process", "celery"] = "multiprocess"
    max_concurrent: int = Field(2, ge=1, le=256, description="steps at once (multiprocess executor)")


class CelerySettings(BaseSettings):
    """The Celery executor's broker, result backend and delivery settings (`QMACHINA_CELERY_*`)."""

    model_config = SettingsConfigDict(env_prefix="QMACHINA_CELERY_", extra="ignore")

    broker: str = "redis://127.0.0.1:6379/0"
    backend: str | None = Field(None, description="result backend; default: the broker")
    key_prefix: str = Field("qmachina:", description="prefix of every Redis key of the broker and backend")
    retries: int = Field(2, ge=0, le=20, description="Dagster step retries (steps with a retry policy)")
    visibility_timeout_s: int = Field(3600, ge=5, description="an unacknowledged task is redelivered after this")

    def app_config(self) -> dict[str, Any]:
        """Celery settings passed to both the executor (the run) and the workers (must agree)."""
        transport = {"global_keyprefix": self.key_prefix, "visibility_timeout": self.visibility_timeout_s,
                     "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
        return {
            "broker_transport_options": transport,
            "result_backend_transport_options": {"global_keyprefix": self.key_prefix},
            "task_acks_late": True,  # a task whose worker dies before finishing is not lost...
            "task_reject_on_worker_lost": True,  # ...it goes back to the queue
            "worker_prefetch_multiplier": 1,
            "task_default_queue": CELERY_QUEUE,
            "task_default_priority": 5,
        }

    def executor_config(self) -> dict[str, Any]:
        """The `celery_executor` config block (also what `dagster-celery worker start -y` would read)."""
        return {"broker": self.broker, "backend": self.backend or self.broker, "include": [],
                "config_source": self.app_config(),
                "retries": {"enabled": {}} if self.retries else {"disabled": {}}}


def select_executor(settings: ExecutorSettings | None = None) -> dg.ExecutorDefinition:
    """The code location's default executor, from the environment."""
    s = settings or ExecutorSettings()
    if s.executor == "in_process":
        return dg.in_process_executor
    if s.executor == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(CelerySettings().executor_config())
    return dg.multiprocess_executor.configured({"max_concurrent": s.max_concurrent})
