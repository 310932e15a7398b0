"""The registry's error types, shared by the registry, preflight callers and `reproduce` (no imports of either)."""

from __future__ import annotations


class RegistryError(ValueError):
    """A registry operation cannot be done as asked; the message says why."""


class UnknownVersionError(RegistryError, LookupError):
    """No alias or version of that name."""


class ImmutableVersionError(RegistryError):
    """A statement would update or delete a published version or an audit row."""


class RegistryIntegrityError(RegistryError):
    """Stored rows do not match their content-derived ids."""


class AliasConflictError(RegistryError):
    """The alias no longer points where the caller expected (compare-and-swap lost to another writer)."""


class AliasOwnedError(RegistryError):
    """The alias is owned by an experiment and the version did not pass that experiment's gate."""
