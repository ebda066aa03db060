"""``fabricsim run`` on bad or extreme input: one clear error before anything is built or written,
a run that owns its output folder, input bounds that keep int64 picoseconds honest, sampling that
stops with the last flow, and ``trace show`` on a cut-short trace."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings

import numpy as np
import pytest

import fabricsim
from fabricsim.cli import main
from fabricsim.config import FabricConfig, Scenario, TrafficConfig, load_scenario
from fabricsim.engine import (HORIZON_PS, MAX_FLOW_BYTES, MAX_TOTAL_BYTES, as_capacity_events,
                              check_time_range, run_flow_engine)
from fabricsim.errors import ConfigError
from fabricsim.scenario import check_memory, run_scenario
from fabricsim.traces import read_flow_trace, read_link_trace

FABRIC = '[fabric]\nhosts = 16\ngpus_per_server = 4\n'
TRAFFIC = ('[traffic]\npattern = "all_to_all"\ngroup_size = 8\nsize_min_bytes = 10000\n'
           'size_max_bytes = 100000\n')


def run_main(argv):
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error(code, err, field):
    """Exit 2 and one line naming ``field``, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fabricsim: error: {field}: "), err
    return lines[0]


# ------------------------------------------------------------------------------------------------
# 1. A run owns its output folder
# ------------------------------------------------------------------------------------------------

def test_rerun_without_sampling_removes_the_old_links_trace(tmp_path):
    out = tmp_path / "out"
    sampled = write(tmp_path, FABRIC + TRAFFIC + "[run]\nsample_us = 1\n", "a.toml")
    code, _, err = run_main(["run", str(sampled), "--out", str(out), "--quiet"])
    assert code == 0, err
    assert (out / "links.h5").exists()
    (out / "notes.txt").write_text("mine")  # not fabricsim's: stays
    (out / "summary.json.tmp").write_text("{")  # a killed writer's leftover: goes
    unsampled = write(tmp_path, FABRIC + '[traffic]\nsize_bytes = 5000\n[run]\nsample_us = 0\n', "b.toml")
    code, stdout, err = run_main(["run", str(unsampled), "--out", str(out), "--quiet"])
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["flows.arrows", "notes.txt", "summary.json"]
    traces = next(line for line in stdout.splitlines() if line.startswith("traces"))
    assert traces.split(None, 1)[1] == f"{out / 'flows.arrows'}, {out / 'summary.json'}"
    doc = json.loads((out / "summary.json").read_text())
    assert doc["files"] == {"flows": "flows.arrows", "links": None}
    assert doc["scenario"]["traffic"]["size_bytes"] == 5000
    assert read_flow_trace(out / "flows.arrows").num_rows == 16  # the new permutation, not the old run


def test_interrupted_rerun_leaves_no_summary_of_the_old_run(tmp_path):
    out = tmp_path / "out"
    scenario = load_scenario(write(tmp_path, FABRIC + TRAFFIC + "[run]\nsample_us = 1\n"))
    run_scenario(scenario, out)
    assert json.loads((out / "summary.json").read_text())["summary"]["status"] == "done"

    def interrupt(done, total, now_ps):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario, out, progress=interrupt)
    # the new run's partial traces, and no summary claiming they are a finished run
    assert sorted(os.listdir(out)) == ["flows.arrows"]


def test_old_run_files_are_removed_summary_first(tmp_path, monkeypatch):
    from fabricsim.traces import run as run_mod

    for name in ("links.h5", "flows.arrows", "summary.json", "flows.arrows.tmp", "keep.parquet"):
        (tmp_path / name).write_text("old")
    removed = []
    real_remove = os.remove

    def remove(path):
        real_remove(path)
        removed.append(os.path.basename(path))

    monkeypatch.setattr(run_mod.os, "remove", remove)
    run_mod.clear_run_files(tmp_path)
    assert removed == ["summary.json", "flows.arrows", "flows.arrows.tmp", "links.h5"]
    assert sorted(os.listdir(tmp_path)) == ["keep.parquet"]


