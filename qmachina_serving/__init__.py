"""qMachina serving process: FastAPI + uvicorn, reading the published serving registry (no Dagster) and
streaming silver grids from the same engine code the assets use.

    from qmachina_serving import serve
    serve("127.0.0.1", 8002)            # or: python -m qmachina_serving --port 8002

See `app` (endpoints), `protocol` (messages and close codes), `session` (shared sessions, pacing, the
slow-client policy), `replay` (parameters, checkpoints, frame encoding), `settings` (environment).
"""

from qmachina_serving.server import serve
from qmachina_serving.settings import ServingSettings


def create_app(*args, **kwargs):
    """`qmachina_serving.app.create_app` (imported lazily: it loads the engine)."""
    from qmachina_serving.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["ServingSettings", "create_app", "serve"]
