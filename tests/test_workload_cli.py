"""``fabricsim workload``: models, describe (text and JSON), record, and one-line errors."""

from __future__ import annotations

import json

import pytest

from fabricsim.cli import main
from fabricsim.workload import CATALOG
from fabricsim.workload.gating import read_trace


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_models_lists_the_catalog(capsys):
    rc, out, _ = run(capsys, "workload", "models")
    assert rc == 0
    for name in ("mixtral-8x7b", "mixtral-8x22b", "llama-moe", "qwen-moe", "deepseek-r1"):
        assert name in out
    rc, out, _ = run(capsys, "workload", "models", "--json")
    assert set(json.loads(out)) == set(CATALOG)


SHAPE = ["--model", "mixtral-8x7b", "--gpus", "32", "--tp", "2", "--ep", "4", "--pp", "2",
         "--micro-batch", "1", "--seq-len", "256"]


def test_describe_json_has_the_promised_keys(capsys):
    rc, out, _ = run(capsys, "workload", "describe", *SHAPE, "--json")
    assert rc == 0
    d = json.loads(out)
    assert set(d["bytes_by_parallelism"]) == {"tp", "ep", "dp", "pp"}
    assert all(isinstance(v, int) for v in d["bytes_by_parallelism"].values())
    assert d["compute_time_s"] > 0 and d["tasks"] > 0
    assert d["placement"]["dp"] == 2  # derived: 32 / (2 * 2 * 4)


def test_describe_text(capsys):
    rc, out, _ = run(capsys, "workload", "describe", *SHAPE)
    assert rc == 0
    for word in ("bytes per iteration", "nvlink", "network", "stage 1", "critical path"):
        assert word in out


def test_record_then_replay(tmp_path, capsys):
    path = str(tmp_path / "load.arrows")
    rc, out, _ = run(capsys, "workload", "record", "--model", "mixtral-8x7b", "--ep", "4",
                     "--iterations", "2", "--micro-batches", "2", "--micro-batch", "1",
                     "--seq-len", "256", "--out", path)
    assert rc == 0 and path in out
    cols = read_trace(path)
    assert set(cols["iteration"].tolist()) == {0, 1} and cols["layer"].max() == 31
    rc, out, _ = run(capsys, "workload", "describe", *SHAPE, "--gating", "trace",
                     "--gating-trace", path, "--json")
    assert rc == 0
    synthetic = json.loads(out)
    rc, out, _ = run(capsys, "workload", "describe", *SHAPE, "--gating", "synthetic", "--json")
    assert json.loads(out)["bytes_by_parallelism"] == synthetic["bytes_by_parallelism"]


def test_gating_params_reach_the_generator(capsys):
    loads = []
    for skew in ("0.0", "2.0"):
        rc, out, _ = run(capsys, "workload", "describe", *SHAPE, "--gating", "synthetic",
                         "--gating-param", f"skew={skew}", "--gating-param", "noise=0", "--json",
                         "--compute-pacing", "load")
        assert rc == 0
        loads.append(json.loads(out)["compute_per_stage"][0]["fwd_s"])
    assert loads[1] > loads[0]  # a skewed load makes the busiest GPU slower
    rc, _, err = run(capsys, "workload", "describe", *SHAPE, "--gating", "synthetic",
                     "--gating-param", "colour=1")
    assert rc == 2 and "gating.colour" in err


@pytest.mark.parametrize("argv, message", [
    (["--model", "gpt-9", "--gpus", "8"], "model: unknown model 'gpt-9'"),
    (["--model", "mixtral-8x7b", "--gpus", "128", "--tp", "4", "--ep", "8", "--pp", "3"],
     "--dp: cannot be derived"),
    (["--model", "mixtral-8x7b", "--gpus", "128", "--tp", "4", "--ep", "8", "--pp", "4",
      "--dp", "2"], "parallelism: dp * tp * pp * ep must equal the GPU count 128"),
    (["--model", "deepseek-r1", "--gpus", "1024", "--ep", "64", "--pp", "16"],
     "--layer-split balanced"),
    (["--model", "mixtral-8x7b", "--gpus", "8", "--ep", "8", "--gating", "trace"],
     "--gating-trace: is required"),
])
def test_describe_errors_are_one_line(capsys, argv, message):
    rc, out, err = run(capsys, "workload", "describe", *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fabricsim: error: ") and message in err
