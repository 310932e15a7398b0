"""qMachina Dagster code location and the domain core it calls (`qmachina_assets.core`)."""