def test_bad_rerun_keeps_the_previous_run(tmp_path):
    out = tmp_path / "out"
    good = write(tmp_path, FABRIC + TRAFFIC, "good.toml")
    assert run_main(["run", str(good), "--out", str(out), "--quiet"])[0] == 0
    before = sorted(os.listdir(out))
    bad = write(tmp_path, FABRIC + '[traffic]\nsize_bytes = 1000\nseed = -1\n', "bad.toml")
    one_error(*run_main(["run", str(bad), "--out", str(out), "--quiet"])[::2], "traffic.seed")
    assert sorted(os.listdir(out)) == before == ["flows.arrows", "links.h5", "summary.json"]


# ------------------------------------------------------------------------------------------------
# 10. Failed validation leaves no output folder
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,field", [
    ('[fabric]\nhosts = 0\n[traffic]\nsize_bytes = 1000\n', "fabric.hosts"),
    ('[fabric]\nhosts = 1000000000\n[traffic]\nsize_bytes = 1000\n', "fabric.hosts"),
    (FABRIC + '[traffic]\nsize_bytes = 100000000000000000\n', "traffic.size_bytes"),
    (FABRIC + '[traffic]\nsize_bytes = 1000\nseed = -1\n', "traffic.seed"),
    (FABRIC + '[traffic]\nsize_bytes = 1000\n[run]\nsample_us = 1e-9\n', "run.sample_us"),
    (FABRIC + '[traffic]\npattern = "incast"\ntarget = 99\nsize_bytes = 1000\n', "traffic.target"),
    # checked by simulate_flows, after traffic and fabric: 15 PB into one 1 Gbit/s host link
    ('[fabric]\nhosts = 16\ngpus_per_server = 1\nlink_gbps = 1\n[traffic]\npattern = "incast"\n'
     'size_bytes = 1000000000000000\n[run]\nsample_us = 0\n', "traffic.size_bytes"),
])
def test_failed_validation_creates_no_output_folder(tmp_path, text, field):
    out = tmp_path / "new" / "out"
    code, _, err = run_main(["run", str(write(tmp_path, text)), "--out", str(out), "--quiet"])
    one_error(code, err, field)
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------------------
# 2. The fabric first: sizes, memory
# ------------------------------------------------------------------------------------------------

def test_a_billion_hosts_fail_fast_naming_the_field(tmp_path):
    path = write(tmp_path, '[fabric]\nhosts = 1000000000\n[traffic]\nsize_bytes = 1000\n')
    t0 = time.perf_counter()
    code, _, err = run_main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    assert time.perf_counter() - t0 < 1.0
    line = one_error(code, err, "fabric.hosts")
    assert "1,000,000,000 hosts need about" in line and "8,000,000,000 links" in line
    assert "available" in line


def test_zero_hosts_or_servers_name_the_fabric_field():
    with pytest.raises(ConfigError) as e:
        FabricConfig(hosts=0)
    assert e.value.field == "fabric.hosts"
    with pytest.raises(ConfigError) as e:
        FabricConfig(builder="rail_optimized", servers=0)
    assert e.value.field == "fabric.servers"


def test_absurd_all_to_all_names_group_size(tmp_path):
    # 65,536 hosts in one group: 4.3 billion flows
    path = write(tmp_path, '[fabric]\nhosts = 65536\n[traffic]\npattern = "all_to_all"\nsize_bytes = 1000\n')
    code, _, err = run_main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    line = one_error(code, err, "traffic.group_size")
    assert "4,294,901,760 flows" in line
    assert not (tmp_path / "o").exists()


def scenario_of(fabric, traffic, run=None, packet=None):
    data = {"fabric": fabric, "traffic": traffic}
    if run is not None:
        data["run"] = run
    if packet is not None:
        data["packet"] = packet
    return Scenario.from_dict(data)


