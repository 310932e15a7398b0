"""The qMachina code location. Loading it enforces the instrument lock (fails fast on a bad config)."""

import dagster as dg

from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.defs.automation import automation_sensor
from qmachina_assets.defs.bronze.assets import bronze_mbo
from qmachina_assets.defs.bronze.jobs import bronze_job
from qmachina_assets.defs.bronze.sensors import raw_file_sensor
from qmachina_assets.defs.datasets.assets import dataset_assets
from qmachina_assets.defs.executor import select_executor
from qmachina_assets.defs.gold.assets import gold_assets
from qmachina_assets.defs.gold.jobs import gold_job
from qmachina_assets.defs.promotion.assets import (
    alias_assets,
    candidate_assets,
    promote_job,
    published_versions_sensor,
)
from qmachina_assets.defs.research_jobs.jobs import experiment_job
from qmachina_assets.defs.resources import default_resources
from qmachina_assets.defs.silver.assets import silver_grid
from qmachina_assets.defs.silver.jobs import silver_job
from qmachina_assets.defs.sweeps.assets import experiment_jobs, sweep_assets

INSTRUMENT = locked_instrument()  # start-up lock check: a malformed or missing file stops the load here

RESEARCH = [*dataset_assets(), *sweep_assets()]
PROMOTION = [*candidate_assets(), *alias_assets()]
EXPERIMENTS = [a.key.path[-1].removeprefix("serving_alias_") for a in alias_assets()]

defs = dg.Definitions(
    assets=[bronze_mbo, silver_grid, *gold_assets(), *RESEARCH, *PROMOTION],
    jobs=[bronze_job, silver_job, gold_job, *experiment_jobs(RESEARCH), promote_job, experiment_job],
    sensors=[raw_file_sensor, automation_sensor, published_versions_sensor(EXPERIMENTS)],
    resources=default_resources(),
    executor=select_executor(),  # QMACHINA_EXECUTOR: multiprocess (default) | in_process | celery
)
