"""``fabricsim reproduce``: the paper's evaluation (and its sensitivity studies) from one command.

Studies (``--study``), each a list of :class:`~fabricsim.experiment.Point`:

``main`` (default)
    1024 GPUs (128 servers of 8); link speeds 100/200/400/800 Gbps; the paper's models with their
    parallel configurations (:data:`fabricsim.experiment.PAPER_PARALLELISM`); fabrics fat-tree,
    3:1 fat-tree, rail-optimized, TopoOpt and MixNet (alpha 6, 25 ms). Reference gating and the
    A100 profile, as the paper's simulations.
``delay``
    MixNet's reconfiguration delay from 1 us to 10 s (Mixtral 8x22B, 400 Gbps), against the
    fat-tree.
``alpha``
    MixNet with 2 to 6 of the 8 NICs on the OCS (Mixtral 8x22B, 400 Gbps).
``scale``
    Cluster size 128 to 4096 servers (Mixtral 8x22B, 400 Gbps; data parallelism grows).
``batch``
    Micro-batches of 32 and 64 sequences (paper D.4; Mixtral 8x22B, 400 Gbps).
``failures``
    MixNet with a failed EPS NIC, OCS NIC, GPU or server (:mod:`fabricsim.failures`), against
    no failure and the fat-tree (Mixtral 8x22B, 400 Gbps).

``--quick`` shrinks any study to about a minute: 128 GPUs, two models (Mixtral 8x7B and Qwen-MoE
in their Table 1 configurations), 100 and 400 Gbps.

Results: ``results.parquet`` in ``--out`` (one row per point: every parameter, the iteration time
and its breakdown, the network cost, ``iteration_time_norm`` (to the model's fastest
configuration) and ``perf_per_dollar_norm`` (to the fat-tree at the same link speed)), written to a
temporary name and renamed; figures when matplotlib is installed (extra ``plot``).
"""

from __future__ import annotations

import os
import sys
import time

from fabricsim.errors import ConfigError, require
from fabricsim.experiment import COST_NAMES, FABRICS, PAPER_PARALLELISM, Point

__all__ = ["STUDIES", "study_points", "run_study", "add_parser"]

STUDIES = ("main", "delay", "alpha", "scale", "batch", "failures")
LINK_SPEEDS = (100, 200, 400, 800)
QUICK_MODELS = {"mixtral-8x7b": dict(tp=4, ep=8, pp=4), "qwen-moe": dict(tp=1, ep=16, pp=4)}


def study_points(study: str = "main", *, quick: bool = False, models=None, link_speeds=None,
                 fabrics=None, **overrides) -> list:
    """The points of a study; ``overrides`` (e.g. ``gating``, ``gpu_profile``, ``mode``) apply to
    every point."""
    require(study in STUDIES, "study", f"must be one of {', '.join(STUDIES)}, got {study!r}")
    gpus = 128 if quick else 1024
    table = QUICK_MODELS if quick else PAPER_PARALLELISM
    if models:
        unknown = [m for m in models if m not in PAPER_PARALLELISM]
        require(not unknown, "models", f"unknown {unknown}; the paper's models: "
                f"{', '.join(PAPER_PARALLELISM)}")
        table = {m: QUICK_MODELS.get(m, PAPER_PARALLELISM[m]) if quick else PAPER_PARALLELISM[m]
                 for m in models}
    speeds = tuple(link_speeds or ((100, 400) if quick else LINK_SPEEDS))
    fabrics = tuple(fabrics or FABRICS)
    bad = [f for f in fabrics if f not in FABRICS]
    require(not bad, "fabrics", f"unknown {bad}; allowed: {', '.join(FABRICS)}")

    def point(model, fabric, link, **kw):
        return Point(model=model, fabric=fabric, link_gbps=float(link), gpus=kw.pop("gpus", gpus),
                     **{**table.get(model, PAPER_PARALLELISM.get(model, {})), **kw, **overrides})

    if study == "main":
        return [point(m, f, b) for m in table for b in speeds for f in fabrics]
    focus = next(iter(table)) if quick else "mixtral-8x22b"
    link = 400
    if study == "delay":
        delays = (0.001, 1, 25, 100, 1000, 10_000)
        return [point(focus, "fattree", link)] + [point(focus, "mixnet", link, delay_ms=d)
                                                  for d in delays]
    if study == "alpha":
        return [point(focus, "fattree", link)] + [point(focus, "mixnet", link, alpha=a)
                                                  for a in range(2, 7)]
    if study == "scale":
        sizes = (16, 32) if quick else (128, 512, 1024, 4096)
        return [point(focus, f, link, gpus=8 * s) for s in sizes for f in ("fattree", "mixnet")]
    if study == "failures":
        cases = ((), ("nic:0:eps",), ("nic:0:ocs",), ("gpu:0",), ("server:0",))
        return [point(focus, "fattree", link)] + [point(focus, "mixnet", link, failures=c)
                                                  for c in cases]
    batches = (16,) if quick else (32, 64)  # batch
    return [point(focus, f, link, micro_batch=mb) for mb in batches for f in fabrics]


