"""``fabricsim sweep``: any grid of experiment points, on every local core or on a Dask cluster,
with resumable per-point results.

A sweep file (TOML) is a base point plus axes::

    name = "small"                 # optional (default: the file's stem)
    seeds = 2                      # seeds 0 .. N-1 (or a list of seeds): one more axis
                                   # (top-level keys come before the first table)
    [base]                         # any field of fabricsim.experiment.Point
    model = "mixtral-8x7b"
    gpus = 32
    tp = 4
    ep = 8
    pp = 1

    [grid]                         # the product of these lists
    fabric = ["fattree", "mixnet"]
    link_gbps = [100, 400]

    [zip]                          # lists of equal length, varied together (one axis);
    alpha = [2, 4, 6]              # [[zip]] tables give several zipped axes
    delay_ms = [1, 10, 25]

Points are the product of the grid axes, the zipped axes and the seeds, in file order; a file
with ``[base]`` alone is that one point, and a file with neither ``[base]`` nor an axis is an
error (not one default point). Each point is a :class:`~fabricsim.experiment.Point` whose
resolved parameters (``dp`` and ``micro_batches`` filled in) give its id
(:func:`fabricsim.experiment.point_id`), the same id that
:func:`~fabricsim.experiment.run_point` writes into its result row.

Output folder ``DIR``::

    DIR/_sweep.json           the index: sweep definition, every point's id and parameters
    DIR/points/<id>.parquet   one result row per finished point (temporary name, then rename)
    DIR/_failed/<id>.json     the error of each failed point (type, message, traceback)

Names starting with ``_`` or ``.`` are ignored by Arrow datasets, so ``pandas.read_parquet(DIR)``
and ``pyarrow.dataset.dataset(DIR)`` load exactly the finished points. Running the same sweep
again skips finished points (and retries failed ones unless ``skip_failed``).

Execution: a local process pool (forkserver where the platform has it, else spawn; never fork),
the Numba cache warmed once in the parent before the workers start, one Numba thread per worker;
or, with ``scheduler``, the workers of a Dask cluster (``pip install 'fabricsim[dask]'``). The
parent process writes every result, so Dask workers need no shared file system.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import socket
import sys
import threading
import time
import traceback
import typing
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from fabricsim.errors import ConfigError, FabricsimError, require
from fabricsim.experiment import Point, point_id

__all__ = ["Sweep", "SweepReport", "load_sweep", "parse_sweep", "sweep_from_points", "main",
           "resolve_point", "run_sweep", "sweep_status", "load_results", "execute", "add_parser",
           "INDEX_NAME"]

INDEX_NAME = "_sweep.json"
POINTS_DIR = "points"
FAILED_DIR = "_failed"
INDEX_FORMAT = "fabricsim-sweep"
INDEX_VERSION = 1
#: Result columns that depend on the machine and the moment, not on the point.
WALL_CLOCK_COLUMNS = ("wall_s",)

_TOP_KEYS = ("name", "description", "base", "grid", "zip", "seeds")
_FIELDS = tuple(f.name for f in dataclasses.fields(Point))
_HINTS = typing.get_type_hints(Point)


# ---------------------------------------------------------------------------------------------
# Sweep files


def _kind(field_name: str) -> tuple:
    """(python type, optional) of a Point field."""
    hint = _HINTS[field_name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


_TYPE_WORDS = {str: "a string", float: "a number", int: "an integer", dict: "a table",
               bool: "true or false", tuple: "a list of strings"}


def _coerce(field_name: str, value, where: str):
    """``value`` as the type of Point field ``field_name`` (ints become floats for float fields);
    ConfigError naming ``where`` otherwise."""
    typ, _ = _kind(field_name)
    ok = False
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is bool:
        ok = isinstance(value, bool)
    elif typ is str:
        ok = isinstance(value, str)
    elif typ is dict:
        ok = isinstance(value, dict)
        if ok:
            value = json.loads(json.dumps(value, sort_keys=True, default=str))
    elif typ is tuple:  # e.g. failures: a list of strings, or one comma-separated string
        ok = isinstance(value, str) or (isinstance(value, (list, tuple))
                                        and all(isinstance(x, str) for x in value))
        if ok and not isinstance(value, str):
            value = list(value)
    if not ok:
        raise ConfigError(where, f"must be {_TYPE_WORDS.get(typ, typ.__name__)}, got {value!r} "
                                 f"({type(value).__name__})")
    return value


def _check_field(name: str, where: str) -> None:
    if name in ("seeds", "name", "description") and "." in where:
        raise ConfigError(where, f"{name} is a top-level key: put it above the first [table] of "
                                 "the file")
    require(name in _FIELDS, where, f"unknown parameter; allowed: {', '.join(_FIELDS)}")


def _axis_values(name: str, values, where: str) -> list:
    _check_field(name, where)
    require(isinstance(values, list), where,
            f"must be a list of values, e.g. {name} = [{_example(name)}], got {values!r}")
    require(len(values) > 0, where, "is empty; give at least one value")
    return [_coerce(name, v, f"{where}[{i}]") for i, v in enumerate(values)]


def _example(name: str) -> str:
    typ, _ = _kind(name)
    return {str: '"a", "b"', float: "1.0, 2.0", int: "1, 2", dict: "{}, {}",
            tuple: '[], ["x"]'}.get(typ, "...")


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep: its points (in order, duplicates merged), their ids and resolved
    parameters, the names of the varied parameters and the normalized definition (JSON-able)."""

    name: str
    points: tuple
    ids: tuple
    params: tuple
    axes: tuple
    definition: dict
    source: Optional[str] = None
    duplicates: int = 0

    def __len__(self) -> int:
        return len(self.points)


