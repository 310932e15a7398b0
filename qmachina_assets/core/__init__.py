"""The domain core: importable without Dagster or FastAPI so assets, serving and tests share it."""
