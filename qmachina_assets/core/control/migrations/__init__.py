"""Alembic migrations of the control plane, run from code (`ControlPlane` upgrades on open), no alembic.ini."""
