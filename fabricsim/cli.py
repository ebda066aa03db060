"""The ``fabricsim`` command line (stdlib argparse).

Every user error prints one line, ``fabricsim: error: <field>: <what is allowed>``, and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from fabricsim import __version__
from fabricsim.cliutil import ArgumentParser, format_time, run_command
from fabricsim.errors import FabricsimError

__all__ = ["main"]


class _Progress:
    """A one-line progress report on stderr for runs longer than a second (TTY only)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done, total, now_ps):
        if not self.enabled:
            return
        t = time.monotonic()
        if t - self.t0 < 1.0 or t - self.last < 0.25:
            return
        self.last = t
        self.shown = True
        sys.stderr.write(f"\r  {done:,}/{total:,} flows done, simulated {format_time(now_ps)}, "
                         f"{t - self.t0:.1f} s   ")
        sys.stderr.flush()

    def close(self):
        if self.shown:
            sys.stderr.write("\n")


def _cmd_run(args) -> int:
    from fabricsim.config import load_scenario
    from fabricsim.scenario import run_scenario

    scenario = load_scenario(args.scenario, profile=args.profile)
    if args.engine:
        import dataclasses

        from fabricsim.config import RunConfig

        scenario = dataclasses.replace(scenario, run=RunConfig(**{**dataclasses.asdict(scenario.run),
                                                                  "engine": args.engine}))
    out = args.out or os.path.join("fabricsim-out", scenario.name)
    progress = _Progress(not args.quiet)
    try:
        result, s = run_scenario(scenario, out, progress=progress)
    finally:
        progress.close()
    stats = s["engine_stats"]
    gb = s["bytes"] / 1e9
    print(f"scenario     {args.scenario}")
    print(f"fabric       {s['fabric']}")
    print(f"traffic      {scenario.traffic.pattern}: {s['flows']:,} flows, {gb:.3f} GB")
    how = (f"tolerance {scenario.run.tolerance:g}" if scenario.run.engine == "flow"
           else f"DCTCP, {scenario.packet.mtu_bytes} B packets, {scenario.packet.nic_scheduling} NICs")
    print(f"engine       {scenario.run.engine} ({how}): {stats['wall_s']:.2f} s wall, {stats['events']:,} events")
    status = "" if s["status"] == "done" else f"  [{s['status']}: {s['flows'] - s['flows_finished']:,} flows unfinished]"
    print(f"completion   {format_time(s['completion_ps'])}{status}")
    if s["host_gbps_mean"] is not None:
        print(f"throughput   per sending host: mean {s['host_gbps_mean']:.2f} Gbps, "
              f"min {s['host_gbps_min']:.2f} Gbps ({s['senders']} senders)")
    print(f"FCT          p50 {format_time(s['fct_p50_ps'])}, p99 {format_time(s['fct_p99_ps'])}")
    if scenario.run.engine == "packet":
        mtu = scenario.packet.mtu_bytes
        print(f"packets      {stats['data_link_hops']:,} data link-hops, {stats['retransmissions']:,} "
              f"retransmissions, {stats['ecn_marks']:,} ECN marks, {stats['drops']:,} drops")
        print(f"queues       peak {stats['peak_queue_bytes']:,} B ({stats['peak_queue_bytes'] / mtu:.1f} "
              f"packets of {mtu} B) on the busiest link")
    files = list(result.trace_files) + [os.path.join(out, "summary.json")]  # what this run wrote
    print(f"traces       {', '.join(files)}")
    return 0


