"""Traces (fabricsim.traces): Arrow IPC flow streams, HDF5 link series, Parquet, killed runs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fabricsim
from fabricsim.cli import main
from fabricsim.traces import (FLOW_SCHEMA, SCHEMA_VERSION, FlowTraceWriter, LinkTraceWriter, RunTrace,
                              read_flow_trace, read_link_trace, read_metadata, scan_flow_trace,
                              to_parquet)
from fabricsim.traces.flows import PATH_KIND_NAMES

SCENARIO = {"name": "t", "fabric": {"hosts": 16, "link_gbps": 100.0}, "traffic": {"pattern": "incast"},
            "nested": {"list": [1, 2.5, "x"], "none": None}}


def write_batches(path, batches, scenario=SCENARIO, close=True):
    w = FlowTraceWriter(path, scenario)
    for b in batches:
        w.write(*b)
    if close:
        w.close()
    return w


def batch(lo, hi, seed=0):
    r = np.random.default_rng(seed)
    n = hi - lo
    start = r.integers(0, 1000, n)
    return (np.arange(lo, hi), r.integers(0, 16, n), r.integers(0, 16, n), r.integers(0, 10**9, n),
            start, start + r.integers(1, 1000, n), r.integers(0, 4, n).astype(np.int8))


def assert_rows(table, batches):
    cols = ["flow_id", "src", "dst", "size_bytes", "start_ps", "finish_ps"]
    for i, name in enumerate(cols):
        np.testing.assert_array_equal(table.column(name).to_numpy(),
                                      np.concatenate([b[i] for b in batches]))
    kinds = np.concatenate([b[6] for b in batches])
    assert table.column("path_kind").to_pylist() == [PATH_KIND_NAMES[k] for k in kinds]


# ------------------------------------------------------------------------------------------------
# flows.arrows
# ------------------------------------------------------------------------------------------------

def test_flow_trace_roundtrip(tmp_path):
    path = tmp_path / "flows.arrows"
    batches = [batch(0, 10, 1), batch(10, 11, 2), batch(11, 50, 3)]
    with FlowTraceWriter(path, SCENARIO) as w:
        for b in batches:
            w.write(*b)
        assert w.rows == 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a closed stream reads without warnings
        table = read_flow_trace(path)
    assert table.num_rows == 50
    assert table.schema.remove_metadata() == FLOW_SCHEMA
    assert_rows(table, batches)
    meta = table.schema.metadata
    assert meta[b"fabricsim.schema_version"] == str(SCHEMA_VERSION).encode()
    assert json.loads(meta[b"fabricsim.scenario"]) == SCENARIO
    assert read_metadata(meta) == {"schema_version": SCHEMA_VERSION, "scenario": SCENARIO, "flows": None}
    # a plain pyarrow reader sees the same stream
    with pa.OSFile(str(path)) as f:
        assert pa.ipc.open_stream(f).read_all().num_rows == 50


def test_flow_trace_numpy_scalars_in_scenario(tmp_path):
    path = tmp_path / "f.arrows"
    write_batches(path, [batch(0, 3)], scenario={"k": np.int64(8), "r": np.float32(0.5),
                                                 "a": np.arange(3)})
    assert read_metadata(read_flow_trace(path).schema.metadata)["scenario"] == {"k": 8, "r": 0.5,
                                                                                "a": [0, 1, 2]}


def test_flow_trace_empty_and_no_scenario(tmp_path):
    path = tmp_path / "flows.arrows"
    write_batches(path, [], scenario=None)
    table = read_flow_trace(path)
    assert table.num_rows == 0 and table.schema.remove_metadata() == FLOW_SCHEMA
    assert read_metadata(table.schema.metadata) == {"schema_version": SCHEMA_VERSION, "scenario": {},
                                                    "flows": None}


def test_flow_trace_readable_while_open_and_after_cut(tmp_path):
    path = tmp_path / "flows.arrows"
    batches = [batch(0, 10, 1), batch(10, 30, 2), batch(30, 31, 3)]
    w = write_batches(path, batches, close=False)
    # writer still open (no end-of-stream marker): every flushed batch is readable
    assert_rows(read_flow_trace(path), batches)
    assert scan_flow_trace(path)[1:3] == (3, "unterminated")
    w.close()
    assert scan_flow_trace(path)[1:3] == (3, None)
    data = path.read_bytes()
    # cut inside the last batch: the complete ones survive, with a warning
    sizes = []
    for cut in range(len(data) - 1, 0, -37):
        p = tmp_path / "cut.arrows"
        p.write_bytes(data[:cut])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = read_flow_trace(p)
        except ValueError:  # cut inside the schema message
            continue
        assert scan_flow_trace(p).cut in ("torn", "unterminated")  # never taken for a whole stream
        n = t.num_rows
        assert n in (0, 10, 30, 31)
        if n:
            assert_rows(t, batches[:{10: 1, 30: 2, 31: 3}[n]])
        sizes.append(n)
    assert {0, 10, 30} <= set(sizes)
    p.write_bytes(data[: len(data) - 20])
    with pytest.warns(RuntimeWarning, match="torn"):
        read_flow_trace(p)


def test_read_flow_trace_rejects_non_arrow(tmp_path):
    p = tmp_path / "x.arrows"
    p.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable Arrow IPC stream"):
        read_flow_trace(p)
    p.write_bytes(b"hello world, this is not arrow at all")
    with pytest.raises(ValueError):
        read_flow_trace(p)


def test_to_parquet_temp_then_rename(tmp_path, monkeypatch):
    src = tmp_path / "flows.arrows"
    batches = [batch(0, 20, 1), batch(20, 25, 2)]
    write_batches(src, batches)
    calls = []
    real_write = pq.write_table

    def spy(table, where, *a, **kw):
        calls.append(os.fspath(where))
        assert not os.path.exists(tmp_path / "flows.parquet")  # the final name appears only at the end
        return real_write(table, where, *a, **kw)

    monkeypatch.setattr(pq, "write_table", spy)
    out = to_parquet(src)
    assert out == str(tmp_path / "flows.parquet")
    assert len(calls) == 1 and calls[0] != out and os.path.dirname(calls[0]) == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["flows.arrows", "flows.parquet"]
    t = pq.read_table(out)
    assert_rows(t, batches)
    assert read_metadata(t.schema.metadata) == {"schema_version": SCHEMA_VERSION, "scenario": SCENARIO,
                                                "flows": None}
    monkeypatch.undo()
    # explicit output and overwrite
    out2 = to_parquet(src, tmp_path / "sub.parquet")
    assert out2 == str(tmp_path / "sub.parquet") and pq.read_table(out2).num_rows == 25
    assert to_parquet(src, out2) == out2


# ------------------------------------------------------------------------------------------------
# links.h5
# ------------------------------------------------------------------------------------------------

def make_link_writer(path, n_links=5, batch=4, scenario=SCENARIO):
    src = np.arange(n_links)
    return LinkTraceWriter(path, src, src + 1, np.arange(n_links) % 3, np.linspace(1e9, 5e9, n_links),
                           scenario, batch=batch)


def test_link_trace_roundtrip(tmp_path):
    path = tmp_path / "links.h5"
    L, T = 5, 10
    util = np.random.default_rng(0).random((L, T)).astype(np.float32)
    times = (np.arange(T) + 1) * 1000
    with make_link_writer(path, L, batch=4) as w:
        for t in range(T):
            w.write(times[t], util[:, t])
    d = read_link_trace(path)
    assert d["utilization"].shape == (L, T) and d["utilization"].dtype == np.float32
    np.testing.assert_array_equal(d["utilization"], util)
    np.testing.assert_array_equal(d["time_ps"], times)
    assert d["time_ps"].dtype == np.int64
    np.testing.assert_array_equal(d["link_src"], np.arange(L))
    np.testing.assert_array_equal(d["link_dst"], np.arange(L) + 1)
    np.testing.assert_array_equal(d["link_kind"], np.arange(L) % 3)
    assert d["link_kind"].dtype == np.int8
    np.testing.assert_allclose(d["capacity_bps"], np.linspace(1e9, 5e9, L))
    assert d["schema_version"] == SCHEMA_VERSION and d["scenario"] == SCENARIO
    with h5py.File(path, "r") as f:
        ds = f["utilization"]
        assert ds.maxshape == (L, None)  # resizable along time
        assert ds.chunks is not None and ds.chunks[0] == L and ds.chunks[1] < 1000  # chunked along time
        assert f["time_ps"].maxshape == (None,)
        assert f.attrs["fabricsim.schema_version"] == str(SCHEMA_VERSION)
        assert json.loads(f.attrs["fabricsim.scenario"]) == SCENARIO


def test_link_trace_flushes_per_batch(tmp_path):
    path = tmp_path / "links.h5"
    w = make_link_writer(path, 3, batch=4)
    try:
        assert read_link_trace(path)["utilization"].shape == (3, 0)  # readable before any sample
        for t in range(9):
            w.write((t + 1) * 10, np.full(3, t / 10))
        d = read_link_trace(path)  # read by another handle while the writer is open (SWMR)
        assert d["utilization"].shape == (3, 8) and d["time_ps"].tolist() == [10, 20, 30, 40, 50, 60, 70, 80]
        w.flush()
        assert read_link_trace(path)["time_ps"].size == 9
    finally:
        w.close()
    assert read_link_trace(path)["utilization"].shape == (3, 9)


def test_run_trace(tmp_path):
    fab = fabricsim.fat_tree(16, 100, gpus_per_server=4)
    with pytest.raises(ValueError, match="sample_ps"):
        RunTrace(tmp_path / "a", fabric=fab, sample_ps=0)
    with pytest.raises(ValueError, match="sample_ps"):
        RunTrace(tmp_path / "a", fabric=fab, sample_ps=1.5)
    with RunTrace(tmp_path / "b", fabric=fab) as tr:
        assert tr.links_path is None and tr.links is None
    assert sorted(os.listdir(tmp_path / "b")) == ["flows.arrows"]

    src = np.arange(16)
    dst = (src + 4) % 16
    sample_ps = 2_000_000
    with RunTrace(tmp_path / "c", fabric=fab, scenario=SCENARIO, sample_ps=sample_ps) as tr:
        res = fabricsim.simulate_flows(fab, src, dst, 100_000, trace=tr)
    t = read_flow_trace(tmp_path / "c" / "flows.arrows").to_pandas().sort_values("flow_id")
    np.testing.assert_array_equal(t["finish_ps"], res.finish_ps)
    np.testing.assert_array_equal(t["src"], src)
    np.testing.assert_array_equal(t["dst"], dst)
    d = read_link_trace(tmp_path / "c" / "links.h5")
    assert d["utilization"].shape == (fab.n_links, d["time_ps"].size)
    assert d["time_ps"][-1] == res.completion_ps
    assert np.all(d["time_ps"][:-1] == sample_ps * np.arange(1, d["time_ps"].size))
    assert np.all(d["utilization"] >= 0) and np.all(d["utilization"] <= 1 + 1e-5)
    # the utilization integrates to the bytes each link carried
    intervals = np.diff(np.concatenate([[0], d["time_ps"]])) * 1e-12
    carried = (d["utilization"] * fab.links.capacity_bps[:, None] * intervals).sum(axis=1) / 8
    np.testing.assert_allclose(carried, res.link_bytes, rtol=1e-5, atol=1)
    np.testing.assert_array_equal(d["capacity_bps"], fab.links.capacity_bps)
    assert d["scenario"] == SCENARIO


def test_simulate_flows_trace_dir(tmp_path):
    fab = fabricsim.fat_tree(16, 100, gpus_per_server=4)
    src = np.arange(16)
    res = fabricsim.simulate_flows(fab, src, (src + 1) % 16, 5000, trace=str(tmp_path / "run"))
    assert sorted(os.listdir(tmp_path / "run")) == ["flows.arrows"]
    t = read_flow_trace(tmp_path / "run" / "flows.arrows")
    assert sorted(t.column("flow_id").to_pylist()) == list(range(16))
    meta = read_metadata(t.schema.metadata)
    assert meta["scenario"]["fabric"]["hosts"] == 16 and meta["scenario"]["run"]["flows"] == 16


# ------------------------------------------------------------------------------------------------
# A run killed half-way leaves readable traces
# ------------------------------------------------------------------------------------------------

# Staggered flows on a small fat-tree, sampled every 100 ns, with a short sleep per engine slice:
# the real RunTrace + simulate_flows path, running for tens of seconds unless killed.
CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import fabricsim
    from fabricsim.traces import RunTrace

    out = sys.argv[1]
    fab = fabricsim.fat_tree(16, 100, gpus_per_server=4)
    n = 4000
    src = np.arange(n) % 16
    dst = (src + 1 + (np.arange(n) // 16) % 15) % 16
    start = np.arange(n, dtype=np.int64) * 1_000_000  # one flow per microsecond
    tr = RunTrace(out, fabric=fab, scenario={"name": "killed"}, sample_ps=100_000, flows=n)
    print("HEADER", os.path.getsize(tr.flows_path), flush=True)
    samples = [0]
    ready = [False]
    write_link_sample = tr.write_link_sample

    def counting_sample(*args):
        write_link_sample(*args)
        samples[0] += 1

    tr.write_link_sample = counting_sample

    def progress(done, total, now_ps):
        # two batches of samples flushed to links.h5 and some flows to flows.arrows
        if not ready[0] and tr.flows.rows > 0 and samples[0] >= 2 * tr.links.batch:
            ready[0] = True
            print("READY", tr.flows.rows, samples[0], flush=True)
        time.sleep(0.002)

    fabricsim.simulate_flows(fab, src, dst, 100_000, start, trace=tr, progress=progress)
    tr.close()
    print("FINISHED", flush=True)
""")


