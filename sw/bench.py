"""``qta bench``: benchmarks that print numbers (tables, or JSON lines), never tests.

* ``sim``: simulation speed of the generated array per simulator and size: build time and peak
  memory, simulated cycles and MACs per second while Python drives new random data every
  cycle, and (Verilator) while the array free-runs on a held input row, the RTL's own speed.
* ``accel``: the paper's GEMM shapes (scaled) DRAM to DRAM through the whole accelerator in
  one simulator session: bit-exactness, cycles against the array alone, utilization, engine
  occupancy and wall-clock speed.
* ``speed``: how fast the whole accelerator simulates, DRAM to DRAM, on the paper's projection
  GEMM at several array sizes and both simulators, side by side with the array alone
  (free-running) and NumPy's int32 matmul on the same GEMM, plus one real LoRA layer's eight
  GEMMs chained through DRAM in one simulator launch; all measured in one run.
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
        choices=["sim", "accel", "speed"],
        help="sim: simulation speed of the array; accel: paper-shaped GEMMs DRAM to DRAM; "
        "speed: whole-accelerator simulation speed against the array alone and NumPy",
    )
    parser.add_argument("--n", type=int, default=16, help="array size for `accel` (default 16)")
    parser.add_argument(
        "--scale", type=int, default=4, help="divide the paper's GEMM shapes by this (accel)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="array sizes (sim: 8 16 64; "
                        "speed: 8 16 32 64)")  # fmt: skip
    parser.add_argument(
        "--icarus-scale",
        type=int,
        default=4,
        help="speed: Icarus runs the GEMM divided by this (it is ~100x slower; default 4)",
    )
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


def _array_free_run(sim: str, n: int, cycles: int) -> dict[str, Any]:
    """The array alone, free-running on a held input row: the speed the RTL itself allows."""
    from cdm_qta.tb.session import run_job
    from cdm_qta.tb.targets import SimTarget, Top

    target = SimTarget(sim, Top.ARRAY, ArrayConfig(n=n))
    return run_job(target, "bench_throughput", rows=4 * n, free_cycles=cycles)


def _numpy_macs_per_s(a: np.ndarray, b: np.ndarray) -> float:
    """NumPy int32 matmul on the same operands (best of three), MAC/s."""
    a32, b32 = a.astype(np.int32), b.astype(np.int32)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a32 @ b32
        best = min(best, time.perf_counter() - t0)
    return a.shape[0] * a.shape[1] * b.shape[1] / best


def _sliced_programs(
    backend: Any, cfg: AcceleratorConfig, a: np.ndarray, b: np.ndarray, mode: str
) -> list[tuple[Any, slice]]:
    """``a @ b`` as the fewest equal row slices whose programs fit the simulator's program
    area (one program at N >= 16; a 4096x320x320 GEMM at N=8 is 265k instructions, the 1 MB
    area holds 65,536), as a host would send a long GEMM: each slice's program and rows."""
    from .runtime import compile_for

    limit = backend.top.max_program
    slices = 1
    while True:
        rows = -(-a.shape[0] // slices)
        first = compile_for(cfg, a[:rows], b, mode)
        if len(first.instructions) <= limit or rows <= cfg.n:
            break
        slices *= 2
    out = [(first, slice(0, rows))]
    for i in range(rows, a.shape[0], rows):
        out.append((compile_for(cfg, a[i : i + rows], b, mode), slice(i, i + rows)))
    return out


def _run_sliced(
    backend: Any, programs: list[tuple[Any, slice]], a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, int, bool]:
    """Run the slices one after another in the same launch: result, summed cycles, all clean."""
    from .runtime import execute

    parts, cycles, ok = [], 0, True
    for program, rows in programs:
        c, stats = execute(backend, program, a[rows], b)
        parts.append(c)
        cycles += stats.cycles or 0
        ok &= stats.ok
    return np.concatenate(parts), cycles, ok


def _mixed_lora_layer(backend: Any, cfg: AcceleratorConfig) -> dict[str, Any]:
    """The eight GEMMs of one real LoRA layer (golden/vectors), forward and backward, run as
    a training step runs them: each one's operands land in DRAM, its result is read back."""
    from cdm_qta.golden.vectors import load_all

    from .runtime import run_gemm

    layer = load_all()[0]
    macs = cycles = 0
    exact = True
    t0 = time.perf_counter()
    for g in layer.gemms.values():
        op = g.op
        c, stats = run_gemm(backend, cfg, g.a, g.b, "auto", op.trans_a, op.trans_b)
        exact &= stats.ok and bool(np.array_equal(c, g.acc))
        macs += stats.macs
        cycles += stats.cycles or 0
    wall = time.perf_counter() - t0
    return {
        "gemm": f"LoRA layer {layer.layer}: {len(layer.gemms)} GEMMs",
        "bit_exact": exact,
        "macs": macs,
        "cycles": cycles,
        "utilization": round(macs / (cycles * cfg.n**2), 3) if cycles else 0.0,
        "wall_s": round(wall, 2),
        "cycles_per_s": round(cycles / wall),
        "macs_per_s": round(macs / wall),
    }


def run_speed(args: argparse.Namespace) -> int:
    """Issue 10's table: the whole accelerator against the array alone and NumPy, per size."""
    from .rtl_backend import RtlBackend

    sizes = args.sizes or [8, 16, 32, 64]
    plan = [("verilator", n, 1) for n in sizes]
    plan += [("icarus", n, args.icarus_scale) for n in args.icarus_sizes]
    rng = np.random.default_rng(1)
    rows: list[dict[str, Any]] = []
    mixed: dict[str, Any] | None = None
    for sim, n, scale in plan:
        m, k, nn = 4096 // scale, 320 // scale, 320 // scale
        a, b = golden.rand_int(rng, (m, k)), golden.rand_int(rng, (k, nn))
        want = golden.gemm(a, b)
        cfg = AcceleratorConfig.scaled(n, dram_size=1 << 24)
        print(f"[bench] {sim} N={n}: building the accelerator ...", flush=True)
        with RtlBackend(sim, cfg) as backend:
            backend.session.open()
            build = backend.session.build
            assert build is not None
            peak = build.build_peak_mb  # None where the build could not be measured
            for mode in ("ws", "os"):
                print(f"[bench] {sim} N={n}: {m}x{k}x{nn} {mode.upper()} ...", flush=True)
                programs = _sliced_programs(backend, cfg, a, b, mode)  # not timed: software
                t0 = time.perf_counter()
                got, cycles, stats_ok = _run_sliced(backend, programs, a, b)
                wall = time.perf_counter() - t0
                slices = len(programs)
                macs = m * k * nn
                rows.append(
                    {
                        "simulator": sim,
                        "n": n,
                        "gemm": f"{m}x{k}x{nn}",
                        "dataflow": mode.upper(),
                        "programs": slices,
                        "bit_exact": stats_ok and bool(np.array_equal(got, want)),
                        "cycles": cycles,
                        "utilization": round(macs / (cycles * n * n), 3),
                        "wall_s": round(wall, 2),
                        "cycles_per_s": round(cycles / wall),
                        "macs_per_s": round(macs / wall),
                        "build_s": build.build_s,
                        "build_peak_mb": peak,
                    }
                )
            if sim == "verilator" and n == min(sizes):
                print(f"[bench] {sim} N={n}: one LoRA layer, eight GEMMs ...", flush=True)
                mixed = _mixed_lora_layer(backend, cfg)
                mixed.update(simulator=sim, n=n)
        free = _array_free_run(sim, n, args.free_cycles if sim == "verilator" else 2000)
        numpy_speed = round(_numpy_macs_per_s(a, b))
        for row in rows:
            if row["simulator"] == sim and row["n"] == n:
                row["array_free_macs_per_s"] = free["free_macs_per_s"] or free["driven_macs_per_s"]
                row["numpy_macs_per_s"] = numpy_speed
                if args.json:
                    print(json.dumps(row), flush=True)
    extra = [mixed] if mixed else []
    if args.json:
        for row in extra:
            print(json.dumps(row))
    else:
        columns = [
            "simulator",
            "n",
            "gemm",
            "dataflow",
            "programs",
            "bit_exact",
            "cycles",
            "utilization",
            "cycles_per_s",
            "macs_per_s",
            "array_free_macs_per_s",
            "numpy_macs_per_s",
            "build_s",
            "build_peak_mb",
        ]
        print(format_table(rows, columns))
        for row in extra:
            print()
            print(format_table([row], ["simulator", "n", *list(row)[:-2]]))
    return 0 if all(r["bit_exact"] for r in [*rows, *extra]) else 1


def run_sim(args: argparse.Namespace) -> int:
    from cdm_qta.tb.session import run_job
    from cdm_qta.tb.targets import SimTarget, Top

    args.sizes = args.sizes or [8, 16, 64]
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
    return {"accel": run_accel, "speed": run_speed, "sim": run_sim}[args.what](args)