def resolve_point(point: Point) -> dict:
    """The resolved parameters of ``point``, as :func:`~fabricsim.experiment.run_point` records
    them (``dp`` and ``micro_batches`` derived); its :func:`point_id` is the row's ``point_id``."""
    from fabricsim.experiment import _workload

    cfg = _workload(point)
    params = point.to_dict()
    params["dp"] = cfg.dp
    params["micro_batches"] = cfg.n_micro_batches
    return params


def _check_point(point: Point) -> dict:
    """Cheap checks of a point's names (model, GPU profile, policy, mode) and its resolution."""
    from fabricsim.ocs.controller import POLICIES
    from fabricsim.runner import MODES
    from fabricsim.workload.compute import get_profile
    from fabricsim.workload.models import get_model

    get_model(point.model)
    get_profile(point.gpu_profile)
    require(point.policy in POLICIES, "policy",
            f"must be one of {', '.join(POLICIES)}, got {point.policy!r}")
    mode = point.switches["mode"]
    require(mode in MODES, "mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    return resolve_point(point)


def _with_context(exc: ConfigError, values: dict, index: int, total: int) -> ConfigError:
    where = ", ".join(f"{k}={v!r}" for k, v in values.items())
    ctx = f" (point {index + 1} of {total}" + (f": {where})" if where else ")")
    return ConfigError(exc.field, exc.message + ctx)


def parse_sweep(data: dict, *, source: Optional[str] = None, name: Optional[str] = None) -> Sweep:
    """A :class:`Sweep` from the tables of a sweep file (see the module docstring)."""
    require(isinstance(data, dict), "sweep", "must be a table")
    for key in data:
        require(key in _TOP_KEYS, key,
                f"unknown key of a sweep file; allowed: {', '.join(_TOP_KEYS)}")
    sweep_name = data.get("name", name or "sweep")
    require(isinstance(sweep_name, str) and sweep_name.strip() != "", "name",
            f"must be a non-empty string, got {sweep_name!r}")

    base_in = data.get("base", {})
    require(isinstance(base_in, dict), "base", "must be a table of Point fields")
    base = {}
    for k, v in base_in.items():
        _check_field(k, f"base.{k}")
        base[k] = _coerce(k, v, f"base.{k}")

    # Axes: a list of (names, list of value tuples).
    axes: list = []
    seen: dict = {}

    def claim(names, where):
        for n in names:
            require(n not in seen, where, f"{n} is already varied by {seen.get(n)}; vary a "
                    "parameter in one place only")
            seen[n] = where

    grid_in = data.get("grid", {})
    require(isinstance(grid_in, dict), "grid", "must be a table of lists, e.g. fabric = [...]")
    grid = {}
    for k, v in grid_in.items():
        vals = _axis_values(k, v, f"grid.{k}")
        claim([k], f"grid.{k}")
        grid[k] = vals
        axes.append(((k,), [(x,) for x in vals]))

    zip_in = data.get("zip", [])
    if isinstance(zip_in, dict):
        groups, labels = [zip_in], ["zip"]
    elif isinstance(zip_in, list) and all(isinstance(g, dict) for g in zip_in):
        groups, labels = zip_in, [f"zip[{i}]" for i in range(len(zip_in))]
    else:
        raise ConfigError("zip", "must be a table of equal-length lists ([zip]) or tables of them "
                                 "([[zip]])")
    zips = []
    for group, label in zip(groups, labels):
        require(len(group) > 0, label, "is empty; give at least one list")
        cols = {k: _axis_values(k, v, f"{label}.{k}") for k, v in group.items()}
        lengths = {k: len(v) for k, v in cols.items()}
        first = next(iter(lengths))
        for k, n in lengths.items():
            require(n == lengths[first], f"{label}.{k}",
                    f"has {n} values but {label}.{first} has {lengths[first]}; zipped lists must "
                    "have equal lengths")
        claim(cols, f"{label}.{first}" if len(cols) == 1 else label)
        zips.append(cols)
        axes.append((tuple(cols), list(zip(*cols.values()))))

    seeds = None
    if "seeds" in data:
        s = data["seeds"]
        if isinstance(s, int) and not isinstance(s, bool):
            require(s >= 1, "seeds", f"must be a positive count or a list of seeds, got {s}")
            seeds = list(range(s))
        elif isinstance(s, list):
            require(len(s) > 0, "seeds", "is empty; give at least one seed")
            seeds = [_coerce("seed", x, f"seeds[{i}]") for i, x in enumerate(s)]
            for i, x in enumerate(seeds):
                require(x >= 0, f"seeds[{i}]", f"must be a non-negative integer, got {x}")
        else:
            raise ConfigError("seeds", f"must be a positive count or a list of seeds, got {s!r}")
        claim(["seed"], "seeds")
        axes.append((("seed",), [(x,) for x in seeds]))

    # a file with a [base] table (even an empty one: the default point on purpose) or an axis
    # has points; one with neither (empty, or only name / description) is a mistake
    require("base" in data or axes, "sweep",
            f"no points{f' in {source}' if source else ''}: give a [base] point and/or [grid] / "
            "[zip] axes or seeds")
    definition = {"name": sweep_name, "base": base, "grid": grid,
                  "zip": zips, "seeds": seeds}
    if "description" in data:
        require(isinstance(data["description"], str), "description", "must be a string")
        definition["description"] = data["description"]

    combos = [dict(itertools.chain.from_iterable(zip(names, vals) for names, vals in combo))
              for combo in itertools.product(*[[(names, v) for v in values]
                                               for names, values in axes])]
    points, ids, params, n_dup = [], [], [], 0
    index_of = {}
    for i, combo in enumerate(combos):
        try:
            p = Point(**{**base, **combo})
            resolved = _check_point(p)
        except ConfigError as exc:
            raise _with_context(exc, combo, i, len(combos)) from None
        pid = point_id(resolved)
        if pid in index_of:
            n_dup += 1
            continue
        index_of[pid] = len(points)
        points.append(p)
        ids.append(pid)
        params.append(resolved)
    axis_names = tuple(n for names, _ in axes for n in names)
    return Sweep(name=sweep_name, points=tuple(points), ids=tuple(ids), params=tuple(params),
                 axes=axis_names, definition=definition, source=source, duplicates=n_dup)


def load_sweep(path) -> Sweep:
    """Read and check a sweep file (TOML)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError("sweep", f"file not found: {path}")
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("sweep", f"{path}: invalid TOML: {exc}") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    return parse_sweep(data, source=path, name=stem)


def sweep_from_points(points: Iterable[Point], name: str = "points") -> Sweep:
    """A :class:`Sweep` of explicit points (duplicates merged)."""
    pts, ids, params, seen, n_dup = [], [], [], set(), 0
    for p in points:
        require(isinstance(p, Point), "points", f"must be fabricsim.experiment.Point, got {p!r}")
        resolved = resolve_point(p)
        pid = point_id(resolved)
        if pid in seen:
            n_dup += 1
            continue
        seen.add(pid)
        pts.append(p)
        ids.append(pid)
        params.append(resolved)
    require(len(pts) > 0, "points", "no points: give at least one fabricsim.experiment.Point")
    varied = tuple(k for k in _FIELDS
                   if len({json.dumps(q[k], sort_keys=True) for q in params}) > 1)
    return Sweep(name=name, points=tuple(pts), ids=tuple(ids), params=tuple(params), axes=varied,
                 definition={"name": name, "points": len(pts)}, duplicates=n_dup)


# ---------------------------------------------------------------------------------------------
# Workers


def _describe_error(exc: BaseException) -> dict:
    config = isinstance(exc, ConfigError)
    return {"type": type(exc).__name__, "message": str(exc),
            "field": exc.field if config else None, "detail": exc.message if config else None,
            "config_error": config, "traceback": traceback.format_exc(),
            "host": socket.gethostname(), "pid": os.getpid()}


def _run_one(point: Point, expected_id: str, progress=None):
    """Run one point (in a worker); never raises: ``("ok", row)`` or ``("error", info)``.
    ``progress``: passed to :func:`fabricsim.experiment.run_point` (tasks done within the point)."""
    from fabricsim.experiment import run_point

    try:
        row = run_point(point, progress=progress)
        if row.get("point_id") != expected_id:
            raise RuntimeError(f"run_point recorded id {row.get('point_id')} but the sweep "
                               f"resolved {expected_id}: fabricsim.sweep.resolve_point is out of "
                               "step with fabricsim.experiment.run_point")
        return ("ok", row)
    except Exception as exc:  # noqa: BLE001 - recorded, and the sweep goes on
        return ("error", _describe_error(exc))


_WARM_BASE = dict(model="mixtral-8x7b", gpus=32, tp=4, ep=8, pp=1, micro_batch=1, seq_len=256,
                  micro_batches=1, link_gbps=100.0)


def _warm_kinds(points: Iterable[Point]) -> list:
    """The distinct code paths of ``points`` (fabric, policy, mode, gating) to warm."""
    kinds = set()
    for p in points:
        kinds.add((p.fabric, p.policy if p.fabric == "mixnet" else "oracle-blocking", p.switches["mode"],
                   p.gating if p.gating in ("reference", "synthetic") else "reference"))
    return sorted(kinds)


def _warm(kinds) -> float:
    """Run one tiny point per kind so that every kernel is compiled (or loaded) and cached on
    disk; best effort. Returns the seconds spent."""
    from fabricsim.experiment import run_point

    t0 = time.perf_counter()
    for fabric, policy, mode, gating in kinds:
        try:
            run_point(Point(**_WARM_BASE, fabric=fabric, policy=policy, mode=mode, gating=gating))
        except Exception:  # noqa: BLE001 - the real points report their own errors
            pass
    return time.perf_counter() - t0


def _one_numba_thread() -> None:
    os.environ["NUMBA_NUM_THREADS"] = "1"
    numba = sys.modules.get("numba")
    if numba is not None:  # imported already (forkserver preload): threads are not launched yet
        try:
            numba.config.NUMBA_NUM_THREADS = 1
        except Exception:  # pragma: no cover
            pass


def _worker_init(main_pid: int) -> None:
    """Pool worker start: one Numba thread, and exit if the sweep's process dies (e.g. SIGKILL),
    instead of lingering as an orphan."""
    _one_numba_thread()
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            alive = True
            try:
                os.kill(main_pid, 0)
            except ProcessLookupError:
                alive = False
            except OSError:  # pragma: no cover - e.g. EPERM: it exists
                pass
            if not alive or os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="fabricsim-sweep-watchdog", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# Execution backends: each yields (index, outcome) as points finish


_PRELOAD = ["fabricsim.sweep", "fabricsim.experiment", "fabricsim.runner", "fabricsim.workload",
            "fabricsim.fabric", "fabricsim.ocs.controller", "fabricsim.topoopt", "fabricsim.cost"]


def _start_method(start_method: Optional[str]) -> str:
    """The local pool's start method (default: forkserver where the platform has it, else
    spawn); ConfigError for fork or one the platform lacks."""
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    if start_method is None:
        start_method = "forkserver" if "forkserver" in methods else "spawn"
    require(start_method in ("forkserver", "spawn") and start_method in methods, "start_method",
            f"must be forkserver or spawn (never fork after Numba); this platform has "
            f"{', '.join(m for m in methods if m != 'fork')}")
    return start_method


def _check_workers(workers) -> None:
    require(workers is None or (isinstance(workers, int) and not isinstance(workers, bool)
                                and workers >= 0),
            "workers", f"must be a non-negative integer (0: in this process), got {workers!r}")


def _mp_context(start_method: Optional[str]):
    import multiprocessing as mp

    start_method = _start_method(start_method)
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _iter_inline(points: list, point_progress=None) -> Iterator:
    for i, (p, pid) in enumerate(points):
        yield i, _run_one(p, pid, point_progress)


@contextlib.contextmanager
def _worker_start():
    """While workers start: ``NUMBA_NUM_THREADS=1`` in the environment they inherit (and a new
    forkserver's), and a ``__main__`` whose file does not exist (``python - < script``) hidden
    from them, since spawn and forkserver workers would try to run it again."""
    saved = os.environ.get("NUMBA_NUM_THREADS")
    os.environ["NUMBA_NUM_THREADS"] = "1"
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    hide = isinstance(main_file, str) and not os.path.isfile(main_file)
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = main_file
        if saved is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = saved


def _worker_died(detail: str = "") -> tuple:
    return ("error", {"type": "WorkerDied", "config_error": False, "field": None,
                      "message": "the worker process running this point died (killed, out of "
                                 "memory or crashed)" + detail,
                      "traceback": "", "host": socket.gethostname(), "pid": None})


def _iter_local(points: list, workers: int, start_method: Optional[str],
                warm_kinds=(), fn=_run_one) -> Iterator:
    """A process pool of ``workers``. A worker that dies (killed, out of memory, crashed) breaks
    the pool: the points then in flight are run again one at a time in a pool of one, so that
    the point that kills its worker is found and recorded as failed, and the others go on."""
    ctx = _mp_context(start_method)
    todo = list(range(len(points)))[::-1]  # stacks: pop() gives the next in order
    suspects: list = []
    answered = deaths = 0

    def new_pool(n, warm=()):
        with _worker_start():
            pool = cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                                          initargs=(os.getpid(),))
            # start every worker now, within _worker_start
            started = [pool.submit(os.getpid) for _ in range(n)]
        if warm:  # while the workers start (they only import): fill the Numba cache once
            _warm(warm)
        try:
            for f in started:
                f.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return pool

    while todo or suspects:
        isolated = bool(suspects)
        stack = suspects if isolated else todo
        n = 1 if isolated else workers
        window = 1 if isolated else 2 * workers
        try:
            pool = new_pool(n, warm_kinds)
            warm_kinds = ()
        except cf.process.BrokenProcessPool:
            raise FabricsimError("local worker processes die as they start (see the errors above; "
                                 "a script that runs a sweep must guard it with "
                                 "if __name__ == '__main__':)") from None
        inflight: dict = {}
        broken = False
        try:
            while True:
                while not broken and stack and len(inflight) < window:
                    i = stack.pop()
                    try:
                        inflight[pool.submit(fn, *points[i])] = i
                    except cf.process.BrokenProcessPool:
                        stack.append(i)
                        broken = True
                if not inflight:
                    break
                done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    i = inflight.pop(fut)
                    try:
                        outcome = fut.result()
                    except cf.process.BrokenProcessPool:
                        broken = True
                        if isolated:
                            deaths += 1
                            if deaths >= 3 and answered == 0:
                                raise FabricsimError(
                                    "local worker processes die on every point (see the errors "
                                    "above); nothing was recorded for them") from None
                            yield i, _worker_died()
                        else:
                            suspects.append(i)
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                        outcome = ("error", _describe_error(exc))
                    answered += 1
                    yield i, outcome
                if broken and isolated:
                    break
        finally:
            pool.shutdown(wait=not broken and not inflight, cancel_futures=True)
        if broken and not isolated:
            suspects.sort(reverse=True)  # run them in their original order


#: Seconds to reach a Dask scheduler, then for its first worker to join.
_CONNECT_TIMEOUT_S = 20
_WORKER_WAIT_S = 60


def _dask_client(scheduler):
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("scheduler", "needs Dask: pip install 'fabricsim[dask]'") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    require(isinstance(scheduler, str) and "://" in scheduler, "scheduler",
            f"must be a Dask scheduler address like tcp://HOST:8786, got {scheduler!r}")
    try:
        client = Client(scheduler, timeout=f"{_CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError("scheduler", f"cannot connect to {scheduler}: {exc}") from None
    return client, True


def _dask_connect(scheduler):
    """``(client, own)``: a client of ``scheduler`` (an address or a Client) with at least one
    worker; ``own``: the caller closes it. ConfigError when unreachable or without workers."""
    client, own = _dask_client(scheduler)
    try:
        client.wait_for_workers(1, timeout=_WORKER_WAIT_S)
    except TimeoutError:
        if own:
            client.close()
        raise ConfigError("scheduler", f"no Dask worker joined {client.scheduler.address} "
                                       f"within {_WORKER_WAIT_S} s (start some: dask worker "
                                       "ADDRESS)") from None
    except BaseException:
        if own:
            client.close()
        raise
    return client, own


def _dask_one_numba_thread(client_pid: int) -> None:
    if os.getpid() != client_pid:  # never change the environment of the client's own process
        _one_numba_thread()


def _dask_warm(client, kinds) -> None:
    """One Numba thread per worker process; then warm every worker, one worker per host first
    (it fills the host's Numba cache), then the others at once (they load it)."""
    try:
        client.run(_dask_one_numba_thread, os.getpid())
        workers = sorted(client.nthreads())
        by_host: dict = {}
        for w in workers:
            by_host.setdefault(w.rsplit(":", 1)[0], []).append(w)
        first = [ws[0] for ws in by_host.values()]
        client.run(_warm, kinds, workers=first)
        rest = [w for ws in by_host.values() for w in ws[1:]]
        if rest:
            client.run(_warm, kinds, workers=rest)
    except Exception as exc:  # noqa: BLE001 - e.g. fabricsim missing on a worker machine
        raise FabricsimError(f"scheduler: the Dask workers cannot run fabricsim "
                             f"({type(exc).__name__}: {exc}); install the same fabricsim on every "
                             "worker machine") from None


def _iter_dask(points: list, scheduler, warm_kinds) -> Iterator:
    from distributed import as_completed

    client, own = _dask_connect(scheduler)
    try:
        if warm_kinds:
            _dask_warm(client, warm_kinds)
        slots = max(1, sum(client.nthreads().values()))
        window = 2 * slots
        todo = list(range(len(points)))[::-1]
        index = {}
        ac = as_completed()

        def submit():
            while todo and ac.count() < window:
                i = todo.pop()
                p, pid = points[i]
                fut = client.submit(_run_one, p, pid, key=f"fabricsim-point-{pid}", pure=False)
                index[fut.key] = i
                ac.add(fut)

        submit()
        while not ac.is_empty():
            fut = next(ac)
            i = index.pop(fut.key)
            try:
                outcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker and friends
                outcome = ("error", _describe_error(exc))
            fut.release()
            yield i, outcome
            submit()
    finally:
        if own:
            client.close()


def execute(points: list, *, workers: Optional[int] = None, scheduler=None,
            start_method: Optional[str] = None, warm: bool = True,
            point_progress=None) -> Iterator:
    """Run ``points`` (a list of ``(Point, id)``); yields ``(index, outcome)`` as they finish,
    ``outcome`` being ``("ok", row)`` or ``("error", info)``.

    ``scheduler`` (a ``tcp://HOST:PORT`` address or a ``distributed.Client``): the Dask cluster's
    workers. Otherwise ``workers`` local processes (default: every core); ``workers=0`` runs the
    points one by one in this process, and then ``point_progress(tasks_done, tasks, sim_ps)``
    follows each point's iteration as it runs (:func:`fabricsim.runner.run_iteration`).
    """
    if not points:
        return
    kinds = _warm_kinds(p for p, _ in points) if warm else []
    if scheduler is not None:
        yield from _iter_dask(points, scheduler, kinds)
        return
    _check_workers(workers)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers == 0:
        yield from _iter_inline(points, point_progress)
        return
    yield from _iter_local(points, min(workers, len(points)), start_method, kinds)


# ---------------------------------------------------------------------------------------------
# Results folder


def _atomic_write(path: str, write) -> None:
    """``write(file)`` to a hidden temporary beside ``path`` (pyarrow datasets skip names that
    start with "."), flushed to disk, then renamed to ``path``."""
    from fabricsim.traces.schema import replaced_on_success

    d, base = os.path.split(path)
    with replaced_on_success(path, os.path.join(d, f".{base}.{os.getpid()}.tmp")) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def _write_json(path: str, obj) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=True,
                                                     default=str).encode()))


