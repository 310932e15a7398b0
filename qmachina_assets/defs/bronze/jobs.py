import dagster as dg

from qmachina_assets.defs.bronze.assets import bronze_mbo

bronze_job = dg.define_asset_job(
    "bronze_job", selection=[bronze_mbo], description="Materialize bronze partitions",
    tags={"qmachina/stage": "bronze"},
)
