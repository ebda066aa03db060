"""Shared test configuration.

- puts this folder on ``sys.path`` so that tests can ``import naive`` (the plain reference
  implementations) under ``--import-mode=importlib``;
- registers the hypothesis profile: no deadlines (first calls may compile Numba kernels), and a
  derandomized, reproducible run when ``CI=true``.
"""

from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, settings

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

_CI = os.environ.get("CI", "").lower() == "true"

settings.register_profile(
    "fabricsim",
    deadline=None,
    derandomize=_CI,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fabricsim")
