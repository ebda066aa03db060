"""fabricsim sweep: sweep files, the results folder, resuming after SIGKILL, the local pool and
Dask clusters giving identical results, failures, status.

The points are tiny (16 GPUs, 64-token sequences: about 0.1 s each) so that the whole file runs
in well under a minute and a half on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import distributed
import pandas as pd
import psutil  # comes with dask[distributed] (the test extra)
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fabricsim import sweep as sw
from fabricsim.errors import ConfigError
from fabricsim.experiment import Point, point_id, run_point

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = textwrap.dedent("""\
    [base]
    model = "mixtral-8x7b"
    gpus = 16
    tp = 2
    ep = 8
    pp = 1
    micro_batch = 1
    seq_len = 64
    micro_batches = 1
    """)

# 3 fabrics x 4 link speeds x 2 seeds = 24 points
TINY = "name = \"tiny\"\nseeds = 2\n" + BASE + textwrap.dedent("""\
    [grid]
    fabric = ["fattree", "railopt", "mixnet"]
    link_gbps = [100, 200, 400, 800]
    """)

# one point that fails when it runs (an unknown parameter of the synthetic gating), one that works
FAILING = BASE + textwrap.dedent("""\
    [zip]
    gating = ["reference", "synthetic"]
    gating_params = [{}, {bogus = 1}]
    """)

CLOCK = list(sw.WALL_CLOCK_COLUMNS)
SWEEP_CMD = [sys.executable, "-c",
             "import sys; from fabricsim.sweep import main; sys.exit(main(sys.argv[1:]))"]


def write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def parser():
    p = argparse.ArgumentParser(prog="fabricsim")
    sw.add_parser(p.add_subparsers(dest="command"))
    return p


def cli(*argv):
    """``fabricsim sweep ...`` through this module's add_parser, in this process."""
    args = parser().parse_args(["sweep", *argv])
    return args.func(args)


