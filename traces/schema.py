"""Schema version and metadata shared by every trace and result file."""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np

#: Bumped whenever a trace or result schema changes incompatibly.
SCHEMA_VERSION = 1

VERSION_KEY = "fabricsim.schema_version"
SCENARIO_KEY = "fabricsim.scenario"
FLOWS_KEY = "fabricsim.flows"  # flows of the run (a trace cut short holds fewer records)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@contextlib.contextmanager
def replaced_on_success(path, tmp=None):
    """Yield a temporary path to write ``path`` to: renamed to ``path`` when the block succeeds,
    removed when it fails, so a killed or failed writer never leaves a corrupt result file.
    ``tmp`` defaults to ``path + ".tmp"``."""
    path = os.fspath(path)
    tmp = path + ".tmp" if tmp is None else tmp
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def scenario_json(scenario: dict | None) -> str:
    """The resolved scenario as canonical JSON (sorted keys)."""
    return json.dumps(_jsonable(scenario or {}), sort_keys=True, default=str)


def metadata(scenario: dict | None, flows: int | None = None) -> dict[str, str]:
    """Key-value metadata for Arrow/Parquet schemas and HDF5 attributes (``flows``: how many
    flows the run has, when known)."""
    out = {VERSION_KEY: str(SCHEMA_VERSION), SCENARIO_KEY: scenario_json(scenario)}
    if flows is not None:
        out[FLOWS_KEY] = str(int(flows))
    return out


def read_metadata(meta) -> dict:
    """``{"schema_version": int, "scenario": dict, "flows": int or None}`` from Arrow (bytes keys)
    or HDF5 metadata."""
    def get(key):
        for k in (key, key.encode()):
            if k in meta:
                v = meta[k]
                return v.decode() if isinstance(v, bytes) else str(v)
        return None

    version = get(VERSION_KEY)
    scenario = get(SCENARIO_KEY)
    flows = get(FLOWS_KEY)
    return {"schema_version": int(version) if version is not None else None,
            "scenario": json.loads(scenario) if scenario else {},
            "flows": int(flows) if flows is not None else None}


class Closeable:
    """Context-manager support for writers: ``with Writer(...) as w:`` closes ``w`` on exit."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
