"""``qta bench sim``: simulation speed of the generated array (a benchmark, not a test).

Prints, per simulator and array size: Verilator build time and peak memory, simulated cycles per
second and MACs per second while Python drives new random data every cycle, and (Verilator)
while the array free-runs on a held input row, which is the RTL model's own speed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cdm_qta.hw.config import ArrayConfig

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="benchmarks (simulation speed)")
    parser.add_argument("what", choices=["sim"], help="what to benchmark")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument(
        "--icarus-sizes", type=int, nargs="*", default=[8, 16], help="sizes also run in Icarus"
    )
    parser.add_argument("--rows", type=int, default=2000, help="input rows per driven tile")
    parser.add_argument("--free-cycles", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from cdm_qta.sw.demo import format_table

    from .jobs import run_job

    plan = [("verilator", n) for n in args.sizes] + [("icarus", n) for n in args.icarus_sizes]
    rows = []
    for sim, n in plan:
        cfg = ArrayConfig(n=n)
        free = args.free_cycles if sim == "verilator" else 0
        if free and n >= 64:
            free = max(free // 4, 1000)
        rows_per_tile = args.rows if sim == "verilator" else max(args.rows // 10, 4 * n)
        job = {"coroutine": "bench_throughput", "seed": 1, "rows": rows_per_tile}
        if free:
            job["free_cycles"] = free
        print(f"[bench] {sim} n={n} ...", flush=True)
        result = run_job(sim, cfg, job)
        rows.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
    if not args.json:
        columns = [
            "simulator",
            "n",
            "generate_s",
            "build_s",
            "build_peak_mb",
            "driven_cycles_per_s",
            "driven_macs_per_s",
            "free_cycles_per_s",
            "free_macs_per_s",
        ]
        print(format_table(rows, columns))
    return 0