def _normalize(rows: list) -> None:
    """Add ``iteration_time_norm`` and ``perf_per_dollar_norm`` to every row."""
    from fabricsim.cost import normalized_perf_per_dollar

    best = {}
    for r in rows:
        key = (r["model"], r["gpus"], r["micro_batch"])
        best[key] = min(best.get(key, float("inf")), r["iteration_time_s"])
    ref = {(r["model"], r["gpus"], r["micro_batch"], r["link_gbps"]): r for r in rows
           if r["fabric"] == "fattree"}
    for r in rows:
        r["iteration_time_norm"] = r["iteration_time_s"] / best[(r["model"], r["gpus"], r["micro_batch"])]
        f = ref.get((r["model"], r["gpus"], r["micro_batch"], r["link_gbps"]))
        r["perf_per_dollar_norm"] = (normalized_perf_per_dollar(
            r["iteration_time_s"], r["network_cost_usd"], f["iteration_time_s"],
            f["network_cost_usd"]) if f else float("nan"))


def write_results(rows: list, out_dir: str) -> str:
    """``results.parquet`` in ``out_dir`` (temporary name, then rename); returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    from fabricsim.traces.schema import replaced_on_success

    path = os.path.join(out_dir, "results.parquet")
    with replaced_on_success(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return path


def run_study(points: list, *, progress=None, workers: int = 1, scheduler=None) -> list:
    """Run the points on the sweep runner (:func:`fabricsim.sweep.execute`): one by one in this
    process (``workers=1``, the default), on ``workers`` local processes, or on the workers of a
    Dask cluster (``scheduler``: an address or a ``distributed.Client``). Returns the normalized
    result rows in the order of ``points``; ``progress(done, total, row)`` is called as points
    finish. A point that fails raises its error (a ConfigError as such)."""
    from fabricsim.errors import ConfigError
    from fabricsim.experiment import point_id
    from fabricsim.sweep import execute, resolve_point

    require(isinstance(workers, int) and workers >= 1, "workers",
            f"must be a positive integer, got {workers!r}")
    tasks = [(p, point_id(resolve_point(p))) for p in points]
    rows = [None] * len(points)
    done = 0
    for i, outcome in execute(tasks, workers=0 if workers == 1 else workers, scheduler=scheduler):
        if outcome[0] != "ok":
            info = outcome[1]
            if info.get("config_error") and info.get("field"):
                raise ConfigError(info["field"], info.get("detail") or info["message"])
            raise RuntimeError(f"point {i} ({points[i]}) failed: {info['type']}: "
                               f"{info['message']}\n{info.get('traceback', '')}")
        rows[i] = outcome[1]
        done += 1
        if progress is not None:
            progress(done, len(points), rows[i])
    _normalize(rows)
    return rows


_CASE_KEYS = ("gpus", "micro_batch", "alpha", "delay_ms", "failures")


def format_table(rows: list) -> str:
    """The printed table; a ``case`` column shows the parameters that vary besides the fabric."""
    varying = [k for k in _CASE_KEYS if len({str(r[k]) for r in rows}) > 1]
    head = (f"{'model':<15}{'fabric':<9}{'Gbps':>6}{'iter (s)':>10}{'norm':>7}{'ep (s)':>9}"
            f"{'ocs (s)':>9}{'cost ($)':>13}{'perf/$':>8}" + ("  case" if varying else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        case = " ".join(f"{k}={r[k]}" for k in varying if r[k] not in ("", None))
        lines.append(f"{r['model']:<15}{r['fabric']:<9}{r['link_gbps']:>6g}{r['iteration_time_s']:>10.3f}"
                     f"{r['iteration_time_norm']:>7.2f}{r['ep_s']:>9.3f}{r['ocs_s']:>9.3f}"
                     f"{r['network_cost_usd']:>13,.0f}{r['perf_per_dollar_norm']:>8.2f}"
                     + (f"  {case}" if varying else ""))
    return "\n".join(lines)


def _save(plt, fig, out_dir: str, name: str) -> str:
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(rows: list, out_dir: str) -> list:
    """Figures (PNG) in ``out_dir``; [] when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from fabricsim.cost import network_cost_usd

    paths = []
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.2), squeeze=False)
    for ax, m in zip(axes[0], models):
        for f in FABRICS:
            pts = sorted((r["link_gbps"], r["iteration_time_s"]) for r in rows
                         if r["model"] == m and r["fabric"] == f)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f)
        ax.set_title(m)
        ax.set_xlabel("link speed (Gbps)")
        ax.set_ylabel("iteration time (s)")
    axes[0][0].legend(fontsize=7)
    paths.append(_save(plt, fig, out_dir, "iteration_time.png"))

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    servers = [128, 256, 512, 1024, 2048, 4096]
    for f in FABRICS:
        ax.plot(servers, [network_cost_usd(COST_NAMES[f], 8 * s, 400) / 1e6 for s in servers],
                marker="o", label=f)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("servers (8 GPUs, 400 Gbps)")
    ax.set_ylabel("network cost (M$)")
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, out_dir, "cost_vs_size.png"))

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for f in FABRICS:
        pts = [(r["network_cost_usd"] / 1e6, 1 / r["iteration_time_s"]) for r in rows if r["fabric"] == f]
        if pts:
            ax.scatter(*zip(*pts), label=f, s=14)
    ax.set_xlabel("network cost (M$)")
    ax.set_ylabel("iterations per second")
    ax.set_title("performance vs cost (upper left is better)")
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, out_dir, "pareto.png"))
    return paths


