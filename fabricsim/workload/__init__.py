"""The MoE workload: which bytes move between which GPUs when, and how long the computation takes.

- :mod:`~fabricsim.workload.models`: the model catalog (:func:`get_model`, :data:`CATALOG`)
- :mod:`~fabricsim.workload.placement`: ranks on GPUs (:func:`place`)
- :mod:`~fabricsim.workload.gating`: expert load (reference, synthetic, trace)
- :mod:`~fabricsim.workload.compute`: the compute-time model (GPU profiles)
- :mod:`~fabricsim.workload.traffic`: byte formulas of every collective
- :mod:`~fabricsim.workload.taskgraph`: one iteration as a task DAG (:func:`build_iteration`)
- :func:`describe`: bytes by parallelism and link type, compute per stage, critical path
"""

from fabricsim.workload.describe import describe
from fabricsim.workload.models import CATALOG, MoEModel, get_model, load_model_toml, model_names
from fabricsim.workload.placement import Placement, place
from fabricsim.workload.taskgraph import TaskGraph, WorkloadConfig, build_iteration

__all__ = ["MoEModel", "CATALOG", "get_model", "load_model_toml", "model_names", "Placement",
           "place", "WorkloadConfig", "TaskGraph", "build_iteration", "describe"]
