"""Where published versions come from: the serving registry (no Dagster), behind a small protocol.

The stream core only needs `VersionSource.resolve(alias_or_id) -> ServedVersion`; `RegistrySource`
implements it over `qmachina_assets.core.registry.Registry`. A `ServedVersion` is everything the
stream reads from a published version, validated once: the engine runtime rebuilt from the snapshot
(its config_version must match the recorded one), the instrument lock, the exact Arrow wire schema and
the `runtime_config` message body.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from qmachina_assets.core.instrument import InstrumentConfig, locked_instrument
from qmachina_assets.core.registry.models import DEFAULT_WORKSPACE
from qmachina_serving.stream.protocol import CloseCode, StreamError

#: Keys of `InstrumentConfig.to_dict()` that are derived, not fields.
_DERIVED = ("projection_horizons_ms", "config_version")


@dataclass(frozen=True)
class ServedVersion:
    """A published version as the stream uses it (immutable, shared by every session of the version)."""

    version_id: str
    alias: str | None
    snapshot: dict[str, Any] = field(repr=False)
    runtime: InstrumentConfig = field(repr=False)
    schema: pa.Schema = field(repr=False)
    runtime_config: dict[str, Any] = field(repr=False)  # SPEC §7.2 first message, without `replay`
    #: The published ServingSpec (dump) and the `eval` settings of the experiment that evaluated it (None:
    #: registered without one): what `signals=1` trades (`served_signal.SignalSetup`).
    serving_spec: dict[str, Any] | None = field(default=None, repr=False)
    experiment_eval: dict[str, Any] | None = field(default=None, repr=False)
    #: The lake holding an ML version's model file (snapshot `model`, `model_artifact`); the registry's lake.
    lake: Path | None = field(default=None, repr=False)

    @property
    def model_id(self) -> str:
        return str(self.snapshot.get("model_id") or self.runtime.model_id)

    @property
    def symbol(self) -> str:
        return str(self.snapshot.get("stream", {}).get("symbol") or self.runtime.symbol)

    @property
    def dates(self) -> list[dt.date]:
        return [dt.date.fromisoformat(d) for d in self.snapshot.get("stream", {}).get("dates", [])]

    @property
    def start_et(self) -> str | None:
        return self.snapshot.get("stream", {}).get("start_et")

    @property
    def end_et(self) -> str | None:
        return self.snapshot.get("stream", {}).get("end_et")


class VersionSource(Protocol):
    def resolve(self, alias_or_id: str, workspace: str = DEFAULT_WORKSPACE) -> ServedVersion:
        """The version an alias of `workspace` points at (or a version id of it); StreamError 4404/4422
        otherwise (4404 also for another workspace's alias or version)."""

    def check(self) -> None:
        """Raise when the source cannot be read (readiness probe)."""


def runtime_from_snapshot(snapshot: dict[str, Any]) -> InstrumentConfig:
    """The engine runtime of a snapshot; refuses a snapshot whose recorded config_version differs."""
    rc = snapshot["runtime_config"]
    runtime = InstrumentConfig.model_validate({k: v for k, v in rc.items() if k not in _DERIVED})
    if rc.get("config_version") not in (None, runtime.config_version):
        raise ValueError(f"runtime_config.config_version {rc.get('config_version')} does not match its fields "
                         f"({runtime.config_version})")
    return runtime


class RegistrySource:
    """`VersionSource` over the serving registry (SQLite in the lake or `QMACHINA_REGISTRY_URL`)."""

    def __init__(self, url: str | None = None, lake: Path | None = None,
                 instrument: InstrumentConfig | None = None):
        self._url = url
        self._lake = lake
        self._instrument = instrument
        self._registry: Any = None
        self._lock = threading.Lock()
        self._versions: dict[str, ServedVersion] = {}  # immutable versions, by id (alias resolution is not cached)

    @property
    def instrument(self) -> InstrumentConfig:
        if self._instrument is None:
            self._instrument = locked_instrument()
        return self._instrument

    def _reg(self) -> Any:
        with self._lock:
            if self._registry is None:
                from qmachina_assets.core.registry import Registry

                self._registry = Registry(url=self._url, lake=self._lake, instrument=self.instrument)
            return self._registry

    def check(self) -> None:
        self._reg().list_aliases()  # any workspace's read proves the database answers

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()

    def resolve(self, alias_or_id: str, workspace: str = DEFAULT_WORKSPACE) -> ServedVersion:
        from qmachina_assets.core.registry import RegistryError, UnknownVersionError

        try:
            pv = self._reg().resolve(alias_or_id, workspace)
        except UnknownVersionError as exc:
            raise StreamError(CloseCode.UNKNOWN_SERVING, str(exc)) from exc
        except RegistryError as exc:  # integrity errors: the stored version cannot be trusted
            raise StreamError(CloseCode.NOT_SERVABLE, str(exc)) from exc
        cached = self._versions.get(pv.version_id)
        if cached is not None and cached.alias == pv.alias:
            return cached
        served = self._served(pv)
        self._versions[pv.version_id] = served
        return served

    def _served(self, pv: Any) -> ServedVersion:
        from qmachina_assets.core.registry.snapshot import lock_problems

        snap = pv.runtime_snapshot
        problems = lock_problems(snap, self.instrument)
        try:
            runtime = runtime_from_snapshot(snap)
        except (KeyError, ValueError) as exc:
            problems.append(f"runtime_config: {exc}")
            runtime = None
        try:
            schema = pv.arrow_schema()
        except (KeyError, ValueError) as exc:
            problems.append(f"stream_schema: {exc}")
            schema = None
        if problems or runtime is None or schema is None:
            raise StreamError(CloseCode.NOT_SERVABLE, f"version {pv.version_id} cannot be streamed here: "
                                                      + "; ".join(problems))
        experiment = pv.lineage.experiment
        return ServedVersion(version_id=pv.version_id, alias=pv.alias, snapshot=snap, runtime=runtime,
                             schema=schema, runtime_config=pv.runtime_config_message(), serving_spec=pv.serving,
                             experiment_eval=None if experiment is None else experiment.get("eval", {}),
                             lake=self._reg().lake)
