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
    MixNet with 2 to 6 of the 8 NICs on the OCS (Mixtral 8x22B, 400 Gbps), against the fat-tree.
``scale``
    Cluster size 128 to 4096 servers (Mixtral 8x22B, 400 Gbps; data parallelism grows), fat-tree
    and MixNet.
``batch``
    Micro-batches of 32 and 64 sequences (paper D.4; Mixtral 8x22B, 400 Gbps), every fabric.
``failures``
    MixNet with a failed EPS NIC, OCS NIC, GPU or server (:mod:`fabricsim.failures`), against
    no failure and the fat-tree (Mixtral 8x22B, 400 Gbps).

``models`` and ``link_speeds`` replace a sensitivity study's model and speed (each model at each
speed); ``fabrics`` replaces the fabrics of ``main``, ``scale`` and ``batch`` (the other studies
compare MixNet variants with the fat-tree). ``--quick`` shrinks any study to about a minute: 128
GPUs, two models (Mixtral 8x7B and Qwen-MoE in their Table 1 configurations), 100 and 400 Gbps.

Results: ``results.parquet`` in ``--out`` (one row per point: every parameter, the iteration time
and its breakdown, the network cost (NaN for a link speed without prices), ``iteration_time_norm``
(to the model's fastest configuration) and ``perf_per_dollar_norm`` (to the fat-tree at the same
link speed; NaN without prices)), rewritten (temporary name, then rename) after every finished
point, so that a stopped run keeps what it finished; and PNG figures (:func:`plot`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time

from fabricsim.errors import ConfigError, require
from fabricsim.experiment import COST_NAMES, FABRICS, PAPER_PARALLELISM, Point

__all__ = ["STUDIES", "FIGURES", "study_points", "run_study", "write_results", "plot",
           "add_parser"]

STUDIES = ("main", "delay", "alpha", "scale", "batch", "failures", "fidelity")
LINK_SPEEDS = (100, 200, 400, 800)
QUICK_MODELS = {"mixtral-8x7b": dict(tp=4, ep=8, pp=4), "qwen-moe": dict(tp=1, ep=16, pp=4)}
#: The studies that compare MixNet variants with the fat-tree (their fabrics are fixed).
_MIXNET_STUDIES = ("delay", "alpha", "failures")
#: The figures each study writes (:func:`plot`), in order.
FIGURES = {
    "main": ("iteration_time.png", "iteration_time_norm.png", "perf_per_dollar.png",
             "cost_vs_size.png", "pareto.png"),
    "delay": ("delay.png", "pareto.png"),
    "alpha": ("alpha.png", "pareto.png"),
    "scale": ("scale.png", "pareto.png"),
    "batch": ("batch.png", "pareto.png"),
    "failures": ("failures.png", "pareto.png"),
    "fidelity": ("fidelity.png",),
}


def study_points(study: str = "main", *, quick: bool = False, models=None, link_speeds=None,
                 fabrics=None, **overrides) -> list:
    """The points of a study; ``overrides`` (e.g. ``gating``, ``gpu_profile``, ``mode``) apply to
    every point."""
    require(study in STUDIES, "study", f"must be one of {', '.join(STUDIES)}, got {study!r}")
    gpus = 128 if quick else 1024
    table = QUICK_MODELS if quick else PAPER_PARALLELISM
    if models:
        unknown = [m for m in models if m not in PAPER_PARALLELISM]
        require(not unknown, "models", f"must be among the paper's models "
                f"({', '.join(PAPER_PARALLELISM)}), got unknown {unknown}")
        table = {m: QUICK_MODELS.get(m, PAPER_PARALLELISM[m]) if quick else PAPER_PARALLELISM[m]
                 for m in models}
    if fabrics:
        bad = [f for f in fabrics if f not in FABRICS]
        require(not bad, "fabrics", f"must be among {', '.join(FABRICS)}, got unknown {bad}")
        require(study not in _MIXNET_STUDIES, "fabrics", f"apply to the main, scale and batch "
                f"studies (the {study} study compares MixNet variants with the fat-tree), got "
                f"{list(fabrics)}")

    def point(model, fabric, link, **kw):
        parallelism = dict(table[model])
        if quick:  # the paper's global batch per GPU: 128 sequences at 1024 GPUs
            parallelism.setdefault("global_batch", 128 * gpus // 1024)
        if model == "qwen-moe" and _qwen_switch(overrides) == "sec7.3":
            parallelism["ep"] = 32  # "32 experts with 32-way EP" (section 7.3)
        if model in ISOLATED_BY_DEFAULT and "mode" not in overrides:
            parallelism["mode"] = "isolated"
        return Point(model=model, fabric=fabric, link_gbps=float(link), gpus=kw.pop("gpus", gpus),
                     **{**parallelism, **kw, **overrides})

    if study in ("main", "fidelity"):
        speeds = tuple(link_speeds or ((100, 400) if quick else LINK_SPEEDS))
        main = [point(m, f, b) for m in table for b in speeds for f in (fabrics or FABRICS)]
        if study == "main":
            return main
        from fabricsim.fidelity import fidelity_points

        flipped = [k for k in overrides if k in _switch_names() or k == "profile"
                   and overrides[k] != "released"]
        require(not flipped, "--" + (flipped or ["x"])[0].replace("_", "-"),
                "the fidelity study starts from the released profile and flips each switch "
                "itself; leave the switches and --profile out")
        return [p for _, p in fidelity_points(main)]
    # a sensitivity study: one model (or those asked for) at 400 Gbps (or the speeds asked for)
    focus = list(table) if models else [next(iter(table)) if quick else "mixtral-8x22b"]
    cases = [(m, link) for m in focus for link in (link_speeds or (400,))]
    if study == "delay":
        return [p for m, link in cases for p in
                [point(m, "fattree", link)] + [point(m, "mixnet", link, delay_ms=d)
                                               for d in (0.001, 1, 25, 100, 1000, 10_000)]]
    if study == "alpha":
        return [p for m, link in cases for p in
                [point(m, "fattree", link)] + [point(m, "mixnet", link, alpha=a)
                                               for a in range(2, 7)]]
    if study == "failures":
        failures = ((), ("nic:0:eps",), ("nic:0:ocs",), ("gpu:0",), ("server:0",))
        return [p for m, link in cases for p in
                [point(m, "fattree", link)] + [point(m, "mixnet", link, failures=c)
                                               for c in failures]]
    if study == "scale":
        sizes = (16, 32) if quick else (128, 512, 1024, 4096)
        return [point(m, f, link, gpus=8 * s) for m, link in cases for s in sizes
                for f in (fabrics or ("fattree", "mixnet"))]
    batches = (16,) if quick else (32, 64)  # batch
    return [point(m, f, link, micro_batch=mb) for m, link in cases for mb in batches
            for f in (fabrics or FABRICS)]


#: Models that the studies run in ``isolated`` mode unless ``--mode`` says otherwise: DeepSeek-R1's
#: exact iteration at 1024 GPUs (15 million flows, EP 64) takes far longer than a point should
#: (2026-12-03, with solo collectives: 2-3 minutes on the fat-tree, 15-18.5 minutes on the 3:1
#: fat-tree, where its all-to-alls share oversubscribed links with the pipeline's traffic; 1.0%
#: longer than isolated on the fat-tree at 400 Gbps; the main study with it exact: 48 minutes with
#: two workers; benchmarks/README.md E1 and R1). The run says so (:func:`isolated_note`).
ISOLATED_BY_DEFAULT = ("deepseek-r1",)


def isolated_note(points) -> str:
    """A line naming the models run in isolated mode by :data:`ISOLATED_BY_DEFAULT` ("" if none)."""
    models = sorted({p.model for p in points if p.model in ISOLATED_BY_DEFAULT
                     and p.mode == "isolated" and p.switches["mode"] == "isolated"})
    if not models:
        return ""
    return (f"note         {', '.join(models)} ran in isolated mode (collectives timed alone): "
            "its exact iteration takes 2-3 minutes on the 1024-GPU fat-tree and up to 18.5 on "
            "the 3:1 one; --mode exact runs it anyway")


def _switch_names() -> tuple:
    from fabricsim.profiles import switch_names

    return switch_names()


def _qwen_switch(overrides: dict) -> str:
    from fabricsim.profiles import resolve_switches

    return resolve_switches(overrides.get("profile", "released"), overrides)["qwen"]


def _normalize(rows: list) -> None:
    """Add ``iteration_time_norm`` (to the fastest row of the same model, GPU count and
    micro-batch) and ``perf_per_dollar_norm`` (to the fat-tree row of the same model, GPU count,
    micro-batch and link speed) to every row. ``perf_per_dollar_norm`` is NaN where that fat-tree
    row is missing or either network cost is NaN (a link speed without prices)."""
    from fabricsim.cost import normalized_perf_per_dollar
    from fabricsim.profiles import switch_names

    def key(r):  # rows are only compared under the same modelling readings
        return (r["model"], r["gpus"], r["micro_batch"], r.get("engine"), r.get("gating"),
                r.get("gpu_profile"), *(r.get(name) for name in switch_names()))

    best = {}
    for r in rows:
        best[key(r)] = min(best.get(key(r), math.inf), r["iteration_time_s"])
    ref = {(key(r), r["link_gbps"]): r for r in rows if r["fabric"] == "fattree"}
    for r in rows:
        r["iteration_time_norm"] = r["iteration_time_s"] / best[key(r)]
        f = ref.get((key(r), r["link_gbps"]))
        priced = f is not None and not (math.isnan(r["network_cost_usd"])
                                        or math.isnan(f["network_cost_usd"]))
        r["perf_per_dollar_norm"] = (normalized_perf_per_dollar(
            r["iteration_time_s"], r["network_cost_usd"], f["iteration_time_s"],
            f["network_cost_usd"]) if priced else math.nan)


def write_results(rows: list, out_dir: str) -> str:
    """``results.parquet`` in ``out_dir`` (temporary name, then rename); returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    return _write_table(rows, os.path.join(out_dir, "results.parquet"))


def run_study(points: list, *, progress=None, workers: int = 1, scheduler=None,
              out_dir=None, point_progress=None) -> list:
    """Run the points on the sweep runner (:func:`fabricsim.sweep.execute`): one by one in this
    process (``workers=1``, the default), on ``workers`` local processes, or on the workers of a
    Dask cluster (``scheduler``: an address or a ``distributed.Client``). Returns the normalized
    result rows in the order of ``points``; ``progress(done, total, row)`` is called as points
    finish; with ``workers=1``, ``point_progress(tasks_done, tasks, sim_ps)`` follows the running
    point's iteration. With ``out_dir``, ``results.parquet`` there is rewritten after every finished point
    with the rows finished so far (normalized among themselves: NaN where a reference row is not
    there yet), and at the end with every row. A point that fails raises its error (a
    ConfigError as such)."""
    from fabricsim.experiment import point_id
    from fabricsim.sweep import execute, resolve_point

    require(isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1,
            "workers", f"must be a positive integer, got {workers!r}")
    tasks = [(p, point_id(resolve_point(p))) for p in points]
    rows = [None] * len(points)
    done = 0
    for i, outcome in execute(tasks, workers=0 if workers == 1 else workers, scheduler=scheduler,
                              point_progress=point_progress):
        if outcome[0] != "ok":
            info = outcome[1]
            if info.get("config_error") and info.get("field"):
                raise ConfigError(info["field"], info.get("detail") or info["message"])
            raise RuntimeError(f"point {i} ({points[i]}) failed: {info['type']}: "
                               f"{info['message']}\n{info.get('traceback', '')}")
        rows[i] = outcome[1]
        done += 1
        if out_dir is not None and done < len(points):
            partial = [dict(r) for r in rows if r is not None]
            _normalize(partial)
            write_results(partial, out_dir)
        if progress is not None:
            progress(done, len(points), rows[i])
    _normalize(rows)
    if out_dir is not None:
        write_results(rows, out_dir)
    return rows


_CASE_KEYS = ("gpus", "micro_batch", "alpha", "delay_ms", "failures")


def _varying(rows: list) -> list:
    """The keys of :data:`_CASE_KEYS` whose value differs between rows (or point dicts)."""
    return [k for k in _CASE_KEYS if len({str(r[k]) for r in rows}) > 1]


def _case(row: dict, varying: list) -> str:
    return " ".join(f"{k}={row[k]}" for k in varying if row[k] not in ("", None))


def _num(value: float, spec: str, width: int) -> str:
    """``value`` formatted with ``spec``, or "n/a" for NaN, right-aligned in ``width``."""
    return f"{'n/a' if math.isnan(value) else format(value, spec):>{width}}"


def format_table(rows: list) -> str:
    """The printed table; a ``case`` column shows the parameters that vary besides the fabric."""
    varying = _varying(rows)
    head = (f"{'model':<15}{'fabric':<9}{'Gbps':>6}{'iter (s)':>10}{'norm':>7}{'ep (s)':>9}"
            f"{'ocs (s)':>9}{'cost ($)':>13}{'perf/$':>8}" + ("  case" if varying else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<15}{r['fabric']:<9}{r['link_gbps']:>6g}"
                     f"{r['iteration_time_s']:>10.3f}{_num(r['iteration_time_norm'], '.2f', 7)}"
                     f"{r['ep_s']:>9.3f}{r['ocs_s']:>9.3f}"
                     f"{_num(r['network_cost_usd'], ',.0f', 13)}"
                     f"{_num(r['perf_per_dollar_norm'], '.2f', 8)}"
                     + (f"  {_case(r, varying)}" if varying else ""))
    return "\n".join(lines)


def format_switches(rows: list) -> str:
    """The profile and every switch's value(s) over ``rows``, one line each."""
    from fabricsim.profiles import switch_names

    def values(key):
        return ", ".join(sorted({str(r[key]) for r in rows}))

    lines = [f"profile      {values('profile')}"]
    lines += [f"  {name:<20}{values(name)}" for name in switch_names()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib's Agg canvas; imported here only, so that ``import fabricsim`` stays light)

_LABELS = {"fattree": "fat-tree", "oversub": "3:1 fat-tree", "railopt": "rail-optimized",
           "topoopt": "TopoOpt", "mixnet": "MixNet"}
_COLORS = {f: f"C{i}" for i, f in enumerate(FABRICS)}  # one colour per fabric in every figure
_NO_VALUES = "no finite values\n(a link speed without prices,\nor no fat-tree row)"


def _ordered(values) -> list:
    """The distinct values, in order of first appearance."""
    return list(dict.fromkeys(values))


def _fabrics(rows: list) -> list:
    return [f for f in FABRICS if any(r["fabric"] == f for r in rows)]


def _cases(rows: list) -> list:
    """(model, link_gbps) of a sensitivity study's panels, in order of first appearance."""
    return _ordered((r["model"], r["link_gbps"]) for r in rows)


def _of_case(rows: list, case: tuple, fabric=None) -> list:
    return [r for r in rows if (r["model"], r["link_gbps"]) == case
            and (fabric is None or r["fabric"] == fabric)]


def _figure(panels: int, width: float = 4.2, height: float = 3.2):
    """A figure of ``panels`` axes side by side, on an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height))
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def _save(fig, out_dir: str, name: str) -> str:
    """Write ``fig`` as ``out_dir/name`` (temporary name, then rename); a panel without values
    says so; the legend (of the first panel with labelled lines or bars) goes to the right."""
    from fabricsim.traces.schema import replaced_on_success

    legend = None
    for ax in fig.axes:
        if not ax.has_data():
            ax.text(0.5, 0.5, _NO_VALUES, ha="center", va="center", fontsize=8,
                    transform=ax.transAxes)
        elif legend is None and ax.get_legend_handles_labels()[0]:
            legend = ax.get_legend_handles_labels()
    if legend:
        fig.axes[-1].legend(*legend, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    with replaced_on_success(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return path


def _line(ax, rows: list, x, y, **style) -> None:
    """Plot ``y(row)`` against ``x(row)`` (sorted by x), leaving out NaN values."""
    pts = sorted((x(r), y(r)) for r in rows if math.isfinite(y(r)))
    if pts:
        ax.plot(*zip(*pts), marker="o", **style)


def _bars(ax, rows: list, group, y, group_label) -> bool:
    """Grouped bars: one group per value of ``group(row)``, one bar per fabric; NaN left out
    (its group labelled n/a). Returns whether any bar was drawn."""
    groups = sorted(_ordered(group(r) for r in rows))
    fabrics = _fabrics(rows)
    width = 0.8 / len(fabrics)
    for j, f in enumerate(fabrics):
        pts = [(groups.index(group(r)) - 0.4 + (j + 0.5) * width, y(r)) for r in rows
               if r["fabric"] == f and math.isfinite(y(r))]
        if pts:
            ax.bar(*zip(*pts), width, label=_LABELS[f], color=_COLORS[f])
    shown = {group(r) for r in rows if math.isfinite(y(r))}
    ax.set_xticks(range(len(groups)), [group_label(g) + ("" if g in shown else "\n(n/a)")
                                       for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    return bool(shown)


def _log2_axis(ax, values) -> None:
    """A base-2 log x axis with a tick at each of ``values``, written out."""
    values = sorted(set(values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set_xticks([], minor=True)


def _get(key):
    return lambda r: r[key]


def _fig_vs_link(rows: list, y: str, ylabel: str):
    """Per model: ``y`` against the link speed, one line per fabric (the paper's Fig. 11a)."""
    models = _ordered(r["model"] for r in rows)
    fig, axes = _figure(len(models))
    for ax, m in zip(axes, models):
        for f in _fabrics(rows):
            _line(ax, [r for r in rows if r["model"] == m and r["fabric"] == f],
                  _get("link_gbps"), _get(y), label=_LABELS[f], color=_COLORS[f])
        _log2_axis(ax, [r["link_gbps"] for r in rows if r["model"] == m])
        ax.set(title=m, xlabel="link speed (Gbps)", ylabel=ylabel)
    return fig


def _fig_iteration_time(rows):
    return _fig_vs_link(rows, "iteration_time_s", "iteration time (s)")


def _fig_iteration_time_norm(rows):
    return _fig_vs_link(rows, "iteration_time_norm", "iteration time / model's fastest")


def _fig_perf_per_dollar(rows):
    """Per model: performance per dollar relative to the fat-tree, bars per link speed and
    fabric (the paper's Fig. 11c)."""
    models = _ordered(r["model"] for r in rows)
    fig, axes = _figure(len(models))
    for ax, m in zip(axes, models):
        if _bars(ax, [r for r in rows if r["model"] == m], _get("link_gbps"),
                 _get("perf_per_dollar_norm"), lambda b: f"{b:g}"):
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set(title=m, xlabel="link speed (Gbps)", ylabel="perf. per dollar / fat-tree")
    return fig


def _fig_cost_vs_size(rows):
    """Network cost of each fabric of the rows against the cluster size, at 400 Gbps."""
    from fabricsim.cost import network_cost_usd

    fig, (ax,) = _figure(1, width=4.5)
    servers = [128, 256, 512, 1024, 2048, 4096]
    for f in _fabrics(rows):
        ax.plot(servers, [network_cost_usd(COST_NAMES[f], 8 * s, 400) / 1e6 for s in servers],
                marker="o", label=_LABELS[f], color=_COLORS[f])
    _log2_axis(ax, servers)
    ax.set(xlabel="servers (8 GPUs, 400 Gbps)", ylabel="network cost (M$)")
    return fig


def _fig_pareto(rows):
    """Iterations per second against network cost, per fabric (rows with a cost)."""
    fig, (ax,) = _figure(1, width=4.5)
    for f in _fabrics(rows):
        pts = [(r["network_cost_usd"] / 1e6, 1 / r["iteration_time_s"]) for r in rows
               if r["fabric"] == f and math.isfinite(r["network_cost_usd"])]
        if pts:
            ax.scatter(*zip(*pts), label=_LABELS[f], s=14, color=_COLORS[f])
    ax.set(xlabel="network cost (M$)", ylabel="iterations per second",
           title="performance vs cost (upper left is better)")
    return fig


def _fig_mixnet_vs(rows: list, x: str, xlabel: str, metrics: tuple, logx: bool = False):
    """Per (model, link speed) and metric: MixNet's ``metric`` against ``x``, the fat-tree's as a
    horizontal reference line."""
    cases = _cases(rows)
    fig, axes = _figure(len(cases) * len(metrics))
    panels = iter(axes)
    for case in cases:
        for y, ylabel in metrics:
            ax = next(panels)
            _line(ax, [r for r in _of_case(rows, case, "mixnet") if r[x] > 0 or not logx],
                  _get(x), _get(y), label=_LABELS["mixnet"], color=_COLORS["mixnet"])
            for r in _of_case(rows, case, "fattree"):
                if math.isfinite(r[y]):
                    ax.axhline(r[y], color=_COLORS["fattree"], ls="--", label=_LABELS["fattree"])
            if logx:
                ax.set_xscale("log")
            ax.set(title=f"{case[0]}, {case[1]:g} Gbps", xlabel=xlabel, ylabel=ylabel)
    return fig


def _fig_delay(rows):
    return _fig_mixnet_vs(rows, "delay_ms", "reconfiguration delay (ms)",
                          (("iteration_time_s", "iteration time (s)"),), logx=True)


def _fig_alpha(rows):
    return _fig_mixnet_vs(rows, "alpha", "alpha (NICs per server on the OCS)",
                          (("iteration_time_s", "iteration time (s)"),
                           ("perf_per_dollar_norm", "perf. per dollar / fat-tree")))


def _fig_scale(rows):
    """Per (model, link speed): iteration time and network cost per GPU against the number of
    servers, one line per fabric."""
    cases = _cases(rows)
    fig, axes = _figure(2 * len(cases))
    for i, case in enumerate(cases):
        for ax, y, ylabel in ((axes[2 * i], _get("iteration_time_s"), "iteration time (s)"),
                              (axes[2 * i + 1], lambda r: r["network_cost_usd"] / r["gpus"],
                               "network cost per GPU ($)")):
            for f in _fabrics(rows):
                _line(ax, _of_case(rows, case, f), lambda r: r["gpus"] // 8, y, label=_LABELS[f],
                      color=_COLORS[f])
            _log2_axis(ax, [r["gpus"] // 8 for r in _of_case(rows, case)])
            ax.set(title=f"{case[0]}, {case[1]:g} Gbps", xlabel="servers (8 GPUs)", ylabel=ylabel)
    return fig


def _fig_batch(rows):
    """Per (model, link speed): iteration time and performance per dollar per fabric, grouped
    by micro-batch size."""
    cases = _cases(rows)
    fig, axes = _figure(2 * len(cases))
    for i, case in enumerate(cases):
        for ax, y, ylabel in ((axes[2 * i], "iteration_time_s", "iteration time (s)"),
                              (axes[2 * i + 1], "perf_per_dollar_norm",
                               "perf. per dollar / fat-tree")):
            _bars(ax, _of_case(rows, case), _get("micro_batch"), _get(y), str)
            ax.set(title=f"{case[0]}, {case[1]:g} Gbps", xlabel="micro-batch (sequences)",
                   ylabel=ylabel)
    return fig


def _fig_failures(rows):
    """Per (model, link speed): iteration time of the fat-tree, MixNet without a failure and
    MixNet with each failure case."""
    cases = _cases(rows)
    fig, axes = _figure(len(cases), width=5.5, height=3.6)
    for ax, case in zip(axes, cases):
        bars = [(_LABELS["fattree"], r["iteration_time_s"], _COLORS["fattree"])
                for r in _of_case(rows, case, "fattree")]
        bars += [(f"{_LABELS['mixnet']}\n{r['failures'] or 'no failure'}".replace(",", "\n"),
                  r["iteration_time_s"], "C7" if r["failures"] else _COLORS["mixnet"])
                 for r in _of_case(rows, case, "mixnet")]
        labels, values, colors = zip(*bars)
        ax.bar_label(ax.bar(range(len(bars)), values, color=colors), fmt="%.3f", fontsize=6)
        ax.set_xticks(range(len(bars)), labels, fontsize=6)
        ax.set(title=f"{case[0]}, {case[1]:g} Gbps", ylabel="iteration time (s)")
    return fig


def _fig_fidelity_rows(rows: list):
    """The fidelity figure of result rows (labelled by the switch each departs in)."""
    from fabricsim import fidelity

    return _fig_fidelity(fidelity.summary_rows(
        [{**r, "flip": r.get("flip") or fidelity.label(r)} for r in rows]))


def _fig_fidelity(summary: list):
    """Per link speed of the paper's claims (100 and 400 Gbps, else those run): MixNet /
    fat-tree, TopoOpt / MixNet and MixNet's perf/$ per flip (x) and model (marker), with the
    paper's claimed bands shaded."""
    from fabricsim.fidelity import CLAIMS

    flips = _ordered(r["flip"] for r in summary)
    links = [b for b in (100.0, 400.0) if any(r["link_gbps"] == b for r in summary)] or \
        sorted({r["link_gbps"] for r in summary})[:2]
    metrics = (("mixnet_over_fattree", "MixNet / fat-tree\niteration time"),
               ("topoopt_over_mixnet", "TopoOpt / MixNet\niteration time"),
               ("perf_per_dollar", "MixNet perf/$\n(fat-tree = 1)"))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(8.0, 0.45 * len(flips)) * len(links), 3.0 * len(metrics)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(metrics), len(links), squeeze=False)
    models = _ordered(r["model"] for r in summary)
    for j, link in enumerate(links):
        for i, (key, ylabel) in enumerate(metrics):
            ax = axes[i][j]
            for k, model in enumerate(models):
                pts = [(flips.index(r["flip"]), r[key]) for r in summary
                       if r["model"] == model and r["link_gbps"] == link and r[key] == r[key]]
                if pts:
                    ax.plot(*zip(*pts), marker="o^sDv"[k % 5], linestyle="", label=model)
            for claim, at, lo, hi in CLAIMS:
                if claim == key and at in (None, link):
                    ax.axhspan(lo, hi, color="0.85", zorder=0)
            if key == "mixnet_over_fattree":
                ax.axhline(1.0, color="0.5", linestyle="--", linewidth=0.8)
            ax.set_ylabel(ylabel)
            ax.set_xticks(range(len(flips)))
            ax.set_xticklabels(flips if i == len(metrics) - 1 else [""] * len(flips),
                               rotation=60, ha="right", fontsize=7)
            if i == 0:
                ax.set_title(f"{link:g} Gbps (grey: the paper's claim)")
    return fig


_MAKERS = {"iteration_time.png": _fig_iteration_time,
           "iteration_time_norm.png": _fig_iteration_time_norm,
           "perf_per_dollar.png": _fig_perf_per_dollar, "cost_vs_size.png": _fig_cost_vs_size,
           "pareto.png": _fig_pareto, "delay.png": _fig_delay, "alpha.png": _fig_alpha,
           "scale.png": _fig_scale, "batch.png": _fig_batch, "failures.png": _fig_failures,
           "fidelity.png": _fig_fidelity_rows}


def plot(rows: list, out_dir: str, study: str = "main") -> list:
    """Write the figures of ``study`` (:data:`FIGURES`) for its result rows as PNG files in
    ``out_dir``; returns their paths. NaN values (no prices, no fat-tree row) are left out."""
    require(study in STUDIES, "study", f"must be one of {', '.join(STUDIES)}, got {study!r}")
    require(bool(rows), "rows", "no result rows to plot")
    os.makedirs(out_dir, exist_ok=True)
    return [_save(_MAKERS[name](rows), out_dir, name) for name in FIGURES[study]]


# ---------------------------------------------------------------------------------------------
# The command


def _finish_fidelity(rows: list, labeled: list, out: str, t0: float, note: str = "") -> int:
    """Complete and summarize the fidelity study's rows (``labeled``: its ``(label, point)``
    pairs, in the order of ``rows``); write and print them."""
    from fabricsim import fidelity

    base_points = [p for lab, p in labeled if lab == "baseline"]
    rows = fidelity.complete_rows(rows, [lab for lab, _ in labeled], base_points)
    _normalize(rows)
    path = write_results(rows, out)
    summary = fidelity.summary_rows(rows)
    _write_table(summary, os.path.join(out, "fidelity.parquet"))
    print(fidelity.format_summary(summary))
    if note:
        print(note)
    figure = _save(_fig_fidelity(summary), out, "fidelity.png")  # = plot(rows, out, "fidelity")
    simulated = sum(r["simulated"] for r in rows)
    print(f"\nresults      {path} ({len(rows)} rows, {simulated} simulated, the others a "
          f"baseline row where the switch cannot apply; {time.monotonic() - t0:.1f} s)")
    print(f"summary      {os.path.join(out, 'fidelity.parquet')}")
    print(f"figures      {figure}")
    return 0


def _write_table(rows: list, path: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fabricsim.traces.schema import replaced_on_success

    with replaced_on_success(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return path


def _option_list(text: str, option: str, number: bool = False) -> list:
    """The items of a comma-separated option value, duplicates dropped (``number``: link speeds,
    finite numbers > 0). An empty value or item is an error naming ``option``."""
    what = "numbers > 0 (Gbit/s)" if number else "names"
    items = [s.strip() for s in text.split(",")]
    require(all(items), option, f"must be a comma-separated list of {what} without empty items, "
            f"got {text!r}")
    if number:
        try:
            items = [float(s) for s in items]
        except ValueError:
            items = [math.nan]
        require(all(math.isfinite(b) and b > 0 for b in items), option,
                f"must be a comma-separated list of {what}, got {text!r}")
    return _ordered(items)


def _output_dir(out: str) -> list:
    """Create the output folder ``out``; returns the folders created (deepest first), which the
    caller removes if the run writes nothing. A bad ``--out`` is an error naming it."""
    require(not os.path.exists(out) or os.path.isdir(out), "--out",
            f"must be a folder, got the file {out}")
    missing, d = [], os.path.abspath(out)
    while not os.path.exists(d):
        missing.append(d)
        d = os.path.dirname(d)
    require(os.path.isdir(d), "--out", f"must be a folder, but {d} is a file")
    require(os.access(d, os.W_OK | os.X_OK), "--out", f"must be a folder we can write to, got "
            f"{out} ({d} is not writable)")
    os.makedirs(out, exist_ok=True)
    return missing


def _progress(points: list, quiet: bool):
    """``progress(done, total, row)`` for :func:`run_study` on stderr: a line updated in place
    (carriage returns) on a terminal, one line per finished point otherwise (a log file); nothing
    with ``quiet``. Returns that callback, the within-a-point one (``point_progress`` of
    :func:`run_study`) and a function that ends the output."""
    if quiet:
        return None, None, lambda: None
    tty = sys.stderr.isatty()
    varying = _varying([p.to_dict() for p in points])
    t0 = time.monotonic()
    state = {"done": 0, "shown": t0, "point_t0": t0}

    def show(text):
        sys.stderr.write(f"\r\x1b[K  {text}" if tty else f"  {text}\n")
        sys.stderr.flush()

    def progress(done, total, row):
        state.update(done=done, point_t0=time.monotonic())
        eta = (time.monotonic() - t0) / done * (total - done)
        case = _case(row, varying)
        text = (f"{done}/{total} points, {row['model']} {row['fabric']} {row['link_gbps']:g} Gbps"
                f"{' ' + case if case else ''}: {row['iteration_time_s']:.3f} s; ETA {eta:.0f} s")
        show(text)

    def within(tasks_done, tasks, sim_ps):
        """The running point (one worker): its tasks and simulated time, every second on a
        terminal, every minute in a log."""
        now = time.monotonic()
        if now - state["shown"] < (1.0 if tty else 60.0):
            return
        state["shown"] = now
        point = points[state["done"]]
        text = (f"point {state['done'] + 1}/{len(points)} ({point.model} {point.fabric}): "
                f"{tasks_done:,}/{tasks:,} tasks, {sim_ps / 1e12:.3f} s simulated, "
                f"{now - state['point_t0']:.0f} s")
        show(text)

    def close():
        if tty:
            sys.stderr.write("\n")

    return progress, within, close


#: The option that sets a parameter whose check failed.
_OPTIONS = {"models": "--models", "fabrics": "--fabrics", "profile": "--gpu-profile",
            "gpu_profile": "--gpu-profile"}


def _cmd_reproduce(args) -> int:
    from fabricsim.sweep import _check_point

    # every input is checked before anything is created or simulated
    from fabricsim.profiles import switch_names

    overrides = {k: v for k, v in (("gating", args.gating), ("gpu_profile", args.gpu_profile),
                                   ("engine", args.engine)) if v is not None}
    overrides.update({k: getattr(args, k) for k in switch_names() if getattr(args, k) is not None},
                     profile=args.profile)
    models = None if args.models is None else _option_list(args.models, "--models")
    fabrics = None if args.fabrics is None else _option_list(args.fabrics, "--fabrics")
    speeds = None if args.link_gbps is None else _option_list(args.link_gbps, "--link-gbps",
                                                              number=True)
    require(args.workers >= 1, "--workers", f"must be a positive integer, got {args.workers}")
    try:
        points = study_points(args.study, quick=args.quick, models=models, link_speeds=speeds,
                              fabrics=fabrics, **overrides)
        for p in points:
            _check_point(p)
    except ConfigError as exc:  # name the option, not the parameter
        if exc.field not in _OPTIONS:
            raise
        raise ConfigError(_OPTIONS[exc.field], exc.message) from None
    out = args.out or os.path.join("fabricsim-out", f"reproduce-{args.study}" +
                                   ("-quick" if args.quick else ""))
    created = _output_dir(out)
    t0 = time.monotonic()
    progress, within, close = _progress(points, args.quiet)
    try:
        try:
            rows = run_study(points, progress=progress, workers=args.workers, out_dir=out,
                             point_progress=within)
        finally:
            close()
    except BaseException:
        for d in created:  # a folder this run created and left empty goes again
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise
    path = os.path.join(out, "results.parquet")
    note = isolated_note(points)
    if args.study == "fidelity":
        from fabricsim.fidelity import fidelity_points

        main = study_points("main", quick=args.quick, models=models, link_speeds=speeds,
                            fabrics=fabrics, **overrides)
        return _finish_fidelity(rows, fidelity_points(main), out, t0, note)
    print(format_table(rows))
    print("\n" + format_switches(rows))
    if note:
        print(note)
    figures = plot(rows, out, args.study)
    print(f"\nresults      {path} ({len(rows)} rows, {time.monotonic() - t0:.1f} s)")
    print(f"figures      {', '.join(figures)}")
    return 0


def add_parser(sub) -> None:
    r = sub.add_parser("reproduce", help="the paper's evaluation: iteration time and cost per fabric",
                       description="Simulate the paper's models on the five fabrics at each link "
                                   "speed (or a sensitivity study); print the table, write "
                                   "results.parquet (after every finished point) and figures.")
    r.add_argument("--study", choices=STUDIES, default="main")
    r.add_argument("--quick", action="store_true", help="128 GPUs, 2 models, 100/400 Gbps (~15 s)")
    r.add_argument("--out", help="output directory (default fabricsim-out/reproduce-STUDY[-quick])")
    r.add_argument("--models", help="comma-separated subset of the paper's models")
    r.add_argument("--link-gbps", help="comma-separated link speeds (default 100,200,400,800; "
                                       "400 for the sensitivity studies)")
    r.add_argument("--fabrics", help=f"comma-separated subset of {','.join(FABRICS)} (studies "
                                     "main, scale, batch)")
    r.add_argument("--gating", choices=["reference", "synthetic"],
                   help="expert load (default reference, as the paper)")
    r.add_argument("--gpu-profile", help="a100 (default), h100, h800")
    r.add_argument("--engine", choices=["flow", "packet"],
                   help="network engine (default flow; packet: DCTCP packets, much slower)")
    r.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the points on N local processes (default 1: in this process)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    from fabricsim.profiles import add_switch_arguments

    add_switch_arguments(r)
    r.set_defaults(func=_cmd_reproduce)