_ARROW_PARAM = None


def _param_types() -> dict:
    global _ARROW_PARAM
    if _ARROW_PARAM is None:
        import pyarrow as pa

        # the types of Point.to_dict() values (dicts are written as JSON, tuples joined)
        arrow = {str: pa.string(), float: pa.float64(), int: pa.int64(), bool: pa.bool_(),
                 dict: pa.string(), tuple: pa.string(), list: pa.string()}
        sample = Point().to_dict()
        _ARROW_PARAM = {"point_id": pa.string()}
        for n in _FIELDS:
            typ = type(sample[n]) if sample.get(n) is not None else _kind(n)[0]
            if typ in arrow:
                _ARROW_PARAM[n] = arrow[typ]
    return _ARROW_PARAM


def _row_table(row: dict, params: dict):
    """One-row Arrow table with stable column types (parameters typed from Point, so a ``None``
    in one file and an integer in another still load as one dataset)."""
    import pyarrow as pa

    from fabricsim.traces.schema import metadata

    types = _param_types()
    arrays, names = [], []
    for k, v in row.items():
        if k in types:
            arr = pa.array([v], type=types[k])
        else:
            arr = pa.array([v])
            if pa.types.is_null(arr.type):
                arr = pa.array([None], type=pa.float64())
        arrays.append(arr)
        names.append(k)
    meta = metadata(params)
    meta["fabricsim.point_id"] = row.get("point_id", "")
    return pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(meta)