def _cmd_reproduce(args) -> int:
    overrides = {k: v for k, v in (("gating", args.gating), ("gpu_profile", args.gpu_profile),
                                   ("mode", args.mode), ("engine", args.engine)) if v is not None}
    speeds = None
    if args.link_gbps:
        try:
            speeds = [float(x) for x in args.link_gbps.split(",")]
        except ValueError:
            raise ConfigError("--link-gbps", "must be comma-separated numbers (Gbit/s), got "
                              f"{args.link_gbps!r}") from None
    points = study_points(args.study, quick=args.quick,
                          models=args.models.split(",") if args.models else None,
                          link_speeds=speeds,
                          fabrics=args.fabrics.split(",") if args.fabrics else None, **overrides)
    out = args.out or os.path.join("fabricsim-out", f"reproduce-{args.study}" +
                                   ("-quick" if args.quick else ""))
    os.makedirs(out, exist_ok=True)  # a bad --out fails now, not after the simulations
    require(os.access(out, os.W_OK), "--out", f"cannot write to {out}")
    t0 = time.monotonic()
    tty = sys.stderr.isatty() and not args.quiet

    def progress(done, total, row):
        if tty or not args.quiet:
            eta = (time.monotonic() - t0) / done * (total - done)
            sys.stderr.write(f"\r  {done}/{total} points, {row['model']} {row['fabric']} "
                             f"{row['link_gbps']:g} Gbps: {row['iteration_time_s']:.3f} s; "
                             f"ETA {eta:.0f} s   ")
            sys.stderr.flush()

    require(args.workers >= 1, "--workers", f"must be a positive integer, got {args.workers}")
    rows = run_study(points, progress=progress, workers=args.workers)
    if not args.quiet:
        sys.stderr.write("\n")
    path = write_results(rows, out)
    print(format_table(rows))
    figs = plot(rows, out)
    print(f"\nresults      {path} ({len(rows)} rows, {time.monotonic() - t0:.1f} s)")
    print("figures      " + (", ".join(figs) if figs else
                             "none (pip install 'fabricsim[plot]' for matplotlib)"))
    return 0


def add_parser(sub) -> None:
    r = sub.add_parser("reproduce", help="the paper's evaluation: iteration time and cost per fabric",
                       description="Simulate the paper's models on the five fabrics at each link "
                                   "speed; print the table, write results.parquet and figures.")
    r.add_argument("--study", choices=STUDIES, default="main")
    r.add_argument("--quick", action="store_true", help="128 GPUs, 2 models, 100/400 Gbps (~10 s)")
    r.add_argument("--out", help="output directory (default fabricsim-out/reproduce-STUDY[-quick])")
    r.add_argument("--models", help="comma-separated subset of the paper's models")
    r.add_argument("--link-gbps", help="comma-separated link speeds (default 100,200,400,800)")
    r.add_argument("--fabrics", help=f"comma-separated subset of {','.join(FABRICS)}")
    r.add_argument("--gating", choices=["reference", "synthetic"],
                   help="expert load (default reference, as the paper)")
    r.add_argument("--gpu-profile", help="a100 (default), h100, h800")
    r.add_argument("--engine", choices=["flow", "packet"],
                   help="network engine (default flow; packet: DCTCP packets, much slower)")
    r.add_argument("--mode", choices=["isolated", "exact"],
                   help="runner mode (default isolated: collectives timed alone, memoized)")
    r.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the points on N local processes (default 1: in this process)")
    r.add_argument("--quiet", action="store_true", help="no progress line")
    r.set_defaults(func=_cmd_reproduce)
