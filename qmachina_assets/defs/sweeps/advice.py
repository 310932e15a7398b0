"""Decision support on the sweep asset (core/research/advisor.py): after each fold, the experiment's sensitivity
plot (every swept axis and the heatmap of the two most sensitive), its robustness flags and the suggested
follow-up sweeps, as materialization metadata. The same figures are served at `/v1/experiments/{name}/...`."""

import base64
from pathlib import Path

import dagster as dg

from qmachina_assets.core.research import advisor


def advice_metadata(lake: Path, experiment: str, configs_dir: Path, log: dg.DagsterLogManager | None = None,
                    ) -> dict[str, dg.MetadataValue]:
    """Metadata entries; a failure of the advice is reported in `advice_error`, never fails the sweep (its
    rows are already in the results store)."""
    try:
        # no replay here: it would refit every fold's selection on each partition (quadratic over a backfill);
        # the REST resource replays, and the flags say which figures came from the rows' counts
        adv = advisor.advise(lake, experiment, configs_dir=configs_dir, replay=False)
        if adv is None:
            return {}
        png = base64.b64encode(advisor.sensitivity_png(adv.sensitivity, adv.heatmap)).decode()
        flags, suggestions = advisor.advice_markdown(adv)
    except Exception as exc:  # the advice is secondary to the sweep that just landed
        if log is not None:
            log.warning(f"advice for {experiment} failed: {type(exc).__name__}: {exc}")
        return {"advice_error": dg.MetadataValue.text(f"{type(exc).__name__}: {exc}")}
    fired = [f for f in adv.robustness.flags if f.fired]
    out = {
        "sensitivity": dg.MetadataValue.md(f"![sensitivity of {adv.metric}](data:image/png;base64,{png})"),
        "robustness_flags": dg.MetadataValue.md(flags),
        "flags_fired": dg.MetadataValue.int(len(fired)),
        "suggested_sweeps": dg.MetadataValue.md(suggestions),
        "sets_tried": dg.MetadataValue.int(adv.robustness.sets_tried),
    }
    dsr = next((f.figure for f in adv.robustness.flags if f.name == "deflated_sharpe" and f.figure is not None), None)
    if dsr is not None:
        out["deflated_sharpe"] = dg.MetadataValue.float(dsr)
    return out