def _write_point(out: str, pid: str, row: dict, params: dict) -> None:
    import pyarrow.parquet as pq

    table = _row_table(row, params)
    _atomic_write(os.path.join(out, POINTS_DIR, f"{pid}.parquet"),
                  lambda f: pq.write_table(table, f))


def _listing(out: str) -> tuple:
    """(done ids, failed ids) found in ``out``."""
    def ids(sub, ext):
        d = os.path.join(out, sub)
        if not os.path.isdir(d):
            return set()
        return {n[:-len(ext)] for n in os.listdir(d) if n.endswith(ext) and not n.startswith(".")}

    return ids(POINTS_DIR, ".parquet"), ids(FAILED_DIR, ".json")


def _read_index(out: str) -> dict:
    path = os.path.join(out, INDEX_NAME)
    if not os.path.isfile(path):
        raise ConfigError("out", f"{out} is not a sweep folder (no {INDEX_NAME}); "
                                 "run fabricsim sweep SWEEP.toml --out DIR first")
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    require(index.get("format") == INDEX_FORMAT, "out", f"{path} is not a fabricsim sweep index")
    return index


def _new_index(out: str, sweep: Sweep) -> Optional[dict]:
    """The index of ``sweep`` in folder ``out``; None when ``out`` holds it already as it is.
    ConfigError when ``out`` holds another sweep (one with points that ``sweep`` lacks)."""
    from fabricsim import __version__

    path = os.path.join(out, INDEX_NAME)
    old_ids: list = []
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if os.path.isfile(path):
        old = _read_index(out)
        old_ids = [p["id"] for p in old.get("points", [])]
        created = old.get("created", created)
        missing = set(old_ids) - set(sweep.ids)
        require(not missing, "out", f"{out} holds another sweep ({len(missing)} of its "
                f"{len(old_ids)} points are not in this one); choose another --out (a sweep may "
                "only grow in the folder it started in)")
        if old_ids == list(sweep.ids) and old.get("definition") == _jsonable(sweep.definition):
            return None
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "name": sweep.name,
            "source": sweep.source, "fabricsim_version": __version__, "created": created,
            "definition": sweep.definition, "axes": list(sweep.axes),
            "points": [{"id": i, "params": p} for i, p in zip(sweep.ids, sweep.params)]}


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _clean_temporaries(out: str) -> int:
    n = 0
    for sub in (POINTS_DIR, FAILED_DIR, "."):
        d = os.path.join(out, sub)
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name.startswith(".") and name.endswith(".tmp"):
                    try:
                        os.unlink(os.path.join(d, name))
                        n += 1
                    except OSError:  # pragma: no cover
                        pass
    return n


