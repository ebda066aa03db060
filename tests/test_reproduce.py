"""fabricsim reproduce: points, studies, results file, validation properties."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fabricsim.cli import main
from fabricsim.errors import ConfigError
from fabricsim.experiment import Point, point_id, run_point
from fabricsim.reproduce import study_points

SMALL = dict(model="mixtral-8x7b", gpus=64, tp=4, ep=8, pp=2, micro_batch=1, seq_len=1024)


def test_quick_main_study_has_every_combination():
    pts = study_points("main", quick=True)
    assert len(pts) == 2 * 2 * 5
    assert {p.fabric for p in pts} == {"fattree", "oversub", "railopt", "topoopt", "mixnet"}
    full = study_points("main")
    assert len(full) == 5 * 4 * 5 and {p.gpus for p in full} == {1024}
    assert {p.model for p in full} == {"mixtral-8x22b", "mixtral-8x7b", "qwen-moe", "llama-moe",
                                       "deepseek-r1"}


@pytest.mark.parametrize("study", ["delay", "alpha", "scale", "batch"])
def test_sensitivity_studies_build(study):
    assert len(study_points(study)) >= 3 and len(study_points(study, quick=True)) >= 2


def test_bad_study_inputs():
    with pytest.raises(ConfigError, match="fabrics"):
        study_points("main", fabrics=["torus"])
    with pytest.raises(ConfigError, match="models"):
        study_points("main", models=["gpt-9"])
    with pytest.raises(ConfigError, match="fabric"):
        Point(fabric="torus")


def test_more_bandwidth_is_never_slower():
    times = [run_point(Point(fabric="fattree", link_gbps=b, **SMALL))["iteration_time_s"]
             for b in (100, 200, 400)]
    assert times[0] >= times[1] >= times[2]


def test_zero_delay_is_never_slower_than_25_ms():
    rows = [run_point(Point(fabric="mixnet", link_gbps=100, delay_ms=d, **SMALL)) for d in (0, 25)]
    assert rows[0]["iteration_time_s"] <= rows[1]["iteration_time_s"]
    assert rows[1]["ocs_s"] > 0.01 and rows[0]["ocs_s"] < 1e-6  # 10 ps per re-wiring at delay 0


def test_point_ids_are_stable_and_distinct():
    a = Point(**SMALL).to_dict()
    assert point_id(a) == point_id(dict(reversed(list(a.items()))))
    assert point_id(a) != point_id({**a, "link_gbps": 200.0})


def test_cli_quick_subset_writes_results(tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["reproduce", "--quick", "--models", "mixtral-8x7b", "--link-gbps", "100",
               "--out", str(out), "--quiet"])
    assert rc == 0
    df = pd.read_parquet(out / "results.parquet")
    for col in ("model", "link_gbps", "fabric", "iteration_time_s", "network_cost_usd",
                "perf_per_dollar_norm", "iteration_time_norm", "compute_s", "ep_s", "ocs_s"):
        assert col in df.columns
    assert set(df.fabric) == {"fattree", "oversub", "railopt", "topoopt", "mixnet"}
    assert math.isclose(df[df.fabric == "fattree"].perf_per_dollar_norm.iloc[0], 1.0)
    assert df.iteration_time_norm.min() == 1.0
    assert "perf/$" in capsys.readouterr().out


def test_figures(tmp_path):
    pytest.importorskip("matplotlib")
    from fabricsim.reproduce import plot, run_study

    rows = run_study(study_points("main", quick=True, models=["mixtral-8x7b"], link_speeds=[100],
                                  fabrics=["fattree", "mixnet"]))
    paths = plot(rows, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["iteration_time.png", "cost_vs_size.png",
                                                    "pareto.png"]
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in paths)


def test_cli_input_errors_come_before_any_simulation(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--link-gbps", "abc", "--out", str(tmp_path)]) == 2
    assert "--link-gbps" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["reproduce", "--quick", "--out", str(blocker)]) == 2
    assert capsys.readouterr().err.startswith("fabricsim: error: ")
    for bad in (dict(link_gbps=0), dict(link_gbps=-5.0), dict(alpha=9), dict(gpus=0)):
        with pytest.raises(ConfigError):
            Point(**bad)


def test_unpriced_link_speed_still_simulates():
    row = run_point(Point(fabric="fattree", link_gbps=300, **SMALL))
    assert row["iteration_time_s"] > 0 and math.isnan(row["network_cost_usd"])
