"""``qta demo``: generate the array, run random GEMMs through it in RTL.

It shows in one command that the generated Verilog computes exactly what the golden model
says, in exactly the cycles the timing model predicts.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cdm_qta.hw.config import ArrayConfig
from cdm_qta.tb.toolchain import SIMULATORS

from .tables import format_table

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="generate the array and run random GEMMs through its RTL (default N=64)"
    )
    parser.add_argument("--n", type=int, default=ArrayConfig().n, help="array size (default 64)")
    parser.add_argument("--sim", choices=SIMULATORS, default="verilator")
    parser.add_argument("--m", type=int, default=256, help="input rows of the WS GEMM")
    parser.add_argument("--k", type=int, default=256, help="reduction length of the OS GEMM")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the operands")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from cdm_qta.tb.session import run_job
    from cdm_qta.tb.targets import SimTarget, Top

    cfg = ArrayConfig(n=args.n)
    if args.m < 1 or args.k < 1:
        raise ValueError(f"--m and --k must be at least 1, not {args.m} and {args.k}")
    if not args.json:
        print(f"generating and building the {cfg.n}x{cfg.n} array for {args.sim} ...", flush=True)
    target = SimTarget(args.sim, Top.ARRAY, cfg)
    result = run_job(target, "demo_gemm", seed=args.seed, m=args.m, k=args.k)
    rows = result["gemms"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"built in {result['build_s']} s (Verilog generated in {result['generate_s']} s)\n")
        columns = ["dataflow", "shape", "bit_exact", "cycles", "model_cycles", "macs"]
        print(format_table(rows, [*columns, "utilization"]))
    ok = all(r["bit_exact"] and r["cycles"] == r["model_cycles"] for r in rows)
    return 0 if ok else 1
