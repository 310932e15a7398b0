"""Declarative automation: what makes a landed file flow bronze → silver → gold → datasets → sweeps →
candidate (gate) → serving alias with no request.

`raw_file_sensor` requests bronze; every later layer carries an automation condition that the
`qmachina_automation` sensor (running by default; evaluated by the daemon `dagster dev` starts) evaluates
each tick, so the UI shows per asset why it was or was not requested. A pipeline or experiment YAML with
`automation: false` gets no condition: its assets are materialized on request only.
"""

from __future__ import annotations

import os

import dagster as dg

SENSOR_INTERVAL_ENV = "QMACHINA_SENSOR_INTERVAL_S"


def sensor_interval(default: int = 30) -> int:
    """Seconds between evaluations of `raw_file_sensor` and `qmachina_automation`: `QMACHINA_SENSOR_INTERVAL_S`
    (read when the definitions load), else `default`. Each hop of landed file → bronze → silver → gold waits up
    to one interval, so a test of the real daemon shortens it; 30 s is plenty for files that land daily."""
    raw = os.environ.get(SENSOR_INTERVAL_ENV)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{SENSOR_INTERVAL_ENV}={raw!r}: expected a whole number of seconds >= 1")
    return value

#: Data layers and research assets: a partition is requested when it is newly missing or any of its parents
#: updated, once all parents exist and none is in progress (per session: dynamic keys have no "latest" window).
EAGER = dg.AutomationCondition.eager()

#: The candidate reads every sweep partition: re-evaluate when any of them updates (not waiting for all test
#: days to exist), and not while one of them is still running.
ON_ANY_UPDATE = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("on any sweep update")

#: Publishing: only after the candidate's blocking gate check passed on its latest materialization.
ON_GATE_PASSED = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("when the promotion gate passed")


def condition(base: dg.AutomationCondition, enabled: bool = True) -> dg.AutomationCondition | None:
    """`base`, or none when the spec opted out (`automation: false`)."""
    return base if enabled else None


automation_sensor = dg.AutomationConditionSensorDefinition(
    "qmachina_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval(), run_tags={"qmachina/trigger": "automation"},
    description="Evaluates every asset's automation condition (landed file → ... → serving alias).",
)