def sweep_status(out) -> dict:
    """Counts of a sweep folder: ``done``, ``failed``, ``pending``, ``total``, plus ``name``,
    ``out`` and ``failures`` (id -> one-line error) of the failed points."""
    out = os.fspath(out)
    index = _read_index(out)
    ids = [p["id"] for p in index.get("points", [])]
    done_ids, failed_ids = _listing(out)
    done = [i for i in ids if i in done_ids]
    failed = [i for i in ids if i in failed_ids and i not in done_ids]
    failures = {}
    for i in failed:
        try:
            with open(os.path.join(out, FAILED_DIR, f"{i}.json"), encoding="utf-8") as f:
                info = json.load(f)
            failures[i] = f"{info.get('type', 'Error')}: {info.get('message', '')}"
        except (OSError, ValueError):
            failures[i] = "(unreadable error record)"
    return {"name": index.get("name"), "out": out, "total": len(ids), "done": len(done),
            "failed": len(failed), "pending": len(ids) - len(done) - len(failed),
            "failures": failures}


# ---------------------------------------------------------------------------------------------
# The sweep runner


@dataclass
class SweepReport:
    """What :func:`run_sweep` did: counts of the whole sweep after the run (``done``, ``failed``,
    ``pending``, ``total``), the points run now (``ran``) or not (``skipped``: finished before, or
    failed before with ``skip_failed``), the wall time, the backend and ``failures`` (id -> one
    line). The results are in the folder: ``pandas.read_parquet(out)``."""

    name: str
    out: str
    total: int
    done: int
    failed: int
    pending: int
    skipped: int
    ran: int
    wall_s: float
    backend: str
    failures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Progress:
    """done / failed / pending counts and an ETA on stderr. On a terminal: a tqdm bar when tqdm
    is installed (extra ``progress``), else one line rewritten in place; otherwise (a log file)
    a new line every 10% or 30 s."""

    def __init__(self, total: int, done: int, failed: int, enabled: bool):
        self.total, self.done, self.failed = total, done, failed
        self.start_done = done + failed
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.last = 0.0
        self.last_decile = -1
        self.tty = sys.stderr.isatty()
        self.bar = None
        if enabled and self.tty:  # in a log file, plain lines read better than a redrawn bar
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done + failed, unit="pt", file=sys.stderr,
                                dynamic_ncols=True, leave=True)
            except ImportError:
                pass
        self.show(force=True)

    @property
    def pending(self) -> int:
        return self.total - self.done - self.failed

    def eta(self) -> str:
        ran = self.done + self.failed - self.start_done
        if ran == 0:
            return "?"
        return f"{(time.monotonic() - self.t0) / ran * self.pending:.0f} s"

    def update(self, ok: bool, was_failed: bool) -> None:
        if ok:
            self.done += 1
            if was_failed:
                self.failed -= 1
        elif not was_failed:
            self.failed += 1
        if self.bar is not None:
            self.bar.n = self.done + self.failed
        self.show()

    def show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, failed=self.failed, pending=self.pending,
                                 refresh=True)
            return
        t = time.monotonic()
        text = (f"  {self.done}/{self.total} done, {self.failed} failed, {self.pending} pending, "
                f"{t - self.t0:.0f} s, ETA {self.eta()}")
        if self.tty:
            if force or t - self.last >= 0.2 or self.pending == 0:
                sys.stderr.write("\r" + text + "   ")
                sys.stderr.flush()
                self.last = t
            return
        decile = (10 * (self.done + self.failed)) // max(1, self.total)
        if force or decile != self.last_decile or t - self.last >= 30:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            self.last, self.last_decile = t, decile

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run_sweep(sweep, out, *, workers: Optional[int] = None, scheduler=None,
              skip_failed: bool = False, progress: bool = False,
              start_method: Optional[str] = None) -> SweepReport:
    """Run the points of ``sweep`` (a :class:`Sweep`, a sweep file path or a list of
    :class:`~fabricsim.experiment.Point`) that ``out`` does not hold yet; returns a
    :class:`SweepReport`.

    Each finished point becomes ``out/points/<id>.parquet`` (written to a temporary name, then
    renamed); a failed one ``out/_failed/<id>.json``, and the sweep goes on. Points failed in an
    earlier run are run again unless ``skip_failed``. ``workers``: local processes (default:
    every core; 0: in this process); ``scheduler``: a Dask scheduler address or Client instead.
    ``progress``: a progress bar on stderr.

    Nothing is created before the options and ``out`` are checked and the scheduler is reached;
    a run that fails before it records any point removes the folders it created.
    """
    if isinstance(sweep, (str, os.PathLike)):
        sweep = load_sweep(sweep)
    elif not isinstance(sweep, Sweep):
        sweep = sweep_from_points(sweep)
    out = os.fspath(out)
    t0 = time.monotonic()
    # every check before anything is created: the options, the folder, the Dask scheduler
    _check_workers(workers)
    require(not os.path.exists(out) or os.path.isdir(out), "out",
            f"{out} exists and is not a folder")
    index = _new_index(out, sweep)
    done_ids, failed_ids = _listing(out)
    wanted = set(sweep.ids)
    done0 = len(done_ids & wanted)
    failed_before = (failed_ids - done_ids) & wanted
    todo = [k for k, pid in enumerate(sweep.ids)
            if pid not in done_ids and not (skip_failed and pid in failed_before)]
    if scheduler is not None:
        backend = f"dask {scheduler if isinstance(scheduler, str) else 'client'}"
    elif workers == 0:
        backend = "this process"
    else:
        _start_method(start_method)
        n = min((os.cpu_count() or 1) if workers is None else workers, max(1, len(todo)))
        backend = f"{n} local worker{'s' if n != 1 else ''}"
    client, own = (None, False) if scheduler is None or not todo else _dask_connect(scheduler)
    created = _first_missing(out)  # the outermost folder this run creates (None: out exists)
    try:
        os.makedirs(os.path.join(out, POINTS_DIR), exist_ok=True)
        os.makedirs(os.path.join(out, FAILED_DIR), exist_ok=True)
        if index is not None:
            _write_json(os.path.join(out, INDEX_NAME), index)
        _clean_temporaries(out)
        bar = _Progress(len(sweep), done0, len(failed_before), progress and bool(todo))
        try:
            tasks = [(sweep.points[k], sweep.ids[k]) for k in todo]
            for j, outcome in execute(tasks, workers=workers,
                                      scheduler=client if client is not None else scheduler,
                                      start_method=start_method):
                k = todo[j]
                pid = sweep.ids[k]
                failed_path = os.path.join(out, FAILED_DIR, f"{pid}.json")
                if outcome[0] == "ok":
                    _write_point(out, pid, outcome[1], sweep.params[k])
                    if os.path.exists(failed_path):
                        os.unlink(failed_path)
                else:
                    info = dict(outcome[1], id=pid, params=sweep.params[k])
                    _write_json(failed_path, info)
                bar.update(outcome[0] == "ok", pid in failed_before)
        finally:
            bar.close()
    except BaseException:
        if created is not None and _listing(out) == (set(), set()):
            shutil.rmtree(created, ignore_errors=True)  # nothing recorded: leave no empty folder
        raise
    finally:
        if own:
            client.close()
    st = sweep_status(out)
    return SweepReport(name=sweep.name, out=out, total=len(sweep), done=st["done"],
                       failed=st["failed"], pending=st["pending"], skipped=len(sweep) - len(todo),
                       ran=len(todo), wall_s=time.monotonic() - t0, backend=backend,
                       failures=st["failures"])


