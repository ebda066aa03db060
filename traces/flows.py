"""Flow records as an Arrow IPC stream (``.arrows``).

One record per flow, written in batches as flows complete (and, at the end of a run, for the
flows that did not finish, with ``finish_ps = -1``). Schema :data:`FLOW_SCHEMA`:

======================  ======================  ==========================================
column                  type                    meaning
======================  ======================  ==========================================
``flow_id``             int64                   index of the flow in the run's input
``src``, ``dst``        int64                   host indices
``size_bytes``          int64                   bytes to deliver
``start_ps``            int64                   arrival time
``finish_ps``           int64                   completion time, -1 if unfinished
``path_kind``           dictionary<string>      nvlink, tor, pod, core, ocs, direct, multihop (fabricsim.fabric.PATH_KINDS)
======================  ======================  ==========================================

The stream is flushed after every batch; :func:`read_flow_trace` reads every complete batch of a
stream whose writer was killed and reports the torn tail instead of failing
(:func:`scan_flow_trace` says whether, and how, a stream was cut short). The schema metadata
holds the run's flow count (``fabricsim.flows``) when the writer knew it.
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fabricsim.traces.schema import Closeable, metadata, replaced_on_success

__all__ = ["FLOW_SCHEMA", "FlowTraceWriter", "read_flow_trace", "scan_flow_trace", "FlowTraceScan",
           "to_parquet", "PATH_KIND_NAMES"]

PATH_KIND_NAMES = ("nvlink", "tor", "pod", "core", "ocs", "direct", "multihop")  # = fabric.PATH_KINDS

FLOW_SCHEMA = pa.schema([
    ("flow_id", pa.int64()),
    ("src", pa.int64()),
    ("dst", pa.int64()),
    ("size_bytes", pa.int64()),
    ("start_ps", pa.int64()),
    ("finish_ps", pa.int64()),
    ("path_kind", pa.dictionary(pa.int8(), pa.string())),
])


def _int_array(values, np_type, pa_type) -> pa.Array:
    """A NumPy integer column as an Arrow array, zero-copy. (``pa.array`` would import pandas
    to ask whether its argument is a pandas object: 0.4 s of a run's start where it is installed.)"""
    a = np.ascontiguousarray(values, dtype=np_type)
    return pa.Array.from_buffers(pa_type, a.size, [None, pa.py_buffer(a)])


def _string_array(values) -> pa.Array:
    """Python strings as an Arrow string array (offsets and UTF-8 data buffers)."""
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(data),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


class FlowTraceWriter(Closeable):
    """Streams flow records to ``path`` (Arrow IPC stream), flushing after every batch; ``flows``
    (optional) is the run's flow count, recorded in the metadata."""

    def __init__(self, path, scenario: dict | None = None, flows: int | None = None):
        self.path = os.fspath(path)
        self.schema = FLOW_SCHEMA.with_metadata(metadata(scenario, flows))
        self._file = open(self.path, "wb")
        self._writer = pa.ipc.new_stream(self._file, self.schema)
        self._file.flush()
        self._kinds = _string_array(PATH_KIND_NAMES)
        self.rows = 0

    def write(self, flow_id, src, dst, size_bytes, start_ps, finish_ps, path_kind) -> None:
        """Append one batch of records (arrays of equal length; ``path_kind`` int8 codes)."""
        cols = [_int_array(c, np.int64, pa.int64())
                for c in (flow_id, src, dst, size_bytes, start_ps, finish_ps)]
        kinds = pa.DictionaryArray.from_arrays(_int_array(path_kind, np.int8, pa.int8()), self._kinds)
        batch = pa.record_batch(cols + [kinds], schema=self.schema)
        self._writer.write_batch(batch)
        self._file.flush()
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._file is not None:
            self._writer.close()
            self._file.close()
            self._file = None


#: What a closed Arrow IPC stream ends with: the continuation marker and a zero length.
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


class FlowTraceScan(NamedTuple):
    """A flow trace as read: its complete batches as ``table``; ``batches`` their count; ``cut``
    None for a stream its writer closed, else why it is incomplete (the writer was stopped):
    ``"torn"`` (it ends inside a batch) or ``"unterminated"`` (after a batch, without the end
    marker); ``error`` the reader's message for a torn batch."""

    table: pa.Table
    batches: int
    cut: str | None
    error: str | None = None


def scan_flow_trace(path) -> FlowTraceScan:
    """Read every complete record batch of a flow trace and say whether the stream was cut short."""
    path = os.fspath(path)
    batches = []
    cut = error = None
    with open(path, "rb") as f:
        try:
            reader = pa.ipc.open_stream(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ValueError(f"{path}: not a readable Arrow IPC stream ({exc})") from None
        schema = reader.schema
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError, EOFError) as exc:
                cut, error = "torn", str(exc)
                break
        if cut is None:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - len(_END_OF_STREAM), 0))
            if f.read() != _END_OF_STREAM:
                cut = "unterminated"
    return FlowTraceScan(pa.Table.from_batches(batches, schema=schema), len(batches), cut, error)


def read_flow_trace(path) -> pa.Table:
    """All complete record batches of a flow trace as a table (schema metadata kept).

    A stream cut short (a killed run) yields the batches written before the cut, with a warning
    when the last batch is torn.
    """
    scan = scan_flow_trace(path)
    if scan.cut == "torn":
        warnings.warn(f"{os.fspath(path)}: stream ends with a torn batch (the writer was stopped); "
                      f"kept {scan.batches} complete batches ({scan.error})", RuntimeWarning, stacklevel=2)
    return scan.table


def to_parquet(path, out=None) -> str:
    """Convert a flow trace to Parquet (written to a temporary name, then renamed); returns the path."""
    table = read_flow_trace(path)
    src = os.fspath(path)
    out = os.fspath(out) if out is not None else os.path.splitext(src)[0] + ".parquet"
    with replaced_on_success(out) as tmp:
        pq.write_table(table, tmp)
    return out
