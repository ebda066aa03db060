"""``fabricsim ocs allocate``."""

from __future__ import annotations

import json

import numpy as np

from fabricsim.cli import main
from fabricsim.workload.gating import REFERENCE_MATRIX


def test_allocate_reference_trace(tmp_path, capsys):
    path = tmp_path / "w.npy"
    np.save(path, REFERENCE_MATRIX * 8192)
    assert main(["ocs", "allocate", "--demand", str(path), "--alpha", "6", "--variant", "all",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["total_circuits"] == 24  # the paper's "24 optical circuits"
    assert out["minmax"]["completion_bound_s"] <= out["reference"]["completion_bound_s"]
    c = np.array(out["minmax"]["circuits"])
    assert (c == c.T).all() and c.sum(axis=1).max() <= 6
    assert main(["ocs", "allocate", "--demand", str(path)]) == 0
    assert "24 circuits" in capsys.readouterr().out


def test_allocate_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    assert main(["ocs", "allocate", "--demand", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fabricsim: error: --demand") and "square" in err
    assert main(["ocs", "allocate", "--demand", str(tmp_path / "none.npy")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_allocate_alpha_and_bound_format(tmp_path, capsys):
    path = tmp_path / "w.npy"
    np.save(path, REFERENCE_MATRIX)
    assert main(["ocs", "allocate", "--demand", str(path), "--alpha", "9"]) == 2
    assert "--alpha" in capsys.readouterr().err
    assert main(["ocs", "allocate", "--demand", str(path), "--variant", "all"]) == 0
    out = capsys.readouterr().out
    assert "us" in out and "0.001 ms" not in out   # small bounds keep their digits


def test_an_empty_or_one_server_demand_is_one_clear_error(tmp_path, capsys):
    """An empty CSV (NumPy warns and reads a 0 x 1 array), blank lines, an empty .npy file or a
    0 x 0 matrix: one error line, no warning; a 1 x 1 matrix has no server pair."""
    files = {"empty.csv": b"", "blank.csv": b"\n  \n", "empty.npy": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    np.save(tmp_path / "zero.npy", np.zeros((0, 0)))
    for name in [*files, "zero.npy"]:
        path = tmp_path / name
        assert main(["ocs", "allocate", "--demand", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == (f"fabricsim: error: --demand: {path} is empty; expected a "
                                     "square matrix of bytes\n")
    np.save(tmp_path / "one.npy", np.ones((1, 1)))
    assert main(["ocs", "allocate", "--demand", str(tmp_path / "one.npy")]) == 2
    assert capsys.readouterr().err == (
        "fabricsim: error: --demand: needs at least 2 servers (a circuit joins two), got a 1 x 1 "
        f"matrix in {tmp_path / 'one.npy'}\n")