def _first_missing(path: str) -> Optional[str]:
    """The outermost folder of ``path`` that does not exist (None when ``path`` exists)."""
    path = os.path.abspath(path)
    missing = None
    while not os.path.exists(path):
        missing, parent = path, os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def load_results(out):
    """The finished points of a sweep folder as a pandas DataFrame (one row per point)."""
    import pandas as pd

    return pd.read_parquet(os.path.join(os.fspath(out), POINTS_DIR))


# ---------------------------------------------------------------------------------------------
# Command line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _summary_table(sweep: Sweep, out: str, limit: int = 40) -> str:
    done_ids, failed_ids = _listing(out)
    cols = [a for a in sweep.axes] or ["point_id"]
    rows = []
    for pid, params in zip(sweep.ids, sweep.params):
        vals = [pid if c == "point_id" else _fmt(params.get(c)) for c in cols]
        if pid in done_ids:
            status, it = "done", _iteration_time(out, pid)
        elif pid in failed_ids:
            status, it = "failed", ""
        else:
            status, it = "pending", ""
        rows.append(vals + [it, status])
    head = cols + ["iteration_time_s", "status"]
    shown = rows[:limit]
    widths = [max(len(h), *(len(r[j]) for r in shown)) if shown else len(h)
              for j, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in shown]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more points (pandas.read_parquet({out!r}))")
    return "\n".join(lines)


