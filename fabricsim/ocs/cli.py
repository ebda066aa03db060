"""``fabricsim ocs allocate``: the circuits of one region for a demand matrix."""

from __future__ import annotations

import json

__all__ = ["add_parser"]


def _cmd_allocate(args) -> int:
    from fabricsim.ocs.allocate import VARIANTS, allocate_circuits, completion_bound
    from fabricsim.traffic import read_matrix

    from fabricsim.cliutil import format_time
    from fabricsim.errors import require

    require(0 <= args.alpha <= 7, "--alpha", f"must be an integer 0 .. 7 (at least one of a "
            f"server's 8 NICs stays on the EPS), got {args.alpha}")
    require(args.link_gbps > 0, "--link-gbps", f"must be > 0, got {args.link_gbps}")
    demand = read_matrix(args.demand, None, field="--demand")
    n = demand.shape[0]
    require(n >= 2, "--demand", f"needs at least 2 servers (a circuit joins two), got a {n} x {n} "
            f"matrix in {args.demand}")
    eps_gbps = (8 - args.alpha) * args.link_gbps
    rows = {}
    for variant in ([args.variant] if args.variant != "all" else list(VARIANTS)):
        c = allocate_circuits(demand, args.alpha, variant, link_gbps=args.link_gbps,
                              eps_gbps=eps_gbps if eps_gbps > 0 else None)
        rows[variant] = (c, completion_bound(demand, c, args.link_gbps, eps_gbps) if eps_gbps > 0
                         else float("nan"))
    if args.json:
        print(json.dumps({v: {"circuits": c.tolist(), "total_circuits": int(c.sum() // 2),
                              "completion_bound_s": b} for v, (c, b) in rows.items()}, indent=2))
        return 0
    print(f"demand       {args.demand}: {demand.shape[0]} servers, {demand.sum() / 1e6:,.3f} MB; "
          f"alpha {args.alpha}, {args.link_gbps:g} Gbps per circuit, EPS {eps_gbps:g} Gbps per server")
    for variant, (c, b) in rows.items():
        print(f"\n{variant}: {int(c.sum() // 2)} circuits, all-to-all completion bound "
              f"{format_time(b * 1e12)}")
        width = max(2, len(str(int(c.max()))) + 1)
        for row in c:
            print("  " + "".join(f"{int(x):>{width}}" for x in row))
    return 0


def add_parser(sub) -> None:
    o = sub.add_parser("ocs", help="OCS circuit allocation")
    osub = o.add_subparsers(dest="ocs_command", metavar="ACTION")
    a = osub.add_parser("allocate", help="circuits of one region for a server demand matrix",
                        description="Allocate a region's optical circuits for a servers x servers "
                                    "demand (bytes; .npy, .csv or .parquet) and print the circuit "
                                    "matrix with the per-pair all-to-all completion bound.")
    a.add_argument("--demand", required=True, help="servers x servers bytes (.npy, .csv, .parquet)")
    a.add_argument("--alpha", type=int, default=6, help="OCS ports per server (6)")
    a.add_argument("--variant", default="reference",
                   choices=["paper", "reference", "minmax", "all"])
    a.add_argument("--link-gbps", type=float, default=100.0,
                   help="per-circuit speed, for the bound (100; the EPS gets (8 - alpha) x this)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_allocate)
    o.set_defaults(func=lambda args: (o.print_help(), 2)[1])
