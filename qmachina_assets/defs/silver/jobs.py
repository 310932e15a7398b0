import dagster as dg

from qmachina_assets.defs.silver.assets import SILVER_KEY

silver_job = dg.define_asset_job(
    "silver_job", selection=[SILVER_KEY], tags={"qmachina/stage": "silver"},
    description="Materialize silver sessions (engine over bronze, the window of configs/silver.yaml)",
)