def _iteration_time(out: str, pid: str) -> str:
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(os.path.join(out, POINTS_DIR, f"{pid}.parquet"),
                          columns=["iteration_time_s"])
        return f"{t.column(0)[0].as_py():.4f}"
    except Exception:  # noqa: BLE001 - a summary never fails the sweep
        return "?"


def _cmd_status(args) -> int:
    require(args.dir is not None, "status", "needs the sweep's folder: fabricsim sweep status DIR")
    st = sweep_status(args.dir)
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True))
        return 0
    print(f"sweep        {st['name']} in {st['out']}")
    print(f"points       {st['total']}: {st['done']} done, {st['failed']} failed, "
          f"{st['pending']} pending")
    for pid, msg in list(st["failures"].items())[:10]:
        print(f"failed       {pid}: {msg.splitlines()[0] if msg else ''}")
    if len(st["failures"]) > 10:
        more = len(st["failures"]) - 10
        print(f"             ... {more} more in {os.path.join(st['out'], FAILED_DIR)}")
    return 0


def _cmd_sweep(args) -> int:
    if args.target == "status" and (args.dir is not None or not os.path.isfile("status")):
        return _cmd_status(args)
    require(args.dir is None, "sweep", f"unexpected argument {args.dir!r}; the output folder is "
            "--out DIR (fabricsim sweep SWEEP.toml --out DIR, fabricsim sweep status DIR)")
    if args.workers is not None:
        require(args.workers >= 1, "--workers", f"must be a positive integer, got {args.workers}")
        require(args.scheduler is None, "--workers", "applies to the local pool; with --scheduler "
                "the Dask workers run the points")
    sweep = load_sweep(args.target)
    out = args.out or os.path.join("fabricsim-out", f"sweep-{sweep.name}")
    axes = ", ".join(f"{a}" for a in sweep.axes) or "none"
    if args.dry_run:
        print(f"sweep        {args.target}: {_count(len(sweep), 'point')} (axes: {axes})"
              + (f"; {sweep.duplicates} duplicates merged" if sweep.duplicates else ""))
        for pid, params in zip(sweep.ids, sweep.params):
            print(f"  {pid}  " + " ".join(f"{a}={_fmt(params[a])}" for a in sweep.axes))
        return 0
    report = run_sweep(sweep, out, workers=args.workers, scheduler=args.scheduler,
                       skip_failed=args.skip_failed, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1, sort_keys=True))
        return 1 if report.failed else 0
    print(_summary_table(sweep, out))
    rate = (f" ({report.ran / report.wall_s:.2f} points/s)" if report.ran and report.wall_s > 0
            else "")
    print()
    print(f"sweep        {args.target}: {_count(report.total, 'point')} (axes: {axes})"
          + (f"; {sweep.duplicates} duplicates merged" if sweep.duplicates else ""))
    print(f"this run     {_count(report.ran, 'point')} in {report.wall_s:.1f} s on "
          f"{report.backend}{rate}; {report.skipped} already done or skipped")
    print(f"status       {report.done} done, {report.failed} failed, {report.pending} pending")
    for pid, msg in list(report.failures.items())[:5]:
        print(f"failed       {pid}: {msg.splitlines()[0] if msg else ''}")
    if report.failed:
        print(f"             errors in {os.path.join(out, FAILED_DIR)}/<id>.json; run the same "
              "command again to retry them")
    print(f"results      {out} (pandas.read_parquet({out!r}))")
    return 1 if report.failed else 0


