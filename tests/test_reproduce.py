"""fabricsim reproduce: points, studies, normalization, results written as points finish,
figures, validation properties. The command's runs are in test_reproduce_cli.py."""

from __future__ import annotations

import io
import math
import os

import pandas as pd
import pytest

from fabricsim.errors import ConfigError
from fabricsim.experiment import Point, _cost, point_id, run_point
from fabricsim.reproduce import (FIGURES, STUDIES, _normalize, _progress, plot, run_study,
                                 study_points)

SMALL = dict(model="mixtral-8x7b", gpus=64, tp=4, ep=8, pp=2, micro_batch=1, seq_len=1024, micro_batches=2)


def test_quick_main_study_has_every_combination():
    pts = study_points("main", quick=True)
    assert len(pts) == 2 * 2 * 5
    assert {p.fabric for p in pts} == {"fattree", "oversub", "railopt", "topoopt", "mixnet"}
    full = study_points("main")
    assert len(full) == 5 * 4 * 5 and {p.gpus for p in full} == {1024}
    assert {p.model for p in full} == {"mixtral-8x22b", "mixtral-8x7b", "qwen-moe", "llama-moe",
                                       "deepseek-r1"}


@pytest.mark.parametrize("study", ["delay", "alpha", "scale", "batch", "failures"])
def test_sensitivity_studies_build(study):
    assert len(study_points(study)) >= 3 and len(study_points(study, quick=True)) >= 2
    assert {(p.model, p.link_gbps) for p in study_points(study)} == {("mixtral-8x22b", 400.0)}


def test_sensitivity_studies_take_models_and_link_speeds():
    pts = study_points("delay", quick=True, models=["qwen-moe", "mixtral-8x7b"],
                       link_speeds=[100, 300])
    assert len(pts) == 2 * 2 * 7
    assert {(p.model, p.link_gbps) for p in pts} == {(m, b) for m in ("qwen-moe", "mixtral-8x7b")
                                                     for b in (100.0, 300.0)}
    assert {p.tp for p in pts if p.model == "qwen-moe"} == {1}  # its Table 1 configuration
    assert {p.fabric for p in study_points("scale", quick=True, fabrics=["railopt"])} == {"railopt"}
    assert {p.fabric for p in study_points("batch", quick=True, fabrics=["topoopt"])} == {"topoopt"}


def test_bad_study_inputs():
    with pytest.raises(ConfigError, match="fabrics"):
        study_points("main", fabrics=["torus"])
    with pytest.raises(ConfigError, match="models"):
        study_points("main", models=["gpt-9"])
    with pytest.raises(ConfigError, match="fabric"):
        Point(fabric="torus")
    with pytest.raises(ConfigError, match="^fabrics: apply to the main, scale and batch"):
        study_points("delay", fabrics=["mixnet"])


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


def test_bad_points():
    for bad in (dict(link_gbps=0), dict(link_gbps=-5.0), dict(alpha=9), dict(gpus=0)):
        with pytest.raises(ConfigError):
            Point(**bad)


def test_unpriced_link_speed_still_simulates():
    row = run_point(Point(fabric="fattree", link_gbps=300, **SMALL))
    assert row["iteration_time_s"] > 0 and math.isnan(row["network_cost_usd"])


def _row(model, fabric, link_gbps, iteration_time_s, network_cost_usd, gpus=128, micro_batch=8):
    return dict(model=model, fabric=fabric, link_gbps=float(link_gbps), gpus=gpus,
                micro_batch=micro_batch, iteration_time_s=iteration_time_s,
                network_cost_usd=network_cost_usd)