def test_memory_check_names_the_largest_part():
    small = scenario_of({"hosts": 1024}, {"size_bytes": 1000})
    check_memory(small, available_bytes=10**9)  # about 1 MB of links, 0.4 MB of flows
    with pytest.raises(ConfigError) as e:
        check_memory(small, available_bytes=10**5)
    assert e.value.field == "fabric.hosts" and "this machine has 100 kB available" in str(e.value)
    a2a = scenario_of({"hosts": 1024}, {"pattern": "all_to_all", "size_bytes": 1000})
    with pytest.raises(ConfigError) as e:
        check_memory(a2a, available_bytes=10**8)  # 1,047,552 flows x 400 B
    assert e.value.field == "traffic.group_size" and "1,047,552 flows" in str(e.value)
    huge = scenario_of({"hosts": 16, "gpus_per_server": 4}, {"size_bytes": MAX_FLOW_BYTES},
                       {"engine": "packet"})
    with pytest.raises(ConfigError) as e:
        check_memory(huge, available_bytes=10**10)  # 16 x 1.1e11 packets, one byte each
    assert e.value.field == "traffic.size_bytes" and "packets" in str(e.value)


@pytest.mark.parametrize("kw", [
    dict(builder="fat_tree", hosts=1024),
    dict(builder="fat_tree", hosts=1000, gpus_per_server=8, oversubscription=3),
    dict(builder="fat_tree", hosts=1024, oversubscription=3, oversub_build="speed"),
    dict(builder="fat_tree", hosts=128, host="server"),
    dict(builder="rail_optimized", servers=64),
    dict(builder="rail_optimized", servers=64, build="superpod"),
    dict(builder="mixnet", servers=64),
    dict(builder="mixnet", servers=64, region_servers=16),
    dict(builder="topoopt", servers=64),
])
def test_link_estimate_is_honest(kw):
    cfg = FabricConfig(**kw)
    actual = cfg.build_fabric().n_links
    assert abs(cfg.estimate_links() - actual) <= 0.05 * actual, (cfg.estimate_links(), actual)


# ------------------------------------------------------------------------------------------------
# 3. Flow sizes and the int64 clock
# ------------------------------------------------------------------------------------------------

def test_size_bounds_in_the_scenario():
    TrafficConfig(size_bytes=MAX_FLOW_BYTES)
    TrafficConfig(size_min_bytes=0, size_max_bytes=MAX_FLOW_BYTES)
    for kw, field in ((dict(size_bytes=MAX_FLOW_BYTES + 1), "traffic.size_bytes"),
                      (dict(size_min_bytes=1, size_max_bytes=2**63 - 1), "traffic.size_max_bytes")):
        with pytest.raises(ConfigError) as e:
            TrafficConfig(**kw)
        assert e.value.field == field and "1,000,000,000,000,000" in str(e.value)


def test_size_bounds_in_files(tmp_path):
    m = np.zeros((16, 16))
    m[0, 5] = 1e17
    np.save(tmp_path / "m.npy", m)
    cm = tmp_path / "c.cm"
    cm.write_text("Nodes 16\nConnections 1\n0->5 id 0 start 0 size 100000000000000000\n")
    for traffic in ({"pattern": "matrix", "file": str(tmp_path / "m.npy")},
                    {"pattern": "htsim", "file": str(cm)}):
        with pytest.raises(ConfigError) as e:
            run_scenario(scenario_of({"hosts": 16, "gpus_per_server": 4}, traffic))
        assert e.value.field == "traffic.file" and "1,000,000,000,000,000" in str(e.value)
    cm.write_text("Nodes 16\nConnections 1\n0->5 id 99999999999999999999 start 0 size 1\n")
    with pytest.raises(ConfigError) as e:  # an id beyond int64: no OverflowError traceback
        run_scenario(scenario_of({"hosts": 16, "gpus_per_server": 4}, {"pattern": "htsim", "file": str(cm)}))
    assert e.value.field == "traffic.file" and "line 3" in str(e.value)


@pytest.mark.parametrize("name, data", [("empty.csv", b""), ("blank.csv", b"\n \n"), ("empty.npy", None)])
def test_an_empty_matrix_file_is_one_error(tmp_path, name, data):
    path = tmp_path / name
    if data is None:
        np.save(path, np.zeros((0, 0)))
    else:
        path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy "empty input" warning either
        with pytest.raises(ConfigError) as e:
            run_scenario(scenario_of({"hosts": 16, "gpus_per_server": 4},
                                     {"pattern": "matrix", "file": str(path)}))
    assert e.value.field == "traffic.file"
    assert str(e.value) == f"traffic.file: {path} is empty; expected a square matrix of bytes"


