"""The command line as a separate process: Ctrl-C, a closed pipe, --version.

These run ``python -m fabricsim`` in a child process, the way a user's shell runs it, with this
test run's environment (so the same Numba cache).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from fabricsim.cliutil import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED

# A flow-engine run of about 7 s: an all-to-all in groups of 64 over 1024 GPUs.
LONG_SCENARIO = """
[fabric]
hosts = 1024
link_gbps = 100

[traffic]
pattern = "all_to_all"
group_size = 64
size_min_bytes = 65536
size_max_bytes = 4194304
seed = 1

[run]
sample_us = 0
"""


def _fabricsim(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fabricsim", *args], text=True, **kw)


def test_ctrl_c_stops_a_run_with_exit_130(tmp_path):
    scenario = tmp_path / "long.toml"
    scenario.write_text(LONG_SCENARIO)
    out = tmp_path / "out"
    # A shell without job control starts background jobs (e.g. `.ci/run &`) with SIGINT ignored,
    # and a child inherits that; the user's terminal delivers Ctrl-C to a default disposition.
    proc = _fabricsim("run", str(scenario), "--out", str(out), "--quiet",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "flows.arrows").exists():  # the run has started simulating
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # pragma: no cover - only when the test fails
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, (stdout, stderr)
    assert stderr.strip().splitlines()[-1] == "fabricsim: interrupted"
    assert "Traceback" not in stderr
    # A killed run leaves a readable trace and no summary claiming it finished.
    assert not (out / "summary.json").exists()
    from fabricsim.traces import read_flow_trace

    table = read_flow_trace(out / "flows.arrows")
    assert table.num_rows < 1024 * 63


@pytest.mark.parametrize("argv", [["workload", "models"],
                                  ["cost", "--fabric", "all", "--gpus", "1024", "--link-gbps", "all"]])
def test_a_closed_pipe_ends_quietly(argv):
    """``fabricsim ... | head -0``: the reader is gone before the first line; no error message."""
    proc = _fabricsim(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert stderr == ""


def test_version_names_the_numba_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = _fabricsim("--version", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    lines = stdout.splitlines()
    from fabricsim import __version__

    assert lines[0] == f"fabricsim {__version__}"
    assert lines[1].startswith(f"Numba cache: {tmp_path / 'cache' / 'fabricsim' / 'numba'} ")
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "chosen")
    proc = _fabricsim("--version", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert f"Numba cache: {tmp_path / 'chosen'} " in proc.communicate(timeout=120)[0]


def test_the_default_cache_is_outside_the_package(tmp_path):
    """Without NUMBA_CACHE_DIR, kernels are cached in the user cache folder, never beside the
    package's sources (where pip does not know about them)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    code = ("import numpy as np, numba; from fabricsim._jit import CACHE_DIR; "
            "from fabricsim.kernels.maxmin import max_min_fair; "
            "max_min_fair(np.array([0, 1]), np.array([0]), np.array([8.0])); "
            "print(CACHE_DIR); print(numba.config.CACHE_DIR)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = str(tmp_path / "cache" / "fabricsim" / "numba")
    assert proc.stdout.split() == [expected, expected]
    cached = [f for _, _, files in os.walk(expected) for f in files if f.endswith((".nbi", ".nbc"))]
    assert cached, "max_min_fair was not cached in the user cache folder"