def frame(out) -> pd.DataFrame:
    """The whole results folder, as a user loads it, without wall-clock columns."""
    df = pd.read_parquet(out)
    return df.drop(columns=CLOCK).sort_values("point_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return write(tmp_path_factory.mktemp("sweepfile"), TINY)


@pytest.fixture(scope="module")
def local_run(tiny_file, tmp_path_factory):
    """The reference: the tiny sweep, uninterrupted, on a local pool of two workers."""
    out = tmp_path_factory.mktemp("local") / "out"
    report = sw.run_sweep(tiny_file, out, workers=2)
    assert (report.done, report.failed, report.pending, report.ran) == (24, 0, 0, 24)
    return out


# ---------------------------------------------------------------------------------------------
# Sweep files


def test_grid_zip_and_seeds_make_the_points_in_file_order(tmp_path):
    text = "seeds = [3, 5]\n" + BASE + textwrap.dedent("""\
        [grid]
        fabric = ["fattree", "mixnet"]
        link_gbps = [100, 400]
        [zip]
        alpha = [4, 6, 2]
        delay_ms = [1, 10.5, 25]
        """)
    s = sw.load_sweep(write(tmp_path, text))
    assert len(s) == 2 * 2 * 3 * 2 and s.name == "sweep"
    assert s.axes == ("fabric", "link_gbps", "alpha", "delay_ms", "seed")
    first, second, last = s.params[0], s.params[1], s.params[-1]
    assert (first["fabric"], first["link_gbps"], first["alpha"], first["delay_ms"], first["seed"]) \
        == ("fattree", 100.0, 4, 1.0, 3)
    assert second["seed"] == 5
    assert (last["fabric"], last["alpha"], last["delay_ms"]) == ("mixnet", 2, 25.0)
    # ints given for float fields become floats: the ids do not depend on how a number is written
    assert isinstance(first["link_gbps"], float) and isinstance(first["delay_ms"], float)
    assert first["dp"] == 1 and first["micro_batches"] == 1  # resolved
    assert len(set(s.ids)) == len(s)
    assert s.ids[0] == point_id(sw.resolve_point(s.points[0]))


def test_several_zipped_axes_and_duplicates(tmp_path):
    text = BASE + textwrap.dedent("""\
        [grid]
        link_gbps = [100, 100.0]
        [[zip]]
        fabric = ["fattree", "mixnet"]
        seed = [0, 1]
        [[zip]]
        micro_batch = [1, 2]
        """)
    s = sw.load_sweep(write(tmp_path, text))
    assert len(s) == 4 and s.duplicates == 4  # 100 and 100.0 are the same point


def test_ids_are_run_points_ids():
    for p in (Point(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, micro_batch=1, seq_len=64, micro_batches=1),
              Point(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, micro_batch=1, seq_len=64, micro_batches=1,
                    fabric="mixnet", gating="synthetic", gating_params={"skew": 1.2},
                    failures=("nic:0:eps",), link_gbps=200.0)):
        assert run_point(p)["point_id"] == point_id(sw.resolve_point(p))


BAD = [
    ("colour = 1\n" + BASE, "colour: unknown key of a sweep file"),
    (BASE + "[grid]\nfabrik = [\"fattree\"]\n", "grid.fabrik: unknown parameter; allowed: model"),
    (BASE + "[grid]\nfabric = []\n", "grid.fabric: is empty"),
    (BASE + "[grid]\nfabric = \"fattree\"\n", "grid.fabric: must be a list of values"),
    (BASE + "[grid]\nlink_gbps = [100, \"fast\"]\n",
     "grid.link_gbps[1]: must be a number, got 'fast'"),
    (BASE + "[grid]\ngpus = [16, 32.5]\n", "grid.gpus[1]: must be an integer, got 32.5"),
    (BASE.replace('model = "mixtral-8x7b"', "model = 7"), "base.model: must be a string, got 7"),
    (BASE + "[zip]\nalpha = [2, 4]\ndelay_ms = [1, 10, 25]\n",
     "zip.delay_ms: has 3 values but zip.alpha has 2"),
    (BASE + "[grid]\nalpha = [2]\n[zip]\nalpha = [4]\n",
     "zip.alpha: alpha is already varied by grid.alpha"),
    (BASE + "[grid]\nfabric = [\"fattree\"]\nseeds = 2\n", "grid.seeds: seeds is a top-level key"),
    ("seeds = 0\n" + BASE, "seeds: must be a positive count"),
    ("seeds = [1, -2]\n" + BASE, "seeds[1]: must be a non-negative integer"),
    (BASE + "[grid]\nfabric = [\"fattree\", \"torus\"]\n",
     "fabric: must be one of fattree, oversub, railopt, topoopt, mixnet, got 'torus' "
     "(point 2 of 2: fabric='torus')"),
    (BASE + "[grid]\ngpus = [16, 24]\n", "dp: cannot be derived"),
    (BASE + "[grid]\nmodel = [\"gpt-9\"]\n", "model: unknown model 'gpt-9'"),
    (BASE + "[grid\n", "sweep: "),
    ("", "sweep: no points in"),
    ('name = "x"\ndescription = "nothing yet"\n', "sweep: no points in"),
    ("[grid]\n", "sweep: no points in"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[f"{i}-{m.split(':')[0]}"
                                                    for i, (_, m) in enumerate(BAD)])
def test_bad_sweep_files_get_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        sw.load_sweep(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_base_alone_is_one_point_and_no_points_is_an_error(tmp_path):
    one = sw.load_sweep(write(tmp_path, 'name = "one"\n' + BASE))
    assert len(one) == 1 and one.axes == () and one.params[0]["gpus"] == 16
    default = sw.load_sweep(write(tmp_path, "[base]\n"))  # the default point, on purpose
    assert len(default) == 1 and default.points[0] == Point()
    assert len(sw.load_sweep(write(tmp_path, "seeds = 2\n"))) == 2  # an axis alone
    with pytest.raises(ConfigError, match="points: no points"):
        sw.run_sweep([], tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_missing_file_and_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="sweep: file not found"):
        cli(str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o"))
    path = write(tmp_path, TINY)
    with pytest.raises(ConfigError, match="--workers: must be a positive integer"):
        cli(path, "--workers", "0")
    with pytest.raises(ConfigError, match="scheduler: must be a Dask scheduler address"):
        sw.run_sweep(path, tmp_path / "o", scheduler="localhost")
    with pytest.raises(ConfigError, match="workers: must be a non-negative integer"):
        sw.run_sweep(path, tmp_path / "o", workers=-1)
    with pytest.raises(ConfigError, match="start_method: must be forkserver or spawn"):
        sw.run_sweep(path, tmp_path / "o", workers=1, start_method="fork")
    assert not (tmp_path / "o").exists()  # nothing is created before the checks pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="out: .*file exists and is not a folder"):
        sw.run_sweep(path, tmp_path / "file", workers=0)
    with pytest.raises(ConfigError, match="out: .* is not a sweep folder"):
        cli("status", str(tmp_path))


def test_an_unreachable_scheduler_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sw, "_CONNECT_TIMEOUT_S", 1)
    path = write(tmp_path, FAILING)
    with pytest.raises(ConfigError, match="scheduler: cannot connect to tcp://127.0.0.1:1"):
        cli(path, "--out", str(tmp_path / "new" / "out"), "--scheduler", "tcp://127.0.0.1:1")
    assert sorted(os.listdir(tmp_path)) == ["sweep.toml"]


def test_a_run_that_records_nothing_removes_only_the_folders_it_created(tmp_path, monkeypatch):
    path = write(tmp_path, FAILING)

    def broken(*args, **kwargs):
        raise sw.FabricsimError("local worker processes die as they start")
        yield  # a generator, as execute

    monkeypatch.setattr(sw, "execute", broken)
    with pytest.raises(sw.FabricsimError, match="die as they start"):
        sw.run_sweep(path, tmp_path / "new" / "deeper" / "out", workers=1)
    assert not (tmp_path / "new").exists()  # every folder this run made is gone
    (tmp_path / "mine").mkdir()  # a folder that was there before is kept
    with pytest.raises(sw.FabricsimError):
        sw.run_sweep(path, tmp_path / "mine", workers=1)
    assert (tmp_path / "mine").is_dir()
    (tmp_path / "empty").mkdir()
    with pytest.raises(sw.FabricsimError):
        sw.run_sweep(path, tmp_path / "empty" / "out", workers=1)
    assert sorted(os.listdir(tmp_path / "empty")) == []


def test_progress_in_a_log_file_is_plain_lines(tmp_path, capsys, monkeypatch):
    """stderr that is not a terminal (a log file, a pipe) gets whole lines, no carriage
    returns; a terminal gets one line rewritten in place."""
    report = sw.run_sweep(write(tmp_path, FAILING), tmp_path / "out", workers=0, progress=True)
    assert (report.done, report.failed) == (1, 1)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and err.endswith("\n")
    assert lines[0].startswith("  0/2 done, 0 failed, 2 pending") and "ETA ?" in lines[0]
    assert lines[-1].startswith("  1/2 done, 1 failed, 0 pending")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain bar, even where tqdm is installed
    bar = sw._Progress(2, 0, 0, True)
    bar.update(True, False)
    bar.update(True, False)
    bar.close()
    err = capsys.readouterr().err
    assert err.startswith("\r  0/2 done") and "\r  2/2 done, 0 failed, 0 pending" in err
    assert err.count("\n") == 1 and err.endswith("\n")


def test_dry_run_lists_the_points(tmp_path, capsys):
    assert cli(write(tmp_path, TINY), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "24 points (axes: fabric, link_gbps, seed)" in out
    assert out.count("fabric=") == 24


def test_example_sweep_has_at_least_20_points():
    s = sw.load_sweep(os.path.join(ROOT, "examples", "sweep-small.toml"))
    assert len(s) >= 20 and s.name == "small"


# ---------------------------------------------------------------------------------------------
# Results folder, local pool


def test_local_pool_results_folder(local_run, tiny_file):
    s = sw.load_sweep(tiny_file)
    df = pd.read_parquet(local_run)  # the whole folder loads as one table
    assert len(df) == 24 and sorted(df.point_id) == sorted(s.ids)
    assert len(ds.dataset(local_run, format="parquet").to_table()) == 24
    assert len(sw.load_results(local_run)) == 24
    # the resolved parameters are columns, typed, next to the results
    for col in ("fabric", "link_gbps", "seed", "dp", "micro_batches", "gating_params",
                "region_servers", "iteration_time_s", "network_cost_usd", "wall_s"):
        assert col in df.columns
    assert df.link_gbps.dtype == "float64" and df.seed.dtype == "int64"
    by_id = dict(zip(s.ids, s.params))
    for r in df.itertuples():
        assert r.fabric == by_id[r.point_id]["fabric"] and r.seed == by_id[r.point_id]["seed"]
    # one file per point, each with its resolved point in the metadata
    files = sorted(os.listdir(local_run / "points"))
    assert files == sorted(f"{i}.parquet" for i in s.ids)
    meta = pq.read_schema(local_run / "points" / files[0]).metadata
    assert json.loads(meta[b"fabricsim.scenario"])["model"] == "mixtral-8x7b"
    index = json.loads((local_run / "_sweep.json").read_text())
    assert index["name"] == "tiny" and len(index["points"]) == 24
    assert sw.sweep_status(local_run)["done"] == 24


def test_rerun_skips_finished_points_and_a_sweep_may_grow(local_run, tiny_file, tmp_path, capsys):
    points = local_run / "points"
    before = {n: os.stat(points / n).st_mtime_ns for n in os.listdir(points)}
    report = sw.run_sweep(tiny_file, local_run, workers=2)
    assert (report.ran, report.skipped, report.done) == (0, 24, 24)
    assert before == {n: os.stat(local_run / "points" / n).st_mtime_ns
                      for n in os.listdir(local_run / "points")}
    # another sweep cannot share the folder ...
    other = write(tmp_path, TINY.replace("seeds = 2", "seeds = [7]"), "other.toml")
    with pytest.raises(ConfigError, match="holds another sweep"):
        sw.run_sweep(other, local_run, workers=1)
    # ... but the sweep may grow in it (a copy: the fixture stays as it is)
    import shutil

    grown = tmp_path / "grown"
    shutil.copytree(local_run, grown)
    report = sw.run_sweep(write(tmp_path, TINY.replace("seeds = 2", "seeds = 3"), "grown.toml"),
                          grown, workers=0)
    assert (report.ran, report.skipped, report.done, report.total) == (12, 24, 36, 36)
    assert len(pd.read_parquet(grown)) == 36


def test_kill_and_resume_loses_nothing(local_run, tiny_file, tmp_path, capsys):
    """SIGKILL the sweep command half-way, run it again: every point once, intact, and the same
    results as the uninterrupted run."""
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(SWEEP_CMD + [tiny_file, "--out", str(out), "--workers", "2", "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    points_dir = out / "points"
    deadline = time.monotonic() + 60
    done = 0
    children = []
    while time.monotonic() < deadline and proc.poll() is None:
        if points_dir.is_dir():
            done = sum(1 for n in os.listdir(points_dir) if n.endswith(".parquet"))
            if done >= 8:
                break
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.005)
    assert proc.poll() is None, ("the sweep ended before it could be killed: "
                                 + proc.stderr.read().decode())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_with = sum(1 for n in os.listdir(points_dir) if n.endswith(".parquet"))
    assert 8 <= killed_with < 24
    status = sw.sweep_status(out)
    assert status["done"] == killed_with and status["done"] + status["pending"] == 24
    # the workers of the killed sweep do not linger
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphaned workers: {alive}"

    assert cli(tiny_file, "--out", str(out), "--workers", "2", "--quiet", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["done"], report["failed"], report["pending"]) == (24, 0, 0)
    assert report["skipped"] == killed_with and report["ran"] == 24 - killed_with
    names = os.listdir(points_dir)
    assert sorted(names) == sorted(f"{i}.parquet" for i in sw.load_sweep(tiny_file).ids)
    for n in names:  # every file is whole
        assert pq.read_table(points_dir / n).num_rows == 1
    pd.testing.assert_frame_equal(frame(out), frame(local_run))


# ---------------------------------------------------------------------------------------------
# Dask


def test_dask_in_process_cluster_gives_identical_results(local_run, tiny_file, tmp_path):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        report = sw.run_sweep(tiny_file, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert report.done == 24 and report.backend.startswith("dask")
    pd.testing.assert_frame_equal(frame(tmp_path / "dask"), frame(local_run))


@pytest.fixture
def dask_cluster(tmp_path):
    """A real scheduler and two single-threaded worker processes on loopback, started with the
    commands the README gives (dask scheduler / dask worker)."""
    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 30
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen(
            ["dask", "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
             "--local-directory", str(tmp_path / "dask-worker")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address
    finally:
        if len(procs) > 1:
            try:  # the quick way down: the scheduler stops its workers
                from distributed import Client

                with Client(address, timeout="5s") as client:
                    client.shutdown()
            except Exception:  # noqa: BLE001 - terminate below
                pass
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_dask_scheduler_with_two_worker_processes_gives_identical_results(
        local_run, tiny_file, tmp_path, dask_cluster, capsys):
    from distributed import Client

    with Client(dask_cluster, timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
        assert sum(client.nthreads().values()) == 2
    out = tmp_path / "dask"
    assert cli(tiny_file, "--out", str(out), "--scheduler", dask_cluster, "--quiet") == 0
    assert f"on dask {dask_cluster}" in capsys.readouterr().out
    pd.testing.assert_frame_equal(frame(out), frame(local_run))


# ---------------------------------------------------------------------------------------------
# Failures, status, progress, summary


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    path = write(tmp_path, FAILING)
    out = tmp_path / "out"
    assert cli(path, "--out", str(out), "--workers", "2") == 1
    captured = capsys.readouterr()
    assert "1 done, 1 failed, 0 pending" in captured.out
    assert "gating.bogus" in captured.out
    # progress on stderr: counts and an ETA
    assert "done" in captured.err and "failed" in captured.err and "pending" in captured.err
    assert "ETA" in captured.err
    failed = os.listdir(out / "_failed")
    assert len(failed) == 1
    info = json.loads((out / "_failed" / failed[0]).read_text())
    assert info["type"] == "ConfigError" and "gating.bogus" in info["message"]
    assert info["params"]["gating"] == "synthetic" and info["traceback"]
    assert len(pd.read_parquet(out)) == 1  # only the finished point; _failed is not read

    assert cli("status", str(out), "--json") == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["done"], st["failed"], st["pending"], st["total"]) == (1, 1, 0, 2)
    assert all(isinstance(st[k], int) for k in ("done", "failed", "pending"))
    assert cli("status", str(out)) == 0
    assert "2: 1 done, 1 failed, 0 pending" in capsys.readouterr().out

    # failed points are run again (and fail again), unless --skip-failed
    r = sw.run_sweep(path, out, workers=0)
    assert (r.ran, r.done, r.failed) == (1, 1, 1)
    r = sw.run_sweep(path, out, workers=0, skip_failed=True)
    assert (r.ran, r.done, r.failed) == (0, 1, 1)


def test_status_counts_pending_points(tmp_path):
    path = write(tmp_path, FAILING)
    s = sw.load_sweep(path)
    out = tmp_path / "out"
    out.mkdir()
    sw._write_json(str(out / sw.INDEX_NAME), sw._new_index(str(out), s))
    assert sw.sweep_status(out) | {"failures": None} == {
        "name": "sweep", "out": str(out), "total": 2, "done": 0, "failed": 0, "pending": 2,
        "failures": None}


def test_a_point_that_kills_its_worker_is_found_and_the_others_go_on():
    """signal.raise_signal stands in for a point: SIGKILL kills the worker, SIGCONT is harmless."""
    tasks = [(signal.SIGCONT,), (signal.SIGCONT,), (signal.SIGKILL,), (signal.SIGCONT,),
             (signal.SIGCONT,)]
    outcomes = dict(sw._iter_local(tasks, 2, None, fn=signal.raise_signal))
    assert sorted(outcomes) == [0, 1, 2, 3, 4]
    assert outcomes[2][0] == "error" and outcomes[2][1]["type"] == "WorkerDied"
    assert all(outcomes[i] is None for i in (0, 1, 3, 4))


def test_workers_have_one_numba_thread_and_the_parent_keeps_its_environment():
    before = os.environ.get("NUMBA_NUM_THREADS")
    probe = ("(__import__('os').environ['NUMBA_NUM_THREADS'], "
             "__import__('numba').config.NUMBA_NUM_THREADS)")
    outcomes = dict(sw._iter_local([(probe,), (probe,)], 2, None, fn=eval))
    assert outcomes == {0: ("1", 1), 1: ("1", 1)}
    assert os.environ.get("NUMBA_NUM_THREADS") == before


def test_summary_table_and_interrupted_temporaries(local_run, tiny_file, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(local_run, out)
    # a temporary left by a killed writer is ignored by readers and removed by the next run
    (out / "points" / ".deadbeef.parquet.123.tmp").write_bytes(b"PAR1 partial")
    assert len(pd.read_parquet(out)) == 24
    assert cli(tiny_file, "--out", str(out), "--quiet") == 0
    text = capsys.readouterr().out
    assert not any(n.endswith(".tmp") for n in os.listdir(out / "points"))
    assert "fabric" in text and "iteration_time_s" in text and text.count(" done") >= 24
    assert "24 done, 0 failed, 0 pending" in text


# ---------------------------------------------------------------------------------------------
# fabricsim reproduce and the fabricsim command


def test_reproduce_runs_on_the_pool_with_the_same_rows():
    from fabricsim.reproduce import run_study

    pts = [Point(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, micro_batch=1, seq_len=64, micro_batches=1,
                 fabric=f, link_gbps=100.0) for f in ("fattree", "oversub", "mixnet")]
    seen = []
    one = run_study(pts)
    two = run_study(pts, workers=2, progress=lambda d, t, r: seen.append((d, t)))
    assert seen[-1] == (3, 3)
    strip = [{k: v for k, v in r.items() if k not in CLOCK} for r in one]
    assert strip == [{k: v for k, v in r.items() if k not in CLOCK} for r in two]
    assert [r["fabric"] for r in two] == ["fattree", "oversub", "mixnet"]


def test_fabricsim_sweep_command(tmp_path, capsys):
    from fabricsim.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "sweep" in sub.choices
    path = write(tmp_path, FAILING)
    assert main(["sweep", path, "--out", str(tmp_path / "o"), "--workers", "1", "--quiet"]) == 1
    capsys.readouterr()
    assert main(["sweep", "status", str(tmp_path / "o"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["done"], st["failed"], st["pending"]) == (1, 1, 0)
    bad = write(tmp_path, BASE + "[grid]\nfabrik = [1]\n", "bad.toml")
    assert main(["sweep", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fabricsim: error: grid.fabrik: unknown parameter; allowed: "
                   + ", ".join(sw._FIELDS)]


def test_readme_sweep_file_is_the_example():
    """The README's Sweeps section shows examples/sweep-small.toml as it is."""
    import re

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert "\n## Sweeps" in text
    section = text.split("\n## Sweeps", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"^```toml[ \t]*\n(.*?)^```", section, re.S | re.M)
                 if "[grid]" in b)

    def body(s):
        return [ln.split("#", 1)[0].rstrip() for ln in s.splitlines()
                if ln.split("#", 1)[0].strip()]

    with open(os.path.join(ROOT, "examples", "sweep-small.toml"), encoding="utf-8") as f:
        assert body(block) == body(f.read())


def test_profiles_and_switches_are_sweep_axes(tmp_path):
    """``profile`` and every switch are sweep keys; each point's parameters record the profile
    and the resolved switch values, and the ids tell the readings apart."""
    text = BASE.replace('[base]\n', '[base]\nprofile = "physical"\n') + textwrap.dedent("""\
        [grid]
        compute_pacing = ["profile", "load"]
        mode = ["isolated", "exact"]
        """)
    sweep = sw.load_sweep(write(tmp_path, text))
    assert len(sweep) == 4
    report = sw.run_sweep(sweep, tmp_path / "o", workers=1)
    assert report.done == 4
    import pandas as pd

    df = pd.read_parquet(tmp_path / "o")
    assert set(df.profile) == {"physical"} and set(df.compute_pacing) == {"profile", "load"}
    assert set(df["mode"]) == {"isolated", "exact"}
    assert set(df.a2a_sizing) == {"renormalized"} and set(df.nvlink) == {"text"}  # physical's
    assert df.point_id.nunique() == 4
    with pytest.raises(ConfigError, match="base.profile|profile"):
        sw.load_sweep(write(tmp_path, BASE.replace('[base]\n', '[base]\nprofile = "paper"\n')))