FAB16 = fabricsim.fat_tree(16, 100, gpus_per_server=4)


@pytest.mark.parametrize("size", [10**17, 1e20, 2**63 - 1])
def test_simulate_flows_bounds_sizes(size):
    with pytest.raises(ConfigError) as e:
        fabricsim.simulate_flows(FAB16, [0], [5], np.array([size]))
    assert e.value.field == "size_bytes" and f"{MAX_FLOW_BYTES:,}" in str(e.value)


def test_simulate_flows_refuses_runs_past_the_clock():
    # 12 flows of 1 PB from other servers into one 1 Gbit/s host link: 93 days each, 3 years in all
    fab = fabricsim.fat_tree(16, 1.0, gpus_per_server=4)
    src = np.arange(4, 16)
    with pytest.raises(ConfigError) as e:
        fabricsim.simulate_flows(fab, src, np.zeros(12, int), MAX_FLOW_BYTES)
    assert e.value.field == "size_bytes" and "eps link" in str(e.value) and "days" in str(e.value)
    # ... unless the run stops earlier
    res = fabricsim.simulate_flows(fab, src, np.zeros(12, int), MAX_FLOW_BYTES, until_ps=10**9)
    assert res.status == "horizon" and np.all(res.finish_ps == -1)
    # the largest flow alone on that link fits the clock: 93 days
    res = fabricsim.simulate_flows(fab, [4], [0], MAX_FLOW_BYTES)
    assert res.status == "done" and res.completion_ps == pytest.approx(MAX_FLOW_BYTES * 8e12 / 1e9, rel=1e-6)
    assert res.completion_ps < HORIZON_PS


def test_total_bytes_must_fit_int64_bits():
    ptr = np.array([0, 1, 2], np.int64)
    links = np.array([0, 1], np.int64)
    cap = np.array([1e15, 1e15])
    check_time_range(ptr, links, [10**15, 10**15], [0, 0], cap)
    with pytest.raises(ConfigError) as e:
        check_time_range(ptr, links, [MAX_TOTAL_BYTES, 1], [0, 0], cap)
    assert e.value.field == "size_bytes" and "int64" in str(e.value)


def test_flow_engine_past_the_clock_is_horizon_not_deadlock():
    # Bypassing the checks: a flow predicted to finish after the end of the clock is not stuck.
    ptr = np.array([0, 1], np.int64)
    out = run_flow_engine(ptr, np.array([0], np.int64), np.array([1e8]), np.array([MAX_FLOW_BYTES], np.int64),
                          np.array([0], np.int64), as_capacity_events(None, 1))
    assert MAX_FLOW_BYTES * 8e12 / 1e8 > HORIZON_PS
    assert out.status == "horizon" and out.finish_ps[0] == -1


def test_cli_huge_size_is_one_error(tmp_path):
    path = write(tmp_path, FABRIC + '[traffic]\nsize_bytes = 100000000000000000\n')
    line = one_error(*run_main(["run", str(path), "--quiet", "--out", str(tmp_path / "o")])[::2],
                     "traffic.size_bytes")
    assert "1,000,000,000,000,000" in line


# ------------------------------------------------------------------------------------------------
# 4. links.h5 sampling stops with the last flow; the packet engine's queue trace
# ------------------------------------------------------------------------------------------------

def test_packet_sampling_stops_at_the_last_flow(tmp_path):
    path = write(tmp_path, FABRIC + TRAFFIC + '[run]\nengine = "packet"\nsample_us = 5\n')
    result, _ = run_scenario(load_scenario(path), tmp_path / "o")
    d = read_link_trace(tmp_path / "o" / "links.h5")
    last = int(result.finish_ps.max())
    assert result.end_ps > 100 * last  # the idle retransmission timers ran on, up to 1 s
    assert last <= d["time_ps"][-1] <= last + 5_000_000
    np.testing.assert_array_equal(d["time_ps"], 5_000_000 * np.arange(1, d["time_ps"].size + 1))


