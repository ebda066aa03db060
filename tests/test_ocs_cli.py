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
