"""``fabricsim reproduce`` as a command: what it prints and writes (results, figures), unpriced
link speeds, its options, and bad input. Runs are the smallest that show each point (--quick,
one model, few fabrics); the main run is shared by the tests of this module."""

from __future__ import annotations

import contextlib
import io
import os

import pandas as pd
import pytest

from fabricsim.cli import main
from fabricsim.reproduce import FIGURES

QUICK = ["reproduce", "--quick"]


def _run(argv):
    """``fabricsim *argv``: (exit status, stdout, stderr); stderr is not a terminal here."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """Qwen-MoE on three fabrics at a priced (100) and an unpriced (300) link speed."""
    out = tmp_path_factory.mktemp("reproduce") / "main"
    rc, stdout, stderr = _run(QUICK + ["--models", "qwen-moe", "--link-gbps", "100,300",
                                       "--fabrics", "fattree,railopt,mixnet", "--out", str(out)])
    df = pd.read_parquet(out / "results.parquet") if rc == 0 else None
    return dict(rc=rc, out=out, stdout=stdout, stderr=stderr, df=df)


def _figures_written(out, study, stdout):
    names = FIGURES[study]
    assert sorted(os.listdir(out)) == sorted(["results.parquet", *names])
    for name in names:
        assert (out / name).stat().st_size > 5000, name  # a PNG with something drawn
    line = next(ln for ln in stdout.splitlines() if ln.startswith("figures"))
    assert line.split(None, 1)[1].split(", ") == [str(out / n) for n in names]


def test_main_run_writes_results_and_figures(main_run):
    assert main_run["rc"] == 0, main_run["stderr"]
    _figures_written(main_run["out"], "main", main_run["stdout"])
    df = main_run["df"]
    assert len(df) == 6 and set(df.fabric) == {"fattree", "railopt", "mixnet"}
    for col in ("model", "link_gbps", "fabric", "iteration_time_s", "network_cost_usd",
                "perf_per_dollar_norm", "iteration_time_norm", "compute_s", "ep_s", "ocs_s",
                "engine", "mode", "gating", "gpu_profile"):
        assert col in df.columns
    assert df.iteration_time_norm.min() == 1.0
    assert "perf/$" in main_run["stdout"]
    assert f"results      {main_run['out']}/results.parquet (6 rows" in main_run["stdout"]


def test_unpriced_link_speed_gives_nan_cost(main_run):
    """300 Gbps has no prices: the run still exits 0; its rows' cost and perf/$ are NaN, the
    100 Gbps rows are normalized to the fat-tree."""
    assert main_run["rc"] == 0
    df = main_run["df"]
    at300, at100 = df[df.link_gbps == 300], df[df.link_gbps == 100]
    assert len(at300) == 3 and (at300.iteration_time_s > 0).all()
    assert at300.network_cost_usd.isna().all() and at300.perf_per_dollar_norm.isna().all()
    assert not at100.network_cost_usd.isna().any()
    ft = at100[at100.fabric == "fattree"].iloc[0]
    mx = at100[at100.fabric == "mixnet"].iloc[0]
    assert ft.perf_per_dollar_norm == 1.0
    assert mx.perf_per_dollar_norm == pytest.approx(
        ft.iteration_time_s * ft.network_cost_usd / (mx.iteration_time_s * mx.network_cost_usd))
    assert " n/a" in main_run["stdout"]  # the table prints NaN as n/a


def test_progress_in_a_log_is_one_plain_line_per_point(main_run):
    lines = main_run["stderr"].splitlines()
    assert "\r" not in main_run["stderr"] and len(lines) == 6
    assert [ln.split(" points,")[0] for ln in lines] == [f"  {i}/6" for i in range(1, 7)]


def test_workers_2_gives_the_same_iteration_times(main_run, tmp_path):
    out = tmp_path / "w2"
    rc, _, err = _run(QUICK + ["--models", "qwen-moe", "--link-gbps", "100", "--fabrics",
                               "fattree,mixnet", "--workers", "2", "--out", str(out), "--quiet"])
    assert rc == 0, err
    assert err == ""  # --quiet
    two = pd.read_parquet(out / "results.parquet")
    one = main_run["df"]
    one = one[(one.link_gbps == 100) & one.fabric.isin(["fattree", "mixnet"])]
    assert list(two.fabric) == list(one.fabric) == ["fattree", "mixnet"]
    assert list(two.iteration_time_s) == list(one.iteration_time_s)


def test_delay_study_writes_its_figure(tmp_path):
    out = tmp_path / "delay"
    rc, stdout, err = _run(QUICK + ["--study", "delay", "--models", "qwen-moe", "--out", str(out),
                                    "--quiet"])
    assert rc == 0, err
    _figures_written(out, "delay", stdout)
    df = pd.read_parquet(out / "results.parquet")
    assert list(df.fabric) == ["fattree"] + ["mixnet"] * 6
    assert sorted(df[df.fabric == "mixnet"].delay_ms) == [0.001, 1, 25, 100, 1000, 10_000]


def test_failures_study_runs_every_case(tmp_path):
    out = tmp_path / "failures"
    rc, stdout, err = _run(QUICK + ["--study", "failures", "--out", str(out), "--quiet"])
    assert rc == 0, err
    _figures_written(out, "failures", stdout)
    df = pd.read_parquet(out / "results.parquet")
    assert list(df.fabric) == ["fattree"] + ["mixnet"] * 5
    assert list(df.failures) == ["", "", "nic:0:eps", "nic:0:ocs", "gpu:0", "server:0"]
    assert (df.iteration_time_s > 0).all() and not df.perf_per_dollar_norm.isna().any()


@pytest.mark.parametrize("flag, value, column, model, extra", [
    # the packet engine is slow: one point, each collective once (isolated), jumbo frames
    ("--engine", "packet", "engine", "mixtral-8x7b", ["--mode", "isolated", "--packet-size", "9000"]),
    ("--mode", "isolated", "mode", "qwen-moe", []),
    ("--gating", "synthetic", "gating", "qwen-moe", []),
    ("--gpu-profile", "h100", "gpu_profile", "qwen-moe", []),
    ("--profile", "physical", "profile", "qwen-moe", []),
    ("--compute-pacing", "load", "compute_pacing", "qwen-moe", []),
])
def test_options_are_recorded(tmp_path, flag, value, column, model, extra):
    out = tmp_path / "o"
    rc, _, err = _run(QUICK + ["--models", model, "--link-gbps", "400", "--fabrics", "fattree",
                               flag, value, *extra, "--out", str(out), "--quiet"])
    assert rc == 0, err
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 1 and df[column].iloc[0] == value and df.iteration_time_s.iloc[0] > 0


@pytest.mark.parametrize("args, option", [
    (["--fabrics", ""], "--fabrics"),
    (["--fabrics", "fattree,"], "--fabrics"),
    (["--fabrics", "fattree,torus"], "--fabrics"),
    (["--study", "delay", "--fabrics", "mixnet"], "--fabrics"),
    (["--models", ""], "--models"),
    (["--models", ",qwen-moe"], "--models"),
    (["--models", "gpt-9"], "--models"),
    (["--link-gbps", ""], "--link-gbps"),
    (["--link-gbps", "100,,400"], "--link-gbps"),
    (["--link-gbps", "abc"], "--link-gbps"),
    (["--link-gbps", "0"], "--link-gbps"),
    (["--link-gbps", "nan"], "--link-gbps"),
    (["--workers", "0"], "--workers"),
    (["--gpu-profile", "z80"], "--gpu-profile"),
])
def test_bad_input_is_one_line_and_leaves_no_folder(tmp_path, args, option):
    out = tmp_path / "new" / "out"
    rc, stdout, err = _run(QUICK + args + ["--out", str(out)])
    assert rc == 2 and stdout == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"fabricsim: error: {option}: "), err
    assert not (tmp_path / "new").exists()


def test_out_that_is_a_file_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        rc, _, err = _run(QUICK + ["--out", str(out)])
        assert rc == 2 and err.startswith("fabricsim: error: --out: must be a folder"), err
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_a_run_that_fails_before_writing_removes_the_folder_it_created(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fabricsim.reproduce.run_study", interrupted)
    rc, _, err = _run(QUICK + ["--out", str(tmp_path / "a" / "b"), "--quiet"])
    assert rc == 130 and err == "fabricsim: interrupted\n"
    assert os.listdir(tmp_path) == []
    (tmp_path / "kept").mkdir()  # a folder that was there stays
    rc, _, _ = _run(QUICK + ["--out", str(tmp_path / "kept"), "--quiet"])
    assert rc == 130 and os.listdir(tmp_path) == ["kept"]

