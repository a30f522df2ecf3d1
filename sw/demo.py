"""``qta demo``: the default job. Generate the array, run random GEMMs through it in RTL.

Until the training flow exists this is the project's main job: it shows in one command that the
generated Verilog computes exactly what the golden model says, in exactly the cycles the timing
model predicts.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cdm_qta.hw.config import ArrayConfig

__all__ = ["add_parser", "format_table", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="generate the array and run random GEMMs through its RTL (default N=64)"
    )
    parser.add_argument("--n", type=int, default=ArrayConfig().n, help="array size (default 64)")
    parser.add_argument("--sim", choices=["verilator", "icarus"], default="verilator")
    parser.add_argument("--m", type=int, default=256, help="input rows of the WS GEMM")
    parser.add_argument("--k", type=int, default=256, help="reduction length of the OS GEMM")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the operands")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)
    return parser


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain fixed-width table (no dependency) for terminal output."""
    text = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in text]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def run(args: argparse.Namespace) -> int:
    from cdm_qta.tb.jobs import run_job

    cfg = ArrayConfig(n=args.n)
    if args.m < 1 or args.k < 1:
        raise ValueError(f"--m and --k must be at least 1, not {args.m} and {args.k}")
    if not args.json:
        print(f"generating and building the {cfg.n}x{cfg.n} array for {args.sim} ...", flush=True)
    result = run_job(
        args.sim, cfg, {"coroutine": "demo_gemm", "seed": args.seed, "m": args.m, "k": args.k}
    )
    rows = result["gemms"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"built in {result['build_s']} s (Verilog generated in {result['generate_s']} s)\n")
        columns = ["dataflow", "shape", "bit_exact", "cycles", "model_cycles", "macs"]
        print(format_table(rows, [*columns, "utilization"]))
    ok = all(r["bit_exact"] and r["cycles"] == r["model_cycles"] for r in rows)
    return 0 if ok else 1
