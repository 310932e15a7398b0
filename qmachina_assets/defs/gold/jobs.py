import dagster as dg

gold_job = dg.define_asset_job(
    "gold_job", selection=dg.AssetSelection.groups("gold"), tags={"qmachina/stage": "gold"},
    description="Materialize every gold feature set (built-in and Gold DSL) of the selected sessions",
)
