"""``fabricsim workload``: list models, describe an iteration's workload, record a gating trace."""

from __future__ import annotations

import json

from fabricsim.errors import require

__all__ = ["add_parser"]


def _workload_config(args):
    from fabricsim.profiles import WORKLOAD_SWITCHES, switches_from_args
    from fabricsim.workload.models import get_model
    from fabricsim.workload.taskgraph import WorkloadConfig

    get_model(args.model)  # an unknown model fails here, before the other checks
    for flag in ("gpus", "tp", "pp", "ep"):
        value = getattr(args, flag)
        require(value >= 1, f"--{flag}", f"must be a positive integer, got {value}")
    require(args.tp <= 8, "--tp", f"must divide the GPUs of one server (8), got {args.tp}")
    dp = args.dp
    if dp is None:
        inner = args.tp * args.pp * args.ep
        require(inner >= 1 and args.gpus % inner == 0, "--dp",
                f"cannot be derived: --gpus {args.gpus} is not a multiple of tp * pp * ep = {inner}")
        dp = args.gpus // inner
    params = _gating_params(args)
    require(args.gating == "trace" or not args.gating_trace, "--gating-trace",
            "is for --gating trace")
    require(args.gating != "trace" or args.gating_trace, "--gating-trace",
            "is required with --gating trace: a .parquet, .arrow(s) or .h5 expert-load trace")
    if args.gating_trace:
        params["path"] = args.gating_trace
    switches = switches_from_args(args, WORKLOAD_SWITCHES) if hasattr(args, "profile") else {}
    return WorkloadConfig(**switches, model=args.model,
                          gpus=args.gpus, dp=dp, tp=args.tp, pp=args.pp, ep=args.ep,
                          micro_batch=args.micro_batch, seq_len=args.seq_len,
                          micro_batches=args.micro_batches, gating=args.gating,
                          gating_params=params, seed=args.seed, gpu_profile=args.gpu_profile,
                          schedule=args.schedule, layer_split=args.layer_split,
                          iteration=args.iteration, expert_tp=args.expert_tp,
                          compute_overrides=args.compute_overrides)


