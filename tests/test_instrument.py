"""Instrument config loading and the single-instrument lock."""

import subprocess
import sys

import pytest
import yaml

from qmachina_assets.core import instrument as im
from qmachina_assets.core.paths import PROJECT_ROOT

DEFAULT = PROJECT_ROOT / "configs" / "instrument.yaml"


def _write(tmp_path, **changes):
    data = yaml.safe_load(DEFAULT.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    p = tmp_path / "instrument.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_default_config_loads_with_derived_fields(instrument):
    assert instrument.symbol_root == "ES"
    assert instrument.tick_int == 250_000_000
    assert instrument.projection_horizons_ms == [100, 200, 300, 400]
    assert len(instrument.config_version) == 12
    assert instrument.to_dict()["config_version"] == instrument.config_version


def test_config_version_changes_with_any_field(tmp_path, instrument):
    other = im.load_instrument(_write(tmp_path, c5=1.25))
    assert other.config_version != instrument.config_version


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"tick_size": -0.25}, "tick_size"),
        ({"c4": -1.0}, "c4"),
        ({"grid_radius_ticks": None}, "grid_radius_ticks"),
        ({"flow_rollup_weights": [1, 1]}, "flow_rollup_weights"),
        ({"flow_neutral_threshold": 1.5}, "flow_neutral_threshold"),
        ({"product_type": "crypto"}, "product_type"),
        ({"unexpected_key": 3}, "unexpected_key"),
        ({"symbol": "NQH4"}, "symbol"),
    ],
)
def test_malformed_config_fails_naming_the_field(tmp_path, changes, field):
    p = _write(tmp_path, **changes)
    with pytest.raises(im.InstrumentConfigError, match=rf"instrument\.yaml: .*field '{field}'"):
        im.load_instrument(p)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "instrument.yaml"
    bad.write_text("product_type: [unclosed\n")
    with pytest.raises(im.InstrumentConfigError, match="not valid YAML"):
        im.load_instrument(bad)
    with pytest.raises(im.InstrumentConfigError, match="not found"):
        im.load_instrument(tmp_path / "nope.yaml")


def test_env_override_path_is_the_lock(tmp_path, monkeypatch):
    p = _write(tmp_path, symbol_root="NQ", symbol="NQM4")
    monkeypatch.setenv(im.ENV_PATH, str(p))
    lock = im.locked_instrument()
    assert lock.symbol_root == "NQ"
    with pytest.raises(im.InstrumentLockError, match="'ESH4' is not an outright contract of the locked root 'NQ'"):
        lock.check_lock(source="x.dbn", symbols=["ESH4"])


def test_lock_accepts_outrights_of_the_root_only(instrument):
    instrument.check_lock(source="f", dataset="GLBX.MDP3", symbols=["ESH4", "ESM24", "ESZ3"])
    for bad in ("ESM4-ESU4", "NQH4", "ES", "ESH"):
        with pytest.raises(im.InstrumentLockError, match="symbol"):
            instrument.check_lock(source="f", symbols=[bad])
    with pytest.raises(im.InstrumentLockError, match=r"dataset is 'XNAS\.ITCH'"):
        instrument.check_lock(source="f", dataset="XNAS.ITCH")


def test_code_location_refuses_to_start_on_a_bad_config(tmp_path):
    p = _write(tmp_path, tau_jerk=0)
    proc = subprocess.run(
        [sys.executable, "-c", "import qmachina_assets.definitions"],
        env={"QMACHINA_INSTRUMENT_CONFIG_PATH": str(p), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
    )
    assert proc.returncode != 0
    assert "field 'tau_jerk'" in proc.stderr
