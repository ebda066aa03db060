"""fabricsim: simulate GPU-cluster fabrics for Mixture-of-Experts training.

Python API (see the README):

- :mod:`fabricsim.fabric`: ``fat_tree``, ``rail_optimized``, :class:`~fabricsim.fabric.Fabric`
- :func:`simulate_flows`: a batch of flows on a fabric, flow-level engine
- :func:`load_scenario` / :func:`run_scenario`: the TOML scenarios of ``fabricsim run``
- :mod:`fabricsim.traces`: Arrow / HDF5 trace readers and writers
"""

__version__ = "0.1.0"

from fabricsim.config import Scenario, load_scenario  # noqa: E402
from fabricsim.errors import ConfigError, FabricsimError  # noqa: E402
from fabricsim.fabric import Fabric, fat_tree, rail_optimized  # noqa: E402
from fabricsim.scenario import run_scenario  # noqa: E402
from fabricsim.simulate import FlowResult, simulate_flows  # noqa: E402

__all__ = ["__version__", "Fabric", "fat_tree", "rail_optimized", "simulate_flows", "FlowResult",
           "Scenario", "load_scenario", "run_scenario", "ConfigError", "FabricsimError"]
