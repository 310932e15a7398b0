"""Test-only helpers (independent reference implementations, small builders)."""