def _gating_params(args) -> dict:
    """``--gating-param KEY=VALUE`` options as a dict (values parsed as JSON when they can be)."""
    params = {}
    for item in args.gating_param or ():
        key, sep, value = item.partition("=")
        require(bool(sep) and key, "--gating-param", f"must be KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _gb(x):
    return f"{x / 1e9:,.2f} GB"


def _cmd_models(args) -> int:
    from fabricsim.workload.models import CATALOG

    if args.json:
        print(json.dumps({n: m.to_dict() for n, m in sorted(CATALOG.items())}, indent=2))
        return 0
    print(f"{'name':<20}{'layers':>8}{'moe':>5}{'hidden':>8}{'experts':>9}{'top-k':>6}"
          f"{'expert ffn':>11}  description")
    for name, m in sorted(CATALOG.items()):
        experts = f"{m.routed_experts}" + (f"+{m.shared_experts}" if m.shared_experts else "")
        print(f"{name:<20}{m.layers:>8}{m.moe_layers:>5}{m.hidden:>8}{experts:>9}{m.top_k:>6}"
              f"{m.expert_ffn:>11}  {m.description}")
    return 0


def _cmd_describe(args) -> int:
    from fabricsim.workload.describe import describe

    d = describe(_workload_config(args))
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    p = d["placement"]
    print(f"model        {d['model']} on {p['gpus']} GPUs ({p['servers']} servers): dp {p['dp']}, "
          f"tp {p['tp']}, pp {p['pp']}, ep {p['ep']}; {d['micro_batches']} micro-batches of "
          f"{d['config']['micro_batch']} x {d['config']['seq_len']} tokens")
    print("bytes per iteration (whole job)")
    for k in ("tp", "ep", "pp", "dp"):
        print(f"  {k:<10} {_gb(d['bytes_by_parallelism'][k]):>16}  {100 * d['bytes_share'][k]:5.1f}%")
    links = d["bytes_by_link"]
    print(f"  {'nvlink':<10} {_gb(links['nvlink']):>16}\n  {'network':<10} {_gb(links['network']):>16}")
    print(f"compute per stage (busiest GPU, whole iteration, {d['config']['gpu_profile']})")
    for s in d["compute_per_stage"]:
        print(f"  stage {s['stage']:<3} {s['layers']:>3} layers  fwd {1e3 * s['fwd_s']:9.1f} ms  "
              f"bwd {1e3 * s['bwd_s']:9.1f} ms")
    print(f"tasks        {d['tasks']:,} ({d['dependencies']:,} dependencies), built in "
          f"{d['build_s']:.2f} s")
    print(f"critical path with infinite bandwidth: {1e3 * d['compute_time_s']:.1f} ms")
    return 0


def _cmd_record(args) -> int:
    from fabricsim.workload.gating import make_expert_load, write_trace
    from fabricsim.workload.models import get_model

    model = get_model(args.model)
    require(args.iterations >= 1, "--iterations", f"must be >= 1, got {args.iterations}")
    require(args.micro_batches >= 1, "--micro-batches", f"must be >= 1, got {args.micro_batches}")
    load = make_expert_load("synthetic", ep=args.ep, n_experts=model.routed_experts,
                            top_k=model.top_k, tokens_per_rank=args.micro_batch * args.seq_len,
                            moe_layers=model.moe_layers, seed=args.seed, **_gating_params(args))
    rows = write_trace(args.out, load, iterations=args.iterations,
                       micro_batches=args.micro_batches, layers=model.moe_layers)
    print(f"{args.out}: {rows:,} rows ({args.iterations} iterations x {model.moe_layers} MoE "
          f"layers x {args.micro_batches} micro-batches, ep {args.ep}, {model.routed_experts} experts)")
    return 0


def _shape_args(p, *, parallel: bool):
    p.add_argument("--model", required=True,
                   help="catalog name (fabricsim workload models) or a model .toml file")
    if parallel:
        p.add_argument("--gpus", type=int, required=True)
        p.add_argument("--tp", type=int, default=1)
        p.add_argument("--ep", type=int, default=1)
        p.add_argument("--pp", type=int, default=1)
        p.add_argument("--dp", type=int, help="default: gpus / (tp * pp * ep)")
    else:
        p.add_argument("--ep", type=int, required=True)
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per micro-batch (8)")
    p.add_argument("--seq-len", type=int, default=4096, help="tokens per sequence (4096)")
    p.add_argument("--seed", type=int, default=0)


def _gating_param_arg(p):
    p.add_argument("--gating-param", action="append", metavar="KEY=VALUE",
                   help="a synthetic gating parameter, e.g. skew=0.5 (repeatable)")


def add_parser(sub) -> None:
    """Register ``fabricsim workload`` and its actions on an argparse subparsers object."""
    w = sub.add_parser("workload", help="MoE models, per-iteration traffic and compute")
    wsub = w.add_subparsers(dest="workload_command", metavar="ACTION")
    models = wsub.add_parser("models", help="list the built-in models")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_cmd_models)

    d = wsub.add_parser("describe", help="bytes, compute and tasks of one training iteration",
                        description="Build one iteration's task graph and summarize it: bytes by "
                                    "parallelism and link type, compute per stage, task count, "
                                    "critical path with infinite bandwidth.")
    _shape_args(d, parallel=True)
    d.add_argument("--micro-batches", type=int, help="per iteration and pipeline (default: pp)")
    d.add_argument("--gating", choices=["reference", "synthetic", "trace"], default="reference")
    d.add_argument("--gating-trace", help="trace file for --gating trace")
    _gating_param_arg(d)
    d.add_argument("--iteration", type=int, default=0, help="training iteration (gating) (0)")
    d.add_argument("--expert-tp", action="store_true",
                   help="split experts over tp too (default: whole experts, TP for attention)")
    d.add_argument("--compute-overrides", metavar="FILE",
                   help="TOML of measured operator times (see fabricsim.workload.compute)")
    d.add_argument("--gpu-profile", default="a100", help="a100 (default), h100, h800")
    d.add_argument("--schedule", choices=["1f1b", "gpipe"], default="1f1b")
    d.add_argument("--layer-split", choices=["even", "balanced"], default="even")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    from fabricsim.profiles import WORKLOAD_SWITCHES, add_switch_arguments

    add_switch_arguments(d, WORKLOAD_SWITCHES)
    d.set_defaults(func=_cmd_describe)

    r = wsub.add_parser("record", help="write a synthetic expert-load trace",
                        description="Write a synthetic gating trace in the trace schema "
                                    "(iteration, layer, micro_batch, src_rank, expert, tokens).")
    _shape_args(r, parallel=False)
    _gating_param_arg(r)
    r.add_argument("--iterations", type=int, default=10)
    r.add_argument("--micro-batches", type=int, default=16,
                   help="micro-batches per iteration (16; must cover describe's --micro-batches)")
    r.add_argument("--out", required=True, help="output file: .parquet, .arrow(s) or .h5")
    r.set_defaults(func=_cmd_record)
    w.set_defaults(func=lambda a: (w.print_help(), 2)[1])
