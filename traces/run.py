"""All traces of one run, in one output directory: ``flows.arrows`` and ``links.h5``.

A run owns its output directory: :class:`RunTrace` first removes the files a previous run wrote
there (:data:`RUN_FILES`: ``summary.json`` first, so that no result of an old run ever stands
beside the traces of a new one, then the traces and any leftover temporaries), and leaves every
other file alone. ``summary.json`` (:mod:`fabricsim.scenario`) is written last.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from fabricsim.traces.flows import FlowTraceWriter
from fabricsim.traces.links import LinkTraceWriter
from fabricsim.traces.schema import Closeable

__all__ = ["RunTrace", "RUN_FILES", "clear_run_files"]

#: The files a run writes into its output directory, in the order a new run removes them.
RUN_FILES = ("summary.json", "flows.arrows", "links.h5")


def clear_run_files(out_dir) -> None:
    """Remove what a previous run wrote into ``out_dir``: each of :data:`RUN_FILES` (summary first)
    and its temporary (``NAME.tmp``, from :func:`fabricsim.traces.schema.replaced_on_success`)."""
    for name in RUN_FILES:
        for path in (os.path.join(out_dir, name), os.path.join(out_dir, name + ".tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


class RunTrace(Closeable):
    """Trace sinks of one run in ``out_dir``.

    ``flows.arrows`` always; ``links.h5`` when ``sample_ps`` is given, one sample per ``sample_ps``
    of simulated time: per-link utilization (flow engine) or queue lengths (packet engine).
    ``fabric`` supplies the link arrays; ``flows`` (optional) the run's flow count, recorded in
    the flow trace's metadata. Opening it removes a previous run's files (:func:`clear_run_files`).
    """

    def __init__(self, out_dir, *, fabric, scenario: dict | None = None, sample_ps: int | None = None,
                 flows: int | None = None):
        self.out_dir = os.fspath(out_dir)
        if sample_ps is not None and (int(sample_ps) != sample_ps or sample_ps <= 0):
            raise ValueError(f"sample_ps: must be a positive integer, got {sample_ps!r}")
        os.makedirs(self.out_dir, exist_ok=True)
        clear_run_files(self.out_dir)
        self.sample_ps = None if sample_ps is None else int(sample_ps)
        self.flows_path = os.path.join(self.out_dir, "flows.arrows")
        self.links_path = os.path.join(self.out_dir, "links.h5") if self.sample_ps else None
        self.flows = FlowTraceWriter(self.flows_path, scenario, flows)
        self._capacity = fabric.links.capacity_bps
        self._fabric_links = fabric.links
        self._scenario = scenario
        self._last_sample_ps = None
        self.links = None

    def _links_writer(self, series: str) -> LinkTraceWriter:
        if self.links is None:
            links = self._fabric_links
            self.links = LinkTraceWriter(self.links_path, links.src, links.dst, links.kind,
                                         links.capacity_bps, self._scenario, series=series)
        return self.links

    @property
    def files(self) -> list[str]:
        """Paths of the files this trace wrote (``links.h5`` only once a sample was taken)."""
        return [self.flows_path] + ([self.links_path] if self.links is not None else [])

    def write_flows(self, flow_id, src, dst, size_bytes, start_ps, finish_ps, path_kind) -> None:
        self.flows.write(flow_id, src, dst, size_bytes, start_ps, finish_ps, path_kind)

    def write_link_sample(self, time_ps: int, bytes_in_interval) -> None:
        """Record the bytes each link carried in the interval ending at ``time_ps``."""
        start = self._last_sample_ps if self._last_sample_ps is not None else time_ps - self.sample_ps
        interval_s = max(time_ps - start, 1) * 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            util = np.where(self._capacity > 0, bytes_in_interval * 8.0 / (self._capacity * interval_s), 0.0)
        self._links_writer("utilization").write(time_ps, util)
        self._last_sample_ps = time_ps

    def write_queue_sample(self, time_ps: int, queue_bytes) -> None:
        """Record every link's queue length (bytes) at ``time_ps``."""
        self._links_writer("queue_bytes").write(time_ps, queue_bytes)

    def close(self) -> None:
        self.flows.close()
        if self.links is not None:
            self.links.close()
