"""Replay planning defaults: a stream without a date picks the latest day that has live records in the
window; a day without them is refused (4410) naming the days that have some. Real ESH4 samples: 2023-12-24
is only the snapshot (8,725 Adds at 13:00 UTC, no bins), 2023-12-25 has live events 17:00-18:59 ET."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze
from qmachina_assets.core.instrument import load_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_serving.stream.protocol import StreamError
from qmachina_serving.stream.replay import ReplayRequest, days_with_data, has_live_records, plan_replay
from tests.conftest import ESH4_1224, ESH4_1225, sample

D24, D25 = dt.date(2023, 12, 24), dt.date(2023, 12, 25)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = tmp_path_factory.mktemp("plan") / "lake"
    lake.mkdir()
    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    for rel in (ESH4_1224, ESH4_1225):
        f = lakemod.land_raw_file(sample(rel), lake, inst)
        build_bronze([f.path], date=f.date, symbol="ESH4", lake=lake, instrument=inst)
    return lake


def version(dates, start_et=None, end_et=None):
    return SimpleNamespace(symbol="ESH4", dates=dates, start_et=start_et, end_et=end_et,
                           runtime=SimpleNamespace(cell_width_ms=100), version_id="sv_test")


def test_live_records_per_day_and_window(lake):
    assert not has_live_records(lake, "ESH4", D24, None, None)  # the snapshot alone makes no bins
    assert has_live_records(lake, "ESH4", D25, None, None)
    assert has_live_records(lake, "ESH4", D25, dt.time(18, 0), dt.time(18, 5))
    assert not has_live_records(lake, "ESH4", D25, dt.time(9, 30), dt.time(16, 0))  # no RTH on Christmas
    assert days_with_data(lake, "ESH4", None, None) == [D25]
    assert days_with_data(lake, "NQH4", None, None) == []


def test_no_date_picks_the_latest_day_with_data(lake):
    # the capture's first date (2023-12-24, the old default) has no bins: the stream no longer opens it
    plan = plan_replay(version([D24, D25]), ReplayRequest(serving="x"), lake)
    assert plan.date == D25 and plan.describe()["dates_with_data"] == ["2023-12-25"]
    plan = plan_replay(version([], "18:00", "18:05"), ReplayRequest(serving="x"), lake)
    assert plan.date == D25 and plan.start_ns is not None


def test_a_day_without_bins_is_refused_with_the_days_that_have_some(lake):
    with pytest.raises(StreamError) as e:
        plan_replay(version([D24, D25]), ReplayRequest(serving="x", date=D24), lake)
    assert e.value.code == 4410 and "2023-12-25" in e.value.message
    assert json.loads(e.value.message_json())["dates_with_data"] == ["2023-12-25"]
    with pytest.raises(StreamError) as e:
        plan_replay(version([D25], "09:30", "16:00"), ReplayRequest(serving="x"), lake)
    assert e.value.code == 4410 and "no bronze day of ESH4" in e.value.message


def test_a_quiet_window_after_live_events_still_counts(lake):
    # bins are emitted per cell while records remain, even when none falls inside a one-second window
    assert has_live_records(lake, "ESH4", D25, dt.time(18, 4, 59), dt.time(18, 5))
    assert not has_live_records(lake, "ESH4", D25, dt.time(19, 30), None)  # after the day's last record
