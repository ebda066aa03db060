"""The ``fabricsim`` command line: run, trace show, trace convert, and one-line errors (exit 2)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fabricsim
from fabricsim.cli import main
from fabricsim.traces import read_flow_trace, read_link_trace

SMALL = """\
[fabric]
builder = "fat_tree"
hosts = 16
gpus_per_server = 4
link_gbps = 100

[traffic]
pattern = "all_to_all"
group_size = 8
size_min_bytes = 10000
size_max_bytes = 100000
seed = 2

[run]
sample_us = 1
"""

FABRIC = '[fabric]\nhosts = 16\ngpus_per_server = 4\n'


def run_main(argv):
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse (--version, --help, usage errors)
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_run")
    scen = d / "small16.toml"
    scen.write_text(SMALL)
    out = d / "out"
    code, stdout, stderr = run_main(["run", str(scen), "--out", str(out), "--quiet"])
    return dict(dir=d, scenario=scen, out=out, code=code, stdout=stdout, stderr=stderr)


# ------------------------------------------------------------------------------------------------
# --version, --help
# ------------------------------------------------------------------------------------------------

def test_version():
    code, out, _ = run_main(["--version"])
    assert code == 0
    from fabricsim._jit import CACHE_DIR

    assert out.splitlines() == [f"fabricsim {fabricsim.__version__}",
                                f"Numba cache: {CACHE_DIR} (set NUMBA_CACHE_DIR to choose it)"]


def test_help_lists_commands():
    code, out, _ = run_main(["--help"])
    assert code == 0
    assert "run" in out and "trace" in out and "--version" in out
    code, out, _ = run_main(["run", "--help"])
    assert code == 0 and "--out" in out and "--engine" in out and "--quiet" in out
    code, out, _ = run_main(["trace", "--help"])
    assert code == 0 and "show" in out and "convert" in out


def test_no_command_prints_help_and_exits_2():
    code, out, _ = run_main([])
    assert code == 2 and "run" in out and "trace" in out
    code, out, _ = run_main(["trace"])
    assert code == 2 and "show" in out


def test_console_script_and_module_smoke():
    exe = shutil.which("fabricsim") or os.path.join(os.path.dirname(sys.executable), "fabricsim")
    assert os.path.exists(exe), "the fabricsim console script is not installed"
    for cmd in ([exe, "--version"], [sys.executable, "-m", "fabricsim", "--version"]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines()[0] == f"fabricsim {fabricsim.__version__}"


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------

def test_run_prints_summary(small_run):
    assert small_run["code"] == 0, small_run["stderr"]
    out = small_run["stdout"]
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    for key in ("scenario", "fabric", "traffic", "engine", "completion", "throughput", "FCT", "traces"):
        assert key in lines, out
    assert "16 gpu hosts" in lines["fabric"]
    assert "all_to_all: 112 flows" in lines["traffic"]  # 16 * (8 - 1)
    assert "[" not in lines["completion"]  # no "unfinished" note
    assert "Gbps" in lines["throughput"] and "16 senders" in lines["throughput"]
    assert "p50" in lines["FCT"] and "p99" in lines["FCT"]
    assert small_run["stderr"] == ""  # --quiet, and nothing went wrong


def test_run_writes_traces(small_run):
    out = small_run["out"]
    assert sorted(os.listdir(out)) == ["flows.arrows", "links.h5", "summary.json"]

    doc = json.loads((out / "summary.json").read_text())
    scenario = fabricsim.load_scenario(small_run["scenario"])
    resolved = doc["scenario"]
    assert {k: resolved[k] for k in ("name", "fabric", "traffic", "run")} == scenario.to_dict()
    assert resolved["name"] == "small16"
    assert resolved["fabric_resolved"]["k"] == 4
    assert doc["schema_version"] >= 1
    s = doc["summary"]
    assert s["flows"] == s["flows_finished"] == 112 and s["status"] == "done"
    assert doc["files"] == {"flows": "flows.arrows", "links": "links.h5"}

    table = read_flow_trace(out / "flows.arrows")
    assert table.num_rows == 112
    assert sorted(table.column("flow_id").to_pylist()) == list(range(112))
    finish = table.column("finish_ps").to_numpy()
    assert finish.max() == s["completion_ps"]
    assert int(table.column("size_bytes").to_numpy().sum()) == s["bytes"]
    meta = table.schema.metadata
    assert json.loads(meta[b"fabricsim.scenario"])["traffic"] == scenario.to_dict()["traffic"]

    links = read_link_trace(out / "links.h5")
    assert links["utilization"].shape == (links["capacity_bps"].size, links["time_ps"].size)
    assert links["time_ps"].size >= 2
    assert links["scenario"]["run"]["sample_us"] == 1.0


def test_trace_show(small_run):
    code, out, err = run_main(["trace", "show", str(small_run["out"] / "flows.arrows")])
    assert code == 0, err
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert lines["flows"].split()[-1] == "112"
    assert lines["finished"].split()[-1] == "112"
    assert "schema" in lines and "scenario" in lines and "small16" in lines["scenario"]
    assert "FCT" in lines and "p99" in lines["FCT"]
    assert "path" in lines  # path kinds


def test_trace_convert_parquet(small_run, tmp_path):
    src = small_run["out"] / "flows.arrows"
    target = tmp_path / "flows.parquet"
    code, out, err = run_main(["trace", "convert", str(src), "--to", "parquet", "--out", str(target)])
    assert code == 0, err
    assert out.strip() == str(target)
    assert sorted(os.listdir(tmp_path)) == ["flows.parquet"]  # no temporary left behind
    df = pd.read_parquet(target)
    ref = read_flow_trace(src).to_pandas()
    assert len(df) == 112
    pd.testing.assert_frame_equal(df.reset_index(drop=True), ref.reset_index(drop=True),
                                  check_categorical=False)
    assert b"fabricsim.schema_version" in pq.read_schema(target).metadata

    # default output beside the input
    copy = tmp_path / "copy" / "run.arrows"
    copy.parent.mkdir()
    shutil.copy(src, copy)
    code, out, err = run_main(["trace", "convert", str(copy), "--to", "parquet"])
    assert code == 0, err
    assert out.strip() == str(copy.with_suffix(".parquet"))
    assert len(pd.read_parquet(copy.with_suffix(".parquet"))) == 112


def test_run_default_out_dir_and_engine_override(tmp_path, monkeypatch):
    (tmp_path / "tiny.toml").write_text(FABRIC + '[traffic]\nsize_bytes = 5000\n[run]\nsample_us = 0\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["run", "tiny.toml", "--engine", "flow"])
    assert code == 0, err
    assert "permutation: 16 flows" in out
    d = tmp_path / "fabricsim-out" / "tiny"
    assert sorted(os.listdir(d)) == ["flows.arrows", "summary.json"]  # sample_us = 0: no links.h5
    assert json.loads((d / "summary.json").read_text())["files"]["links"] is None


def test_run_bad_engine_choice_is_usage_error():
    code, _, err = run_main(["run", "x.toml", "--engine", "warp"])
    assert code == 2 and "invalid choice" in err


@pytest.mark.parametrize("argv, what", [
    (["cost", "--fabric", "mixnet", "--gpus", "1024", "--link-gbps", "400", "--alpha", "x"],
     "argument --alpha: invalid int value: 'x'"),
    (["ocs", "allocate", "--demand", "d.csv", "--alpha", "six"], "argument --alpha: invalid int value"),
    (["run"], "the following arguments are required: scenario"),
    (["reproduce", "--study", "nope"], "argument --study: invalid choice: 'nope'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_option_errors_are_one_line(argv, what):
    """argparse's own errors follow the CLI's contract too: one line, exit 2, no usage dump."""
    code, out, err = run_main(argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("fabricsim: error: ") and what in err
    assert "--help" in err


# ------------------------------------------------------------------------------------------------
# matrix traffic from files
# ------------------------------------------------------------------------------------------------

def _matrix(hosts=16):
    r = np.random.default_rng(4)
    m = r.integers(1000, 50000, size=(hosts, hosts)).astype(np.int64)
    m[r.random((hosts, hosts)) < 0.7] = 0
    np.fill_diagonal(m, 777)
    return m


@pytest.mark.parametrize("ext", [".npy", ".csv", ".parquet"])
def test_run_matrix_files(tmp_path, monkeypatch, ext):
    m = _matrix()
    sub = tmp_path / "data"
    sub.mkdir()
    path = sub / f"tm{ext}"
    if ext == ".npy":
        np.save(path, m)
    elif ext == ".csv":
        np.savetxt(path, m, delimiter=",", fmt="%d")
    else:
        pq.write_table(pa.table({f"dst{j}": m[:, j] for j in range(16)}), path)
    scen = tmp_path / "mx.toml"
    scen.write_text(FABRIC + f'[traffic]\npattern = "matrix"\nfile = "data/tm{ext}"\n[run]\nsample_us = 0\n')
    monkeypatch.chdir(sub)  # the file is relative to the scenario, not to the working directory
    code, out, err = run_main(["run", str(scen), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 0, err
    es, ed = np.nonzero((m > 0) & ~np.eye(16, dtype=bool))
    assert f"matrix: {es.size} flows" in out
    t = read_flow_trace(tmp_path / "o" / "flows.arrows").to_pandas().sort_values("flow_id")
    np.testing.assert_array_equal(t["flow_id"], np.arange(es.size))
    np.testing.assert_array_equal(t["src"], es)
    np.testing.assert_array_equal(t["dst"], ed)
    np.testing.assert_array_equal(t["size_bytes"], m[es, ed])
    assert (t["finish_ps"] > 0).all()


# ------------------------------------------------------------------------------------------------
# bad input: one line on stderr naming the field, exit 2, no traceback
# ------------------------------------------------------------------------------------------------

BAD = {
    "pattern": (FABRIC + '[traffic]\npattern = "ring"\nsize_bytes = 1\n', "traffic.pattern"),
    "builder": ('[fabric]\nbuilder = "torus"\nhosts = 16\n[traffic]\nsize_bytes = 1\n', "fabric.builder"),
    "negative_size": (FABRIC + "[traffic]\nsize_bytes = -5\n", "traffic.size_bytes"),
    "odd_k": (FABRIC + "k = 7\n[traffic]\nsize_bytes = 1\n", "fabric.k"),
    "too_many_hosts": ("[fabric]\nhosts = 200\nk = 8\n[traffic]\nsize_bytes = 1\n", "fabric.hosts"),
    "missing_matrix": (FABRIC + '[traffic]\npattern = "matrix"\nfile = "nope.npy"\n', "traffic.file"),
    "matrix_shape": (FABRIC + '[traffic]\npattern = "matrix"\nfile = "m3.npy"\n', "traffic.file"),
    "key_fabric": (FABRIC + "colour = 1\n[traffic]\nsize_bytes = 1\n", "fabric.colour"),
    "key_traffic": (FABRIC + "[traffic]\nsize_bytes = 1\ncolour = 1\n", "traffic.colour"),
    "key_run": (FABRIC + "[traffic]\nsize_bytes = 1\n[run]\ncolour = 1\n", "run.colour"),
    "table": (FABRIC + "[traffic]\nsize_bytes = 1\n[sweep]\nx = 1\n", "sweep"),
    "toml_syntax": ("[fabric\nhosts = 16\n", "scenario"),
    "toml_value": (FABRIC + "[traffic]\nsize_bytes = \n", "scenario"),
    "type": (FABRIC + 'link_gbps = "fast"\n[traffic]\nsize_bytes = 1\n', "fabric.link_gbps"),
    "group": (FABRIC + '[traffic]\npattern = "all_to_all"\ngroup_size = 3\nsize_bytes = 1\n',
              "traffic.group_size"),
    "fan_in": (FABRIC + '[traffic]\npattern = "incast"\nfan_in = 16\nsize_bytes = 1\n', "traffic.fan_in"),
    "engine": (FABRIC + '[traffic]\nsize_bytes = 1\n[run]\nengine = "warp"\n', "run.engine"),
    "hosts_vs_gpus": ("[fabric]\nhosts = 12\n[traffic]\nsize_bytes = 1\n", "fabric.hosts"),
}


def assert_one_error_line(code, out, err, field):
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fabricsim: error: "), err
    assert lines[0].startswith(f"fabricsim: error: {field}"), err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(tmp_path, case):
    text, field = BAD[case]
    np.save(tmp_path / "m3.npy", np.ones((3, 3)))
    scen = tmp_path / "bad.toml"
    scen.write_text(text)
    code, out, err = run_main(["run", str(scen), "--out", str(tmp_path / "out"), "--quiet"])
    assert_one_error_line(code, out, err, field)
    assert not (tmp_path / "out" / "summary.json").exists()
    if case == "odd_k":
        assert err.strip() == "fabricsim: error: fabric.k: must be an even integer >= 4, got 7"
    if case == "matrix_shape":
        assert "16 x 16" in err and "(3, 3)" in err


def test_missing_scenario_file(tmp_path):
    code, out, err = run_main(["run", str(tmp_path / "nope.toml")])
    assert_one_error_line(code, out, err, "scenario")
    assert "nope.toml" in err


def test_scenario_not_utf8(tmp_path):
    scen = tmp_path / "latin1.toml"
    scen.write_bytes(b"[fabric]\nhosts = 16 # caf\xe9\n[traffic]\nsize_bytes = 1\n")
    assert_one_error_line(*run_main(["run", str(scen)]), "scenario")


def test_out_dir_is_a_file(tmp_path):
    scen = tmp_path / "ok.toml"
    scen.write_text(FABRIC + "[traffic]\nsize_bytes = 1\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    code, out, err = run_main(["run", str(scen), "--out", str(blocker), "--quiet"])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("fabricsim: error: ")
    assert "blocker" in err


@pytest.mark.parametrize("content", [b"", b"garbage, not arrow\n", "truncated"])
def test_trace_bad_files(small_run, tmp_path, content):
    path = tmp_path / "bad.arrows"
    if content == "truncated":  # cut inside the schema message
        content = (small_run["out"] / "flows.arrows").read_bytes()[:100]
    path.write_bytes(content)
    for argv in (["trace", "show", str(path)], ["trace", "convert", str(path), "--to", "parquet"]):
        assert_one_error_line(*run_main(argv), "trace")
    assert not (tmp_path / "bad.parquet").exists()


def test_trace_missing_file(tmp_path):
    for argv in (["trace", "show", str(tmp_path / "x.arrows")],
                 ["trace", "convert", str(tmp_path / "x.arrows"), "--to", "parquet"]):
        code, out, err = run_main(argv)
        assert_one_error_line(code, out, err, "trace")
        assert "not found" in err


@pytest.mark.parametrize("builder, extra", [
    ("mixnet", 'alpha = 2\nregion_servers = 2\ncircuits = "demand"\nocs_variant = "minmax"\n'),
    ("mixnet", "alpha = 3\n"),
    ("topoopt", 'degree = 4\n'),
])
def test_run_mixnet_and_topoopt_scenarios(tmp_path, capsys, builder, extra):
    scen = tmp_path / "s.toml"
    scen.write_text(f'[fabric]\nbuilder = "{builder}"\nservers = 4\ngpus_per_server = 4\n{extra}'
                    '[traffic]\npattern = "all_to_all"\ngroup_size = 8\nsize_bytes = 100000\n')
    assert main(["run", str(scen), "--quiet", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert builder in out and "completion" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["summary"]["status"] == "done"


def test_mixnet_scenario_errors(tmp_path, capsys):
    scen = tmp_path / "s.toml"
    scen.write_text('[fabric]\nbuilder = "mixnet"\nservers = 4\nalpha = 9\n[traffic]\nsize_bytes = 1\n')
    assert main(["run", str(scen), "--quiet"]) == 2
    assert "fabric.alpha" in capsys.readouterr().err
    scen.write_text('[fabric]\nbuilder = "mixnet"\nhosts = 4\n[traffic]\nsize_bytes = 1\n')
    assert main(["run", str(scen), "--quiet"]) == 2
    assert "fabric.servers" in capsys.readouterr().err
