"""``qta bench``: benchmarks that print numbers (tables, or JSON lines), never tests.

* ``sim``: simulation speed of the generated array per simulator and size: build time and peak
  memory, simulated cycles and MACs per second while Python drives new random data every
  cycle, and (Verilator) while the array free-runs on a held input row, the RTL's own speed.
* ``accel``: the paper's GEMM shapes (scaled) DRAM to DRAM through the whole accelerator in
  one simulator session: bit-exactness, cycles against the array alone, utilization, engine
  occupancy and wall-clock speed.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from cdm_qta import golden
from cdm_qta.hw.config import AcceleratorConfig, ArrayConfig, Dataflow
from cdm_qta.hw.isa import Compute
from cdm_qta.hw.timing import OsTile, WsTile, program_cycles

from .tables import format_table

__all__ = ["add_parser", "paper_shapes", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="benchmarks (simulation speed, GEMM tables)")
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


def paper_shapes(scale: int) -> list[tuple[str, int, int, int]]:
    """GEMM shapes of the paper's setting (SD cross-attention), divided by ``scale``.

    Image tokens 4096/1024/256, text tokens 77, channels 320..1280, LoRA rank 4 (never scaled).
    """

    def s(x: int) -> int:
        return max(1, x // scale)

    return [
        ("proj 4096x320x320", s(4096), s(320), s(320)),
        ("proj 1024x640x640", s(1024), s(640), s(640)),
        ("proj 256x1280x1280", s(256), s(1280), s(1280)),
        ("to_k text 77x768x320", s(77), s(768), s(320)),
        ("QK^T 4096x40x77", s(4096), s(40), s(77)),
        ("lora down 4096x320x4", s(4096), s(320), 4),
        ("lora up 4096x4x320", s(4096), 4, s(320)),
    ]


def run_accel(args: argparse.Namespace) -> int:
    from .rtl_backend import RtlBackend
    from .runtime import compile_for, execute

    cfg = AcceleratorConfig.scaled(args.n, dram_size=1 << 24)
    n = cfg.n
    rng = np.random.default_rng(1)
    print(f"[bench] generating and building the N={n} accelerator ...", flush=True)
    rows = []
    start = time.perf_counter()
    with RtlBackend("verilator", cfg) as backend:
        backend.session.open()
        build = backend.session.build
        for name, m, k, nn in paper_shapes(args.scale):
            for mode in ("ws", "os"):
                a = golden.rand_int(rng, (m, k))
                b = golden.rand_int(rng, (k, nn))
                program = compile_for(cfg, a, b, mode)
                t0 = time.perf_counter()
                got, stats = execute(backend, program, a, b)
                wall = time.perf_counter() - t0
                tiles = [
                    WsTile(i.k, i.m) if i.dataflow == Dataflow.WS else OsTile(i.k)
                    for i in program.instructions
                    if isinstance(i, Compute)
                ]
                array_cycles = program_cycles(tiles, n)
                cycles = stats.cycles or 0
                rows.append(
                    {
                        "gemm": name,
                        "shape": f"{m}x{k}x{nn}",
                        "dataflow": mode.upper(),
                        "bit_exact": stats.ok and bool(np.array_equal(got, golden.gemm(a, b))),
                        "macs": stats.macs,
                        "ideal_cycles": -(-stats.macs // (n * n)),
                        "array_cycles": array_cycles,
                        "cycles": cycles,
                        "utilization": round(stats.macs / (cycles * n * n), 3),
                        "array_utilization": round(stats.macs / (array_cycles * n * n), 3),
                        "vs_array": round(array_cycles / cycles, 3),
                        "compute_busy": round((stats.counters["compute_busy"] or 0) / cycles, 3),
                        "wall_s": round(wall, 2),
                        "macs_per_s": round(stats.macs / wall),
                    }
                )
                if args.json:
                    print(json.dumps(rows[-1]), flush=True)
    assert build is not None
    print(
        f"generate {build.generate_s:.0f} s, build {build.build_s:.0f} s, "
        f"total {time.perf_counter() - start:.0f} s"
    )
    if not args.json:
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
    return 0 if all(r["bit_exact"] for r in rows) else 1


def run_sim(args: argparse.Namespace) -> int:
    from cdm_qta.tb.session import run_job
    from cdm_qta.tb.targets import SimTarget, Top

    plan = [("verilator", n) for n in args.sizes] + [("icarus", n) for n in args.icarus_sizes]
    rows = []
    for sim, n in plan:
        free = args.free_cycles if sim == "verilator" else 0
        if free and n >= 64:
            free = max(free // 4, 1000)
        rows_per_tile = args.rows if sim == "verilator" else max(args.rows // 10, 4 * n)
        print(f"[bench] {sim} n={n} ...", flush=True)
        target = SimTarget(sim, Top.ARRAY, ArrayConfig(n=n))
        result = run_job(target, "bench_throughput", rows=rows_per_tile, free_cycles=free)
        result.update(simulator=sim, n=n)
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


def run(args: argparse.Namespace) -> int:
    return run_accel(args) if args.what == "accel" else run_sim(args)
