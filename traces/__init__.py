"""Trace schemas, streaming writers and readers (installed as ``fabricsim.traces``).

- :mod:`fabricsim.traces.flows`  Arrow IPC *stream* of completed flows (``flows.arrows``)
- :mod:`fabricsim.traces.links`  HDF5 time series of per-link utilization (``links.h5``)
- :class:`RunTrace`              both, for one run, in one output directory

Every file carries ``fabricsim.schema_version`` and the resolved scenario (JSON) in its metadata.
Streams are flushed batch by batch, so a run killed half-way leaves readable files.
"""

import importlib

# Imported on first use (PEP 562): PyArrow and h5py cost about 40 MiB of memory and are not
# needed by runs that write no traces (sweep workers, the engines on their own).
_WHERE = {"FLOW_SCHEMA": "flows", "FlowTraceWriter": "flows", "read_flow_trace": "flows",
          "scan_flow_trace": "flows",
          "to_parquet": "flows", "LinkTraceWriter": "links", "read_link_trace": "links",
          "RunTrace": "run", "SCHEMA_VERSION": "schema", "read_metadata": "schema"}

__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"fabricsim.traces.{_WHERE[name]}"), name)


def __dir__():
    return sorted(list(globals()) + __all__)