def test_killed_run_leaves_readable_traces(tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    flows, links = out / "flows.arrows", out / "links.h5"
    try:
        deadline = time.monotonic() + 120  # generous: a cold Numba cache compiles first
        header = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"child exited early: {proc.returncode} {lines} {proc.stderr.read()}"
            if header is None:
                header = next((int(ln.split()[1]) for ln in list(lines) if ln.startswith("HEADER")), None)
            if (header is not None and any(ln.startswith("READY") for ln in list(lines))
                    and flows.stat().st_size > header and links.exists()):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"child not ready in time: {lines}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not any(ln.startswith("FINISHED") for ln in lines)

    # flows.arrows: every complete batch, valid rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a torn tail is allowed
        table = read_flow_trace(flows)
    assert 0 < table.num_rows < 4000
    t = table.to_pandas()
    ids = t["flow_id"].to_numpy()
    assert np.unique(ids).size == ids.size and ids.min() >= 0 and ids.max() < 4000
    src = ids % 16
    np.testing.assert_array_equal(t["src"], src)
    np.testing.assert_array_equal(t["dst"], (src + 1 + (ids // 16) % 15) % 16)
    np.testing.assert_array_equal(t["start_ps"], ids * 1_000_000)
    assert (t["size_bytes"] == 100_000).all()
    assert (t["finish_ps"] > t["start_ps"]).all()  # only completed flows were written before the kill
    assert set(t["path_kind"].astype(str)) <= set(PATH_KIND_NAMES)
    assert read_metadata(table.schema.metadata) == {"schema_version": SCHEMA_VERSION,
                                                    "scenario": {"name": "killed"}, "flows": 4000}
    # the stream says it was cut short (torn or not, it has no end marker)
    assert scan_flow_trace(flows).cut in ("torn", "unterminated")

    # links.h5: opens, consistent arrays, at least one flushed batch
    d = read_link_trace(links)
    n_links = d["capacity_bps"].size
    T = d["time_ps"].size
    assert T >= 64
    assert d["utilization"].shape == (n_links, T)
    assert d["link_src"].shape == d["link_dst"].shape == d["link_kind"].shape == (n_links,)
    np.testing.assert_array_equal(d["time_ps"], 100_000 * np.arange(1, T + 1))
    assert np.all(np.isfinite(d["utilization"])) and np.all(d["utilization"] >= 0)
    assert np.all(d["utilization"] <= 1 + 1e-5) and d["utilization"].max() > 0
    assert d["scenario"] == {"name": "killed"}

    # the CLI summarizes the cut-short trace
    outbuf, errbuf = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(outbuf), contextlib.redirect_stderr(errbuf), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        code = main(["trace", "show", str(flows)])
    assert code == 0, errbuf.getvalue()
    shown = outbuf.getvalue()
    assert f"flows           {table.num_rows:,} records of the run's 4,000 flows" in shown
    assert "truncated       yes: the stream" in shown and "(the writer was stopped)" in shown
    assert f"unfinished      {4000 - table.num_rows:,}\n" in shown


def test_replaced_on_success(tmp_path):
    from fabricsim.traces.schema import replaced_on_success

    path = tmp_path / "r.txt"
    with replaced_on_success(path) as tmp:
        open(tmp, "w").write("ok")
    assert path.read_text() == "ok" and sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]
    with pytest.raises(RuntimeError):
        with replaced_on_success(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "ok" and sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]