def test_flow_sampling_stops_at_the_last_flow_despite_later_capacity_events(tmp_path):
    src = np.arange(16)
    sample_ps = 1_000_000
    res = fabricsim.simulate_flows(FAB16, src, (src + 4) % 16, 100_000, trace=tmp_path / "o",
                                   sample_ps=sample_ps, capacity_events=[[10**12, 0, 1e9]])
    d = read_link_trace(tmp_path / "o" / "links.h5")
    assert res.end_ps == 10**12  # the run went on to the capacity change
    assert res.completion_ps <= d["time_ps"][-1] <= res.completion_ps + sample_ps
    assert res.trace_files == (str(tmp_path / "o" / "flows.arrows"), str(tmp_path / "o" / "links.h5"))


def test_packet_queue_trace_shows_the_incast_bottleneck(tmp_path):
    # 8 senders on other servers into host 0: its edge -> host link is the bottleneck
    src = np.arange(4, 12)
    dst = np.zeros(8, np.int64)
    res = fabricsim.simulate_flows(FAB16, src, dst, 1_000_000, engine="packet", trace=tmp_path / "o",
                                   sample_ps=1_000_000)
    assert res.status == "done"
    q = read_link_trace(tmp_path / "o" / "links.h5")["queue_bytes"]
    bottleneck = int(FAB16.routing.host_down[0])
    assert q[bottleneck].max() >= 8 * 9000  # several packets of every sender wait there
    assert int(np.argmax(q.max(axis=1))) == bottleneck
    used = np.zeros(FAB16.n_links, bool)
    used[res.routes.route_links] = True
    used[FAB16.links.reverse[res.routes.route_links]] = True  # ACK paths
    assert (~used).sum() > 0 and np.all(q[~used] == 0)


# ------------------------------------------------------------------------------------------------
# 5. Seeds; 6. folders given for files; 7. [packet] with the flow engine; 8. sample_us
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("table,extra", [
    ("traffic", "[traffic]\nsize_bytes = 1000\nseed = -1\n"),
    ("run", "[traffic]\nsize_bytes = 1000\n[run]\nseed = -1\n"),
    ("fabric", None),
])
def test_negative_seeds_are_one_error(tmp_path, table, extra):
    text = (FABRIC + extra if extra else
            '[fabric]\nbuilder = "mixnet"\nservers = 4\nseed = -1\n[traffic]\nsize_bytes = 1000\n')
    argv = ["run", str(write(tmp_path, text)), "--quiet", "--out", str(tmp_path / "o")]
    line = one_error(*run_main(argv)[::2], f"{table}.seed")
    assert "must be an integer >= 0" in line


def test_a_folder_where_a_file_is_expected(tmp_path):
    (tmp_path / "somedir").mkdir()
    for argv, field in ((["run", str(tmp_path / "somedir")], "scenario"),
                        (["trace", "show", str(tmp_path / "somedir")], "trace"),
                        (["trace", "convert", str(tmp_path / "somedir"), "--to", "parquet"], "trace")):
        line = one_error(*run_main(argv)[::2], field)
        assert line.endswith(f"{tmp_path / 'somedir'} is a directory, expected a file")
    for pattern in ("matrix", "htsim"):
        path = write(tmp_path, FABRIC + f'[traffic]\npattern = "{pattern}"\nfile = "somedir"\n')
        line = one_error(*run_main(["run", str(path), "--quiet", "--out", str(tmp_path / "o")])[::2],
                         "traffic.file")
        assert "is a directory, expected a file" in line


def test_packet_table_with_the_flow_engine_warns(tmp_path):
    path = write(tmp_path, FABRIC + '[traffic]\nsize_bytes = 1000\n[run]\nsample_us = 0\n'
                           '[packet]\nmtu_bytes = 1500\n')
    code, _, err = run_main(["run", str(path), "--quiet", "--out", str(tmp_path / "o")])
    assert code == 0
    assert err.strip().splitlines() == ['fabricsim: warning: packet: the [packet] table (mtu_bytes) only '
                                        'applies with run.engine = "packet"; this run uses the flow engine']
    code, stdout, err = run_main(["run", str(path), "--quiet", "--out", str(tmp_path / "o"),
                                  "--engine", "packet"])
    assert code == 0 and err == "" and "1500 B packets" in stdout
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no [packet] table: no warning
        run_scenario(scenario_of({"hosts": 16, "gpus_per_server": 4}, {"size_bytes": 1000}))