def add_parser(sub) -> None:
    """Register ``fabricsim sweep`` on an argparse subparsers object."""
    s = sub.add_parser(
        "sweep", help="run a parameter sweep (TOML) on every core or a Dask cluster; resumable",
        usage="fabricsim sweep SWEEP.toml [--out DIR] [--workers N | --scheduler ADDRESS] "
              "[--skip-failed] [--dry-run] [--quiet] [--json]\n"
              "       fabricsim sweep status DIR [--json]",
        description="Run every point of a sweep file (a [base] point, [grid] and [zip] axes, "
                    "seeds) and write one Parquet file per point to DIR/points/; running the "
                    "same command again skips finished points. 'fabricsim sweep status DIR' "
                    "counts done, failed and pending points.")
    s.add_argument("target", metavar="SWEEP.toml", help="sweep file, or the word status")
    s.add_argument("dir", nargs="?", metavar="DIR", help=argparse.SUPPRESS)
    s.add_argument("--out", metavar="DIR", help="output folder (default fabricsim-out/sweep-NAME)")
    s.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: every core)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask cluster, e.g. tcp://HOST:8786 "
                        "(pip install 'fabricsim[dask]')")
    s.add_argument("--skip-failed", action="store_true",
                   help="do not retry points that failed in an earlier run")
    s.add_argument("--dry-run", action="store_true", help="list the points and exit")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the counts as JSON")
    s.set_defaults(func=_cmd_sweep)


def main(argv=None) -> int:
    """``fabricsim sweep ...`` on its own (``argv`` without the word ``sweep``), with the CLI's
    error handling: one line and exit status 2 for a user error."""
    from fabricsim.cliutil import ArgumentParser, run_command

    parser = ArgumentParser(prog="fabricsim")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])

    return run_command(args)