def _cmd_trace_show(args) -> int:
    import numpy as np

    from fabricsim.config import require_file
    from fabricsim.traces import read_metadata, scan_flow_trace

    path = args.file
    require_file(path, "trace")
    try:
        scan = scan_flow_trace(path)
    except ValueError as exc:
        raise FabricsimError(f"trace: {exc}") from None
    table = scan.table
    meta = read_metadata(table.schema.metadata or {})
    print(f"file            {path}")
    print(f"schema version  {meta['schema_version']}")
    scenario = meta["scenario"]
    if scenario:
        print(f"scenario        {scenario.get('name', '')} ({', '.join(sorted(scenario))})")
    if scan.cut is None:
        print("truncated       no")
    else:
        why = ("ends with a torn batch" if scan.cut == "torn" else "has no end marker")
        print(f"truncated       yes: the stream {why} (the writer was stopped); "
              f"{scan.batches:,} complete batches kept")
    total = meta["flows"]
    finish = table.column("finish_ps").to_numpy()
    n_done = int((finish >= 0).sum())
    if total is not None and total != table.num_rows:
        print(f"flows           {table.num_rows:,} records of the run's {total:,} flows")
    else:
        print(f"flows           {table.num_rows:,}")
    if total is not None:
        unfinished = f"{total - n_done:,}"
    else:  # a trace without the run's flow count: the records tell the finished ones only
        unfinished = f"{table.num_rows - n_done:,}" + (" or more (the run's flow count is not recorded)"
                                                       if scan.cut else "")
    print(f"finished        {n_done:,}")
    print(f"unfinished      {unfinished}")
    if table.num_rows:
        start = table.column("start_ps").to_numpy()
        done = finish >= 0
        print(f"bytes           {int(table.column('size_bytes').to_numpy().sum()):,}")
        if done.any():
            fct = (finish - start)[done]
            print(f"first start     {format_time(int(start.min()))}")
            print(f"last finish     {format_time(int(finish[done].max()))}")
            print(f"FCT             p50 {format_time(float(np.percentile(fct, 50)))}, "
                  f"p99 {format_time(float(np.percentile(fct, 99)))}, max {format_time(int(fct.max()))}")
        kinds = table.column("path_kind").to_pandas().value_counts() if _has_pandas() else None
        if kinds is not None:
            print("path kinds      " + ", ".join(f"{k} {v:,}" for k, v in kinds.items() if v))
    return 0


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def _cmd_trace_convert(args) -> int:
    from fabricsim.config import require_file
    from fabricsim.errors import ConfigError
    from fabricsim.traces import to_parquet

    require_file(args.file, "trace")
    if args.out is not None and os.path.isdir(args.out):
        raise ConfigError("--out", f"{args.out} is a directory, expected a file")
    try:
        out = to_parquet(args.file, args.out)
    except ValueError as exc:
        raise FabricsimError(f"trace: {exc}") from None
    print(out)
    return 0


class _VersionAction(argparse.Action):
    """``--version``: the version, and the folder of the Numba cache (printed as is, unwrapped)."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from fabricsim._jit import CACHE_DIR

        cache = CACHE_DIR or "none (no writable folder: kernels compile in every process)"
        print(f"fabricsim {__version__}\nNumba cache: {cache} (set NUMBA_CACHE_DIR to choose it)")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="fabricsim",
        description="Simulate GPU-cluster fabrics for Mixture-of-Experts training.")
    p.add_argument("--version", action=_VersionAction,
                   help="show the version and where compiled kernels are cached, and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="simulate a traffic scenario (TOML) on a fabric",
                         description="Simulate the traffic scenario of a TOML file; print completion "
                                     "time, per-host throughput and FCT percentiles; write traces.")
    run.add_argument("scenario", help="scenario file, e.g. examples/small.toml")
    run.add_argument("--out", help="output directory (default fabricsim-out/<scenario name>); the run "
                                   "replaces the files a previous run wrote there, and leaves others")
    run.add_argument("--engine", choices=["flow", "packet"], help="override run.engine of the scenario")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--profile", choices=["released", "physical"],
                     help="override run.profile: the defaults of fabric.nvlink_gbps and "
                          "packet.mtu_bytes (released: 600 GiB/s, 1500 B on fat-trees and 9000 B on "
                          "MixNet/TopoOpt; physical: 900 GB/s, 9000 B)")
    run.set_defaults(func=_cmd_run)

    trace = sub.add_parser("trace", help="inspect or convert trace files")
    tsub = trace.add_subparsers(dest="trace_command", metavar="ACTION")
    show = tsub.add_parser("show", help="summarize a flow trace (.arrows), saying whether it was cut "
                                        "short and how many flows are unfinished")
    show.add_argument("file")
    show.set_defaults(func=_cmd_trace_show)
    conv = tsub.add_parser("convert", help="convert a flow trace (.arrows) to Parquet")
    conv.add_argument("file")
    conv.add_argument("--to", choices=["parquet"], required=True, help="target format")
    conv.add_argument("--out", help="output file (default: beside the input, .parquet)")
    conv.set_defaults(func=_cmd_trace_convert)
    trace.set_defaults(func=lambda a: (trace.print_help(), 2)[1])

    from fabricsim.workload.cli import add_parser as add_workload_parser

    add_workload_parser(sub)
    from fabricsim.cost import add_parser as add_cost_parser

    add_cost_parser(sub)
    from fabricsim.reproduce import add_parser as add_reproduce_parser

    add_reproduce_parser(sub)
    from fabricsim.ocs.cli import add_parser as add_ocs_parser

    add_ocs_parser(sub)
    from fabricsim.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