@pytest.mark.parametrize("sample_us,ok", [(1e-9, False), (4e-7, False), (1e-6, True), (0, True)])
def test_sample_us_never_rounds_to_off(sample_us, ok):
    make = lambda: scenario_of({"hosts": 16, "gpus_per_server": 4}, {"size_bytes": 1000},  # noqa: E731
                               {"sample_us": sample_us})
    if ok:
        assert make().run.sample_ps == (1 if sample_us else None)
    else:
        with pytest.raises(ConfigError) as e:
            make()
        assert e.value.field == "run.sample_us" and "at least 1 ps" in str(e.value)


def test_absurd_sample_count_is_refused(tmp_path):
    # 16 flows of 1 PB sampled every picosecond: exabytes of links.h5
    path = write(tmp_path, FABRIC + f'[traffic]\nsize_bytes = {MAX_FLOW_BYTES}\n[run]\nsample_us = 1e-6\n')
    line = one_error(*run_main(["run", str(path), "--quiet", "--out", str(tmp_path / "o")])[::2],
                     "run.sample_us")
    assert "links.h5" in line and "free" in line
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------
# 9. trace show on a cut-short trace
# ------------------------------------------------------------------------------------------------

def test_trace_show_says_truncated_and_unfinished(tmp_path):
    path = write(tmp_path, FABRIC + TRAFFIC + "[run]\nsample_us = 1\n")  # a batch of flows per sample
    assert run_main(["run", str(path), "--quiet", "--out", str(tmp_path / "o")])[0] == 0
    whole = tmp_path / "o" / "flows.arrows"
    code, out, err = run_main(["trace", "show", str(whole)])
    assert code == 0 and err == ""
    assert "truncated       no\n" in out and "flows           112\n" in out and "unfinished      0\n" in out
    data = whole.read_bytes()
    cut = tmp_path / "cut.arrows"
    cut.write_bytes(data[: len(data) // 2])
    code, out, err = run_main(["trace", "show", str(cut)])
    assert code == 0 and err == ""  # said in the output, not as a Python warning
    rows = read_flow_trace_quiet(cut).num_rows
    assert 0 < rows < 112
    assert "truncated       yes: the stream ends with a torn batch (the writer was stopped); " in out
    assert f"flows           {rows:,} records of the run's 112 flows\n" in out
    assert f"unfinished      {112 - rows:,}\n" in out


def read_flow_trace_quiet(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return read_flow_trace(path)


@pytest.mark.parametrize("engine", ["flow", "packet"])
def test_results_do_not_depend_on_the_engine_slices(engine, monkeypatch):
    """The drivers hand the kernels slices sized by wall time (Ctrl-C and progress between
    slices); the kernels pause and resume exactly, so any slicing gives the same run."""
    import fabricsim.engine as engine_mod

    fab = fabricsim.fat_tree(32, 100, gpus_per_server=4)
    rng = np.random.default_rng(3)
    src = rng.integers(0, 32, 150)
    dst = (src + rng.integers(1, 32, 150)) % 32
    size = rng.integers(1000, 2_000_000, 150)
    start = rng.integers(0, 1_000_000, 150)
    runs = []
    for events in (1, 5, 10**9):
        class Fixed(engine_mod._Slicer):
            def __init__(self, *args, _n=events, **kw):
                super().__init__(*args, **kw)
                self.events = _n

            def update(self, events_done):
                pass

        monkeypatch.setattr(engine_mod, "_Slicer", Fixed)
        r = fabricsim.simulate_flows(fab, src, dst, size, start, engine=engine, seed=1)
        runs.append((r.finish_ps.copy(), r.status))
    assert runs[0][1] == "done"
    for finish, status in runs[1:]:
        assert status == "done" and np.array_equal(finish, runs[0][0])