def test_normalize_against_hand_computed_values():
    """perf_per_dollar_norm = ((1 / t) / cost) / ((1 / t_ft) / cost_ft) at the same link speed;
    iteration_time_norm = t / the fastest t of the model (same GPUs and micro-batch)."""
    nan = math.nan
    rows = [_row("m", "fattree", 100, 10.0, 1000.0), _row("m", "mixnet", 100, 12.0, 500.0),
            _row("m", "topoopt", 100, 8.0, 400.0),
            _row("m", "fattree", 400, 5.0, 3000.0), _row("m", "mixnet", 400, 4.0, 1500.0),
            _row("m", "topoopt", 400, 6.0, 2000.0),
            _row("m", "fattree", 300, 7.0, nan), _row("m", "mixnet", 300, 7.5, nan),  # no prices
            _row("m", "mixnet", 200, 9.0, 800.0),  # no fat-tree row at 200
            _row("n", "fattree", 100, 1.0, 1000.0),  # another model: its own fastest
            _row("m", "railopt", 100, 20.0, 1000.0, micro_batch=16)]  # another micro-batch
    _normalize(rows)
    norm = {(r["model"], r["fabric"], r["link_gbps"], r["micro_batch"]): r for r in rows}

    def check(key, t_norm, ppd):
        r = norm[key]
        assert r["iteration_time_norm"] == pytest.approx(t_norm, rel=1e-12)
        if math.isnan(ppd):
            assert math.isnan(r["perf_per_dollar_norm"])
        else:
            assert r["perf_per_dollar_norm"] == pytest.approx(ppd, rel=1e-12)

    # the fastest "m" row (mb 8) is mixnet at 400 Gbps: 4 s
    check(("m", "mixnet", 100.0, 8), 12 / 4, (1 / 12 / 500) / (1 / 10 / 1000))    # 1.6667
    check(("m", "topoopt", 100.0, 8), 8 / 4, (1 / 8 / 400) / (1 / 10 / 1000))     # 3.125
    check(("m", "mixnet", 400.0, 8), 1.0, (1 / 4 / 1500) / (1 / 5 / 3000))        # 2.5
    check(("m", "topoopt", 400.0, 8), 6 / 4, (1 / 6 / 2000) / (1 / 5 / 3000))     # 1.25
    check(("m", "fattree", 100.0, 8), 10 / 4, 1.0)
    check(("m", "fattree", 400.0, 8), 5 / 4, 1.0)
    check(("m", "mixnet", 300.0, 8), 7.5 / 4, nan)
    check(("m", "fattree", 300.0, 8), 7 / 4, nan)
    check(("m", "mixnet", 200.0, 8), 9 / 4, nan)
    check(("n", "fattree", 100.0, 8), 1.0, 1.0)
    check(("m", "railopt", 100.0, 16), 1.0, nan)  # no fat-tree row with micro-batch 16
    assert norm[("m", "topoopt", 100.0, 8)]["perf_per_dollar_norm"] == pytest.approx(3.125)


TINY = dict(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, micro_batch=1, seq_len=64,
            link_gbps=100.0, micro_batches=1)


def test_results_are_written_as_points_finish(tmp_path):
    """A run stopped after two of three points leaves results.parquet with those two rows,
    normalized among themselves; a finished run leaves every row."""
    pts = [Point(fabric=f, **TINY) for f in ("fattree", "oversub", "mixnet")]
    seen = []

    def stop_after_two(done, total, row):
        seen.append(len(pd.read_parquet(tmp_path / "results.parquet")))
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(pts, progress=stop_after_two, out_dir=str(tmp_path))
    assert seen == [1, 2]
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert list(df.fabric) == ["fattree", "oversub"]
    ft, ov = df.iloc[0], df.iloc[1]
    assert ft.perf_per_dollar_norm == 1.0 and ov.perf_per_dollar_norm == pytest.approx(
        ft.iteration_time_s * ft.network_cost_usd / (ov.iteration_time_s * ov.network_cost_usd))
    assert sorted(os.listdir(tmp_path)) == ["results.parquet"]  # no temporary left

    rows = run_study(pts, out_dir=str(tmp_path))
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert list(df.fabric) == ["fattree", "oversub", "mixnet"]
    assert list(df.iteration_time_s) == [r["iteration_time_s"] for r in rows]
    assert list(df.perf_per_dollar_norm) == [r["perf_per_dollar_norm"] for r in rows]


