"""Alembic migrations of the serving registry, run from code (`registry.upgrade`), no alembic.ini."""
