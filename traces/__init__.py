"""Trace schemas, streaming writers and readers (installed as ``fabricsim.traces``).

- :mod:`fabricsim.traces.flows`  Arrow IPC *stream* of completed flows (``flows.arrows``)
- :mod:`fabricsim.traces.links`  HDF5 time series of per-link utilization (``links.h5``)
- :class:`RunTrace`              both, for one run, in one output directory

Every file carries ``fabricsim.schema_version`` and the resolved scenario (JSON) in its metadata.
Streams are flushed batch by batch, so a run killed half-way leaves readable files.
"""

from fabricsim.traces.flows import FLOW_SCHEMA, FlowTraceWriter, read_flow_trace, to_parquet
from fabricsim.traces.links import LinkTraceWriter, read_link_trace
from fabricsim.traces.run import RunTrace
from fabricsim.traces.schema import SCHEMA_VERSION, read_metadata

__all__ = ["FLOW_SCHEMA", "FlowTraceWriter", "read_flow_trace", "to_parquet", "LinkTraceWriter",
           "read_link_trace", "RunTrace", "SCHEMA_VERSION", "read_metadata"]