def _fake_rows(study):
    """Result rows for the quick points of ``study`` without simulating: made-up iteration times
    (MixNet's grow with the delay; its failures cost 1% each), the real network costs."""
    rows = []
    for i, p in enumerate(study_points(study, quick=True)):
        r = p.to_dict()
        t = 10.0 + (i % 5) * 0.5 + (0.002 * p.delay_ms if p.fabric == "mixnet" else 0.0)
        r.update(iteration_time_s=t * (1 + 0.01 * len(p.failures)), network_cost_usd=_cost(p),
                 ep_s=1.0, ocs_s=0.1)
        rows.append(r)
    _normalize(rows)
    return rows


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_draws_its_figures(tmp_path, study):
    paths = plot(_fake_rows(study), str(tmp_path), study)
    assert [os.path.basename(p) for p in paths] == list(FIGURES[study])
    if study != "fidelity":  # its rows mix modelling readings: no pareto of them
        assert FIGURES[study][-1] == "pareto.png" and len(FIGURES[study]) >= 2
    assert sorted(os.listdir(tmp_path)) == sorted(FIGURES[study])  # no temporary left
    assert all(os.path.getsize(p) > 5000 for p in paths)  # a PNG with something drawn


def test_figures_leave_out_unpriced_speeds(tmp_path):
    rows = _fake_rows("main")
    for r in rows:  # no speed has prices: every perf/$ panel says so instead of failing
        r["network_cost_usd"] = math.nan
    _normalize(rows)
    assert all(math.isnan(r["perf_per_dollar_norm"]) for r in rows)
    paths = plot(rows, str(tmp_path), "main")
    assert all(os.path.getsize(p) > 5000 for p in paths)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_updates_a_line_on_a_terminal_and_writes_lines_to_a_log(monkeypatch):
    pts = [Point(fabric=f, **TINY) for f in ("fattree", "mixnet")]
    rows = [dict(p.to_dict(), iteration_time_s=1.5) for p in pts]
    for stream in (_Terminal(), io.StringIO()):
        monkeypatch.setattr("sys.stderr", stream)
        progress, _, close = _progress(pts, quiet=False)
        for i, r in enumerate(rows):
            progress(i + 1, len(rows), r)
        close()
        text = stream.getvalue()
        if stream.isatty():  # one line, updated in place, ended once
            assert text.count("\r") == 2 and text.count("\n") == 1 and text.endswith("\n")
        else:  # a log: one plain line per finished point
            lines = text.splitlines()
            assert "\r" not in text and len(lines) == 2
            assert lines[0].startswith("  1/2 points, mixtral-8x7b fattree 100 Gbps: 1.500 s; ETA")
            assert lines[1].startswith("  2/2 points, mixtral-8x7b mixnet 100 Gbps: 1.500 s; ETA")
    assert _progress(pts, quiet=True)[:2] == (None, None)


def test_progress_within_a_point_is_throttled_and_names_the_running_point(monkeypatch):
    pts = [Point(fabric=f, **TINY) for f in ("fattree", "mixnet")]
    clock = [100.0]
    monkeypatch.setattr("fabricsim.reproduce.time.monotonic", lambda: clock[0])
    for stream, step in ((_Terminal(), 1.0), (io.StringIO(), 60.0)):
        monkeypatch.setattr("sys.stderr", stream)
        progress, within, close = _progress(pts, quiet=False)
        within(5, 40, 10**12)  # too soon after the start: nothing
        assert stream.getvalue() == ""
        clock[0] += step
        within(7, 40, 2 * 10**12)
        progress(1, 2, dict(pts[0].to_dict(), iteration_time_s=1.5))
        clock[0] += step
        within(3, 40, 5 * 10**11)
        text = stream.getvalue()
        assert "point 1/2 (mixtral-8x7b fattree): 7/40 tasks, 2.000 s simulated" in text
        assert "point 2/2 (mixtral-8x7b mixnet): 3/40 tasks, 0.500 s simulated" in text
        assert ("\r" in text) == stream.isatty()


def test_run_study_reports_progress_within_each_point_on_one_worker():
    calls = []
    pts = [Point(fabric="fattree", **TINY)]
    run_study(pts, point_progress=lambda done, n, t: calls.append((done, n, t)))
    assert calls and all(0 <= d <= n for d, n, _ in calls)
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)  # tasks only finish
    assert calls[-1][0] == calls[-1][1]  # the last call: every task done
