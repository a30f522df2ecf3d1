"""``qta bench sim``: simulation speed of the generated array (a benchmark, not a test).

Prints, per simulator and array size: Verilator build time and peak memory, simulated cycles per
second and MACs per second while Python drives new random data every cycle, and (Verilator)
while the array free-runs on a held input row, which is the RTL model's own speed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cdm_qta.hw.config import AcceleratorConfig, ArrayConfig

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="benchmarks (simulation speed)")
    parser.add_argument(
        "what",
        choices=["sim", "accel"],
        help="sim: simulation speed of the array; accel: paper-shaped GEMMs DRAM to DRAM",
    )
    parser.add_argument("--n", type=int, default=16, help="array size for `accel` (default 16)")
    parser.add_argument(
        "--scale", type=int, default=4, help="divide the paper's GEMM shapes by this (accel)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument(
        "--icarus-sizes", type=int, nargs="*", default=[8, 16], help="sizes also run in Icarus"
    )
    parser.add_argument("--rows", type=int, default=2000, help="input rows per driven tile")
    parser.add_argument("--free-cycles", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    parser.set_defaults(run=run)
    return parser


def run_accel(args: argparse.Namespace) -> int:
    import tempfile
    import time
    from pathlib import Path

    from cdm_qta.hw.generate import generate_accelerator
    from cdm_qta.sw.demo import format_table

    from .accel_jobs import CONFIG_ENV, JOB_ENV
    from .toolchain import AXI_WARNINGS, build_and_test, build_root

    cfg = AcceleratorConfig.scaled(args.n, dram_size=1 << 24)
    root = build_root()
    print(f"[bench] generating and building the N={args.n} accelerator ...", flush=True)
    source = generate_accelerator(cfg, root / "gen")
    build_dir = (root / "sim" / "verilator" / cfg.module_name).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "bench.json"
        job.write_text(json.dumps({"seed": 1, "scale": args.scale}))
        start = time.perf_counter()
        tests, failed = build_and_test(
            sim="verilator",
            sources=[source],
            toplevel=cfg.module_name,
            test_module="cdm_qta.tb.accel_jobs",
            build_dir=build_dir,
            testcase="bench_gemms",
            extra_env={
                CONFIG_ENV: cfg.to_json(),
                JOB_ENV: str(job),
                "PYTHONWARNINGS": AXI_WARNINGS,
            },
            log_file=build_dir.parent / f"{cfg.module_name}.bench.log",
            timings=timings,
        )
        if tests == 0 or failed:
            print(f"benchmark failed: see {build_dir.parent / (cfg.module_name + '.bench.log')}")
            return 1
        rows = json.loads(job.with_suffix(".result.json").read_text())
    print(
        f"build {timings['build_s']:.0f} s, run {timings['test_s']:.0f} s "
        f"(total {time.perf_counter() - start:.0f} s)"
    )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    columns = [
        "gemm",
        "shape",
        "dataflow",
        "bit_exact",
        "macs",
        "ideal_cycles",
        "array_cycles",
        "cycles",
        "utilization",
        "array_utilization",
        "vs_array",
        "compute_busy",
        "macs_per_s",
    ]
    print(format_table(rows, columns))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.what == "accel":
        return run_accel(args)
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
