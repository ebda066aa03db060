"""Per-link utilization time series in HDF5 (``links.h5``).

Layout (all datasets at the root):

=================  ======================  ==================================================
dataset            shape / type            meaning
=================  ======================  ==================================================
``time_ps``        int64[T]                end of each sampling interval
``utilization``    float32[L, T]           flow engine: mean utilization of each link over the
                                           interval (carried bits / (nominal capacity * interval))
``queue_bytes``    float32[L, T]           packet engine: queue length of each link (bytes) at
                                           the sample time
``link_src``       int64[L]                source node of each link
``link_dst``       int64[L]                destination node
``link_kind``      int8[L]                 0 nvlink, 1 eps, 2 ocs
``capacity_bps``   float64[L]              nominal capacity
=================  ======================  ==================================================

The series (``utilization`` or ``queue_bytes``) is chunked along time and grows as samples arrive; samples are buffered and
written (and the file flushed) in batches, in HDF5's single-writer/multiple-reader mode, so a file
whose writer was killed holds every flushed batch and stays readable. Root attributes carry the
schema version and the resolved scenario.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from fabricsim.traces.schema import Closeable, metadata, read_metadata

__all__ = ["LinkTraceWriter", "read_link_trace"]


class LinkTraceWriter(Closeable):
    """Buffers per-link samples and appends them to ``path`` every ``batch`` samples."""

    def __init__(self, path, link_src, link_dst, link_kind, capacity_bps, scenario: dict | None = None,
                 batch: int = 64, series: str = "utilization"):
        self.path = os.fspath(path)
        n_links = int(np.asarray(capacity_bps).shape[0])
        self.n_links = n_links
        self.batch = max(1, int(batch))
        self._times: list[int] = []
        self._rows: list[np.ndarray] = []
        self._file = h5py.File(self.path, "w", libver="latest")
        for key, value in metadata(scenario).items():
            self._file.attrs[key] = value
        self._file.create_dataset("link_src", data=np.asarray(link_src, np.int64))
        self._file.create_dataset("link_dst", data=np.asarray(link_dst, np.int64))
        self._file.create_dataset("link_kind", data=np.asarray(link_kind, np.int8))
        self._file.create_dataset("capacity_bps", data=np.asarray(capacity_bps, np.float64))
        self._time = self._file.create_dataset("time_ps", shape=(0,), maxshape=(None,), dtype=np.int64,
                                               chunks=(1024,))
        self.series = series
        self._util = self._file.create_dataset(
            series, shape=(n_links, 0), maxshape=(n_links, None), dtype=np.float32,
            chunks=(max(1, min(n_links, 4096)), 64))
        self._file.swmr_mode = True
        self._file.flush()

    def write(self, time_ps: int, values) -> None:
        """Add one sample: its time and ``float[L]`` values of the series."""
        self._times.append(int(time_ps))
        self._rows.append(np.asarray(values, np.float32))
        if len(self._times) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Append the buffered samples to the file and flush it."""
        if not self._times:
            return
        n_old = self._time.shape[0]
        n_new = n_old + len(self._times)
        self._util.resize((self.n_links, n_new))
        self._util[:, n_old:n_new] = np.stack(self._rows, axis=1)
        self._time.resize((n_new,))
        self._time[n_old:n_new] = np.asarray(self._times, np.int64)
        self._times.clear()
        self._rows.clear()
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None


def read_link_trace(path) -> dict:
    """Every dataset of a link trace as NumPy arrays, plus ``schema_version`` and ``scenario``."""
    with h5py.File(os.fspath(path), "r", libver="latest", swmr=True) as f:
        out = {name: f[name][()] for name in f}
        series = "utilization" if "utilization" in out else "queue_bytes"
        n = min(out["time_ps"].shape[0], out[series].shape[1])
        out["time_ps"], out[series] = out["time_ps"][:n], out[series][:, :n]
        out.update(read_metadata(dict(f.attrs)))
    return out
