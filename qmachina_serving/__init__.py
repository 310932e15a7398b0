"""qMachina serving process (FastAPI + WebSocket stream). Arrives with the serving issue; it will import
only `qmachina_assets.core` (never Dagster) so the stream uses the same engine as the assets."""
