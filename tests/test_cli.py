"""The `qmachina` console script: ingest errors, synth, and the main job (demo) end to end."""

import json
import subprocess
import sys

import dagster as dg
import pytest

from qmachina_assets.cli import main
from qmachina_assets.core.paths import PROJECT_ROOT
from tests.conftest import ESH4_1225, ESM4_0508, sample


def test_ingest_lands_a_real_file(lake, capsys):
    assert main(["ingest", str(sample(ESM4_0508)), "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert "2024-05-08|ESM4" in out
    assert (lake / "raw/databento/future_mbo/ES/2024-05-08" / sample(ESM4_0508).name).is_file()


@pytest.mark.parametrize(
    "rel,needle",
    [("dbn/test_data.definition.dbn", "schema is 'definition'; expected 'mbo'"),
     ("databento-python/XNAS.ITCH/test_data.mbo.dbn.zst", "the instrument lock expects 'GLBX.MDP3'")],
)
def test_ingest_bad_file_exits_2_naming_the_file(lake, capsys, rel, needle):
    assert main(["ingest", str(sample(rel)), "--lake", str(lake)]) == 2
    err = capsys.readouterr().err
    assert str(sample(rel)) in err and needle in err
    assert not (lake / "raw").exists()


def test_console_script_synth(tmp_path):
    exe = PROJECT_ROOT / ".venv/bin/qmachina"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "qmachina_assets.cli"]
    out = tmp_path / "day.dbn.zst"
    proc = subprocess.run([*cmd, "synth", str(out), "--events", "20000", "--seed", "3", "--date", "2024-03-15",
                           "--symbol", "ESM4"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from qmachina_assets.core.ingest import dbn

    header, arr = dbn.load_mbo(out)
    assert len(arr) == 20_000 and header.symbols == ("ESM4",) and header.start_date.isoformat() == "2024-03-15"
    bad = subprocess.run([*cmd, "synth", str(tmp_path / "x.dbn"), "--symbol", "NQH4", "--events", "100"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "NQH4" in bad.stderr


def test_demo_runs_end_to_end_into_the_instance(lake, dagster_home, capsys):
    assert main(["demo", "--records", "60000"]) == 0
    out = capsys.readouterr().out
    for part in ("2024-03-14|ESH4", "2024-03-15|ESH4", "2023-12-25|ESH4", "2023-12-24|ESH4", "2024-05-08|ESM4"):
        assert part in out
    assert "http://127.0.0.1:3000" in out
    days = ("ESH4/2023-12-24", "ESH4/2023-12-25", "ESH4/2024-03-14", "ESH4/2024-03-15", "ESM4/2024-05-08")
    manifests = sorted(p.relative_to(lake).as_posix() for p in lake.glob("bronze/*/*/manifest.json"))
    assert manifests == [f"bronze/{d}/manifest.json" for d in days]
    synth = json.loads((lake / "bronze/ESH4/2024-03-15/manifest.json").read_text())
    assert synth["record_count"] == 60_000 and synth["unknown_cancel"] == 0 and synth["starts_with_snapshot"]
    with dg.DagsterInstance.get() as instance:  # the SQLite instance under DAGSTER_HOME
        records = instance.fetch_materializations(dg.AssetKey("bronze_mbo"), limit=10).records
        assert len(records) == 5
        assert len(instance.fetch_materializations(dg.AssetKey("gold_builtin"), limit=10).records) == 5
        for key in ("dataset_es_rth_1h", "sweep_demo_flow_score_sweep", "promotion_candidates_demo_flow_score_sweep"):
            assert instance.fetch_materializations(dg.AssetKey(key), limit=10).records, key
    gold = sorted(p.relative_to(lake).as_posix() for p in lake.glob("gold/builtin/*/*/gold.parquet")
                  if "@" not in p.parent.name)  # {date} links to the current version {date}@{tag}
    assert gold == [f"gold/builtin/{d}/gold.parquet" for d in days]
    assert "experiment:    demo_flow_score_sweep: 8 parameter sets, trained on 2024-03-14" in out
    assert "promotion:     " in out  # the gate's verdict (promoted, or why not)
    assert len(list(lake.glob("research/results/demo_flow_score_sweep/*.parquet"))) == 1
    assert "http://127.0.0.1:8002/?serving=" in out  # the browser client's URL under `qmachina serve`
    from qmachina_assets.core.registry import Registry

    with Registry() as reg:
        assert reg.resolve("ema_ensemble").runtime_snapshot["model_id"] == "ema_ensemble"
    # the workspace and an owner token the browser logs in with, in a file only its owner reads
    from qmachina_assets.core.control import ControlPlane

    token_file = lake / "control" / "demo_owner.token"
    assert str(token_file) in out and "/login.html" in out and (token_file.stat().st_mode & 0o077) == 0
    token = token_file.read_text().strip()
    assert token not in out
    with ControlPlane() as cp:
        p = cp.authenticate(token)
        assert (p.workspace, p.user, p.role) == ("default", "demo", "owner")
    # idempotent: a second run re-uses what is stored (same bytes, the same valid token), nothing is rewritten
    before = (lake / "bronze/ESH4/2024-03-15/mbo.dbn").stat().st_mtime_ns
    assert main(["demo", "--records", "60000"]) == 0
    assert (lake / "bronze/ESH4/2024-03-15/mbo.dbn").stat().st_mtime_ns == before
    assert token_file.read_text().strip() == token


def test_validate_configs_cli(tmp_path, capsys):
    import shutil

    from qmachina_assets.core.paths import PROJECT_ROOT

    assert main(["validate-configs"]) == 0
    assert "0 errors" in capsys.readouterr().out
    shutil.copytree(PROJECT_ROOT / "configs", tmp_path / "configs")
    bad = tmp_path / "configs" / "serving" / "vp_flow_score.yaml"
    bad.write_text(bad.read_text().replace("cooldown_bins:", "cooldown_bins: 0\nx_cooldown_bins:", 1))
    assert main(["validate-configs", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "vp_flow_score.yaml" in err and "cooldown_bins" in err


def test_online_sim_cli_reports_latency(capsys):
    assert main(["online-sim", str(sample(ESH4_1225)), "--serving", "vp_flow_score", "--start-et", "18:00",
                 "--end-et", "18:01"]) == 0
    out = capsys.readouterr().out
    assert "bins 600" in out and "total" in out and "budget 100 ms/bin" in out
    assert main(["online-sim", "/nonexistent.dbn", "--serving", "vp_flow_score"]) == 2


def test_serving_commands_register_diff_rollback(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    common = ["--lake", lake]
    assert main(["serving", "register", "configs/serving/vp_flow_score.yaml", "--alias", "live", "--reason", "a",
                 *common]) == 0
    assert main(["serving", "register", "configs/serving/vp_derivative.yaml", "--alias", "live", "--reason", "b",
                 *common]) == 0
    out = capsys.readouterr().out
    first, second = (line.split()[1] for line in out.splitlines() if line.startswith("published"))
    assert main(["serving", "diff", first, second, "--json", *common]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["changed"] and "signal" in json.dumps(diff["changed"])
    assert main(["serving", "rollback", "live", "--reason", "bad model", *common]) == 0
    capsys.readouterr()
    assert main(["serving", "show", "live", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["version_id"] == first  # the rollback repointed the alias
    assert main(["serving", "activate", "live", "sv_0000000000000000", "--reason", "x", *common]) == 1
