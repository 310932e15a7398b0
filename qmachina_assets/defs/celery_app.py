"""The Celery app `qmachina worker` runs (`celery -A qmachina_assets.defs.celery_app worker`).

The same broker, backend and settings as the executor of the runs (`defs/executor.CelerySettings`, from the
environment), so tasks submitted by a run reach these workers. A task carries the job's origin (the code
location's module); the worker imports it on first use.
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from qmachina_assets.defs.executor import CelerySettings

_cfg = CelerySettings().executor_config()
app = make_app(CeleryExecutor.for_cli(broker=_cfg["broker"], backend=_cfg["backend"],
                                      config_source=_cfg["config_source"]).app_args())
execute_plan = create_task(app)
