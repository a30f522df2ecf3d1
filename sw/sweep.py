"""``qta sweep``: step latency against area over array size, SRAM size and DRAM bandwidth.

Each point is an accelerator ``AcceleratorConfig.scaled(N)`` with its three buffers' depths
times ``--sram-scale`` (1 = the paper's 8192 / 8192 / 4096 rows: 512 KB / 512 KB / 1 MB at
N = 64) and the DRAM at ``--dram-gbps`` (default: the bus's peak); its step is
:func:`cdm_qta.sw.perf.evaluate_step` (so the same cycle model, energy model and caches), its
area the accelerator logic from yosys (:meth:`cdm_qta.hw.synth.SynthResults.
accelerator_logic_um2`: measured where synthesized, fitted elsewhere and flagged) plus the SRAM
macros of the CACTI table (:class:`cdm_qta.hw.sram_table.SramTable`, ping-pong mapping).

SRAM shapes CACTI was not run for (other depths than the paper's) are interpolated in the
table, flagged ``sram_interpolated``: every figure of the macro (area, energy per access,
leakage, timing) as a power law ``a * capacity^b * row_bytes^c`` fitted (least squares in
logs) to every CACTI run with the same ports (``python -m cdm_qta.hw.sram_table --cacti PATH``
runs CACTI for real). Ports with fewer than three runs are refused.

Points run in parallel through a standard executor (:mod:`cdm_qta.sw.parallel`: local
processes with ``--jobs``, a Dask or Ray cluster with ``--scheduler``). Writes
``sweep.csv``, ``sweep.json`` and ``sweep.png`` (latency against area, the Pareto front of
points no other point beats on both marked).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.files import write_atomic
from cdm_qta.hw.sram_table import SramMacro, SramTable, load_sram_table

from .errors import CliError
from .parallel import check_scheduler, executor_for
from .perf import (
    DEFAULT_CACHE,
    add_common,
    config_for,
    dram_timing_for,
    evaluate_step,
    load_workload,
)
from .tables import format_table

__all__ = [
    "add_parser",
    "pareto_front",
    "point_config",
    "run",
    "sweep",
    "table_for",
]

COLUMNS = (
    "n",
    "sram_scale",
    "dram_gbps",
    "input_kb",
    "weight_kb",
    "output_kb",
    "cycles",
    "latency_ms",
    "utilization",
    "energy_mj",
    "edp_js",
    "logic_mm2",
    "sram_mm2",
    "area_mm2",
    "logic_extrapolated",
    "sram_interpolated",
    "unsupported_gemms",
    "pareto",
)


def point_config(n: int, sram_scale: float) -> AcceleratorConfig:
    """``AcceleratorConfig.scaled(n)`` with every buffer's depth times ``sram_scale``.

    Raises
    ------
    ValueError
        If a depth would be below 2 rows or not a whole number of rows.
    """
    base = config_for(n)
    if not sram_scale > 0:
        raise ValueError(f"--sram-scale must be positive, not {sram_scale!r}")
    sizes = {}
    for name, rows, row in (
        ("input_buffer_bytes", base.input_rows, base.input_row_bytes),
        ("weight_buffer_bytes", base.weight_rows, base.input_row_bytes),
        ("output_buffer_bytes", base.output_rows, base.output_row_bytes),
    ):
        depth = rows * sram_scale
        if depth < 2 or not float(depth).is_integer():
            raise ValueError(f"--sram-scale {sram_scale:g} gives {depth:g} rows of {name}")
        sizes[name] = int(depth) * row
    return dataclasses.replace(base, **sizes)


def _interpolate(table: SramTable, capacity: int, row: int, ports: str) -> SramMacro:
    import numpy as np

    same = [m for (_, _, p), m in table.macros.items() if p == ports]
    if len(same) < 3:
        raise ValueError(
            f"cannot interpolate a {ports} SRAM of {capacity} bytes with {row}-byte rows: the "
            f"CACTI table has {len(same)} {ports} run(s); run CACTI "
            "(python -m cdm_qta.hw.sram_table --cacti PATH)"
        )
    # log f = a + b log(capacity) + c log(row bytes), least squares over the same-port runs
    x = np.array([[1.0, math.log(m.capacity_bytes), math.log(m.row_bytes)] for m in same])
    want = np.array([1.0, math.log(capacity), math.log(row)])
    fields: dict[str, Any] = {"capacity_bytes": capacity, "row_bytes": row, "ports": ports}
    for f in ("area_mm2", "read_pj", "write_pj", "leakage_mw", "access_ns", "cycle_ns"):
        y = np.log(np.array([max(getattr(m, f), 1e-12) for m in same]))
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        fields[f] = float(math.exp(want @ coef))
    fields["vdd"] = same[0].vdd
    return SramMacro(**fields)


def table_for(
    configs: Sequence[AcceleratorConfig], table: SramTable | None = None
) -> tuple[SramTable, set[str]]:
    """The CACTI table plus an interpolated macro for every shape ``configs`` need that it
    lacks (module docstring); also the keys of the interpolated macros."""
    table = table or load_sram_table()
    extra: dict[tuple[int, int, str], SramMacro] = {}
    for cfg in configs:
        for size, row, ports in (
            (cfg.input_buffer_bytes // 2, cfg.input_row_bytes, "1rw"),
            (cfg.weight_buffer_bytes // 2, cfg.input_row_bytes, "1rw"),
            (cfg.output_buffer_bytes // 2, cfg.output_row_bytes, "1r1w"),
        ):
            key = (size, row, ports)
            if key not in table.macros and key not in extra:
                extra[key] = _interpolate(table, *key)
    if not extra:
        return table, set()
    doc = dict(table.doc)
    doc["macros"] = [*doc["macros"], *(dataclasses.asdict(m) for m in extra.values())]
    return SramTable(doc, source=f"{table.source} + {len(extra)} interpolated"), {
        m.key for m in extra.values()
    }


def pareto_front(points: Sequence[Mapping[str, float]], x: str, y: str) -> list[int]:
    """Indices of the points no other point beats: none has ``x`` and ``y`` both at most
    this one's and one of them smaller (both minimized). Equal points are all kept."""
    front = []
    for i, p in enumerate(points):
        dominated = any(
            q[x] <= p[x] and q[y] <= p[y] and (q[x] < p[x] or q[y] < p[y])
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _point(task: tuple[Any, ...]) -> dict[str, Any]:
    gemms, n, scale, gbps, opts, table, interpolated, synth_path = task
    from cdm_qta.hw.synth import load_results

    cfg = point_config(n, scale)
    res = evaluate_step(gemms, cfg, dram_gbps=gbps, table=table, **opts)
    logic_um2, logic_extra = load_results(synth_path).accelerator_logic_um2(n)
    sram_um2 = sum(table.buffers_area(cfg, mapping="pingpong").values())
    used = {m.key for ms in table.buffer_macros(cfg).values() for m in ms}
    t = res.totals
    return {
        "n": n,
        "sram_scale": scale,
        "dram_gbps": round(res.config["dram_gbps"], 4),
        "dram_gbps_requested": gbps,
        "input_kb": cfg.input_buffer_bytes / 1024,
        "weight_kb": cfg.weight_buffer_bytes / 1024,
        "output_kb": cfg.output_buffer_bytes / 1024,
        "cycles": t["cycles"],
        "latency_ms": t["latency_s"] * 1e3,
        "utilization": t["utilization"],
        "energy_mj": t["energy_j"] * 1e3,
        "edp_js": t["edp_js"],
        "logic_mm2": logic_um2 / 1e6,
        "sram_mm2": sram_um2 / 1e6,
        "area_mm2": (logic_um2 + sram_um2) / 1e6,
        "logic_extrapolated": logic_extra,
        "sram_interpolated": bool(used & interpolated),
        "unsupported_gemms": t["unsupported_gemms"],
        "split_gemms": t["split_gemms"],
        "predictor": res.config["predictor"],
    }


def sweep(
    workload: str,
    mode: str,
    *,
    ns: Sequence[int],
    sram_scales: Sequence[float] = (1.0,),
    dram_gbps: Sequence[float | None] = (None,),
    dataflow: str = "hybrid",
    args: argparse.Namespace,
    jobs: int = 1,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Every point of the grid (see the module docstring), the Pareto front marked."""
    synth_path = Path(args.synth)
    from cdm_qta.hw.synth import load_results

    load_results(synth_path)  # fail before the first point
    grid, seen = [], set()
    for n, s, g in itertools.product(ns, sram_scales, dram_gbps):
        # bandwidths above the bus's peak are capped there: one point, not several equal ones
        timing = dram_timing_for(point_config(n, s), g, args.clock_mhz)[0]
        if (n, s, timing) not in seen:
            seen.add((n, s, timing))
            grid.append((n, s, g))
    configs = [point_config(n, s) for n, s, _ in grid]
    table, interpolated = table_for(configs)
    _, gemms = load_workload(workload, mode)
    opts = {
        "dataflow": dataflow,
        "clock_mhz": args.clock_mhz,
        "vdd": args.vdd,
        "predictor": args.predictor,
        "cache_dir": None if args.no_cache else Path(args.cache or DEFAULT_CACHE),
        "synth": synth_path,
        "progress": False,
    }
    tasks = [(gemms, n, s, g, opts, table, interpolated, synth_path) for n, s, g in grid]
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks), desc=f"qta sweep {workload}", unit="point")
        except ImportError:
            pass
    rows = []
    with executor_for(jobs, scheduler) as ex:
        for row in ex.map(_point, tasks) if ex is not None else map(_point, tasks):
            rows.append(row)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    front = set(pareto_front(rows, "area_mm2", "latency_ms"))
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return {
        "schema": "cdm_qta.sweep/1",
        "workload": workload,
        "mode": mode,
        "dataflow": dataflow,
        "clock_mhz": args.clock_mhz,
        "points": rows,
        "sram_table": table.source,
        "interpolated_sram_macros": sorted(interpolated),
    }


def to_csv(doc: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore")
    w.writeheader()
    for r in doc["points"]:
        w.writerow(r)
    return buf.getvalue()


def plot_sweep(doc: Mapping[str, Any], path: Path) -> None:
    """Latency against area (log-log), one colour per N, the Pareto front joined and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = doc["points"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for n in sorted({p["n"] for p in pts}):
        sel = [p for p in pts if p["n"] == n]
        ax.scatter([p["area_mm2"] for p in sel], [p["latency_ms"] for p in sel], label=f"N={n}")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["area_mm2"])
    ax.plot(
        [p["area_mm2"] for p in front],
        [p["latency_ms"] for p in front],
        "k--",
        lw=1,
        label="Pareto front",
    )
    ax.scatter(
        [p["area_mm2"] for p in front],
        [p["latency_ms"] for p in front],
        s=120,
        facecolors="none",
        edgecolors="k",
    )
    for p in front:
        ax.annotate(
            f"N={p['n']} s={p['sram_scale']:g} {p['dram_gbps']:g}GB/s",
            (p["area_mm2"], p["latency_ms"]),
            fontsize=6,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("area (mm^2, logic from yosys + CACTI SRAM)")
    ax.set_ylabel("training-step latency (ms)")
    ax.set_title(f"{doc['workload']} {doc['mode']} step, {doc['dataflow']} dataflow", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_sweep(doc: Mapping[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "sweep.json", json.dumps(doc, indent=2) + "\n")
    write_atomic(out / "sweep.csv", to_csv(doc))
    plot_sweep(doc, out / "sweep.png")
    return [out / "sweep.png", out / "sweep.csv", out / "sweep.json"]


def format_sweep(doc: Mapping[str, Any]) -> str:
    rows = [
        {
            "N": p["n"],
            "SRAM x": f"{p['sram_scale']:g}",
            "GB/s": f"{p['dram_gbps']:g}",
            "cycles": f"{p['cycles']:,}",
            "latency ms": f"{p['latency_ms']:.4g}",
            "util": f"{p['utilization']:.1%}",
            "energy mJ": f"{p['energy_mj']:.4g}",
            "area mm^2": f"{p['area_mm2']:.3f}"
            + ("*" if p["logic_extrapolated"] or p["sram_interpolated"] else ""),
            "pareto": "yes" if p["pareto"] else "",
        }
        for p in doc["points"]
    ]
    return (
        format_table(rows, list(rows[0]))
        + "\n* area from fitted logic (synthesis extrapolated) or interpolated SRAM macros"
    )


def _list(text: str, kind: type) -> list[Any]:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(
            f"expected a comma-separated list of {kind.__name__}s, not {text!r}"
        ) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep",
        help="step latency vs area over array size, SRAM size and DRAM bandwidth (Pareto)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--workload", default="tiny", help="sd15|sd21|sdxl|tiny or FILE.jsonl")
    p.add_argument("--mode", choices=("full", "lora"), default="lora")
    p.add_argument("--dataflow", choices=("ws", "os", "hybrid"), default="hybrid")
    p.add_argument("--array-n", default="8,16,32,64,128", help="sizes (default 8,16,32,64,128)")
    p.add_argument("--sram-scale", default="1", help="buffer depth factors (default 1)")
    p.add_argument("--dram-gbps", default="", help="bandwidths in GB/s (default: bus peak)")
    p.add_argument("--jobs", type=int, default=1, help="local processes (default 1)")
    p.add_argument("--scheduler", help="Dask tcp://HOST:PORT or Ray ray://HOST:PORT / ray:auto")
    p.add_argument("--out", type=Path, default=Path("build/sweep"), help="folder (build/sweep)")
    p.add_argument("--json", action="store_true")
    add_common(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    ns = _list(args.array_n, int)
    scales = _list(args.sram_scale, float)
    gbps: list[float | None] = _list(args.dram_gbps, float) or [None]
    if not ns or not scales:
        raise CliError("--array-n and --sram-scale need at least one value")
    check_scheduler(args.scheduler)
    for n in ns:
        config_for(n)
    for n, s in itertools.product(ns, scales):
        point_config(n, s)
    doc = sweep(
        args.workload,
        args.mode,
        ns=ns,
        sram_scales=scales,
        dram_gbps=gbps,
        dataflow=args.dataflow,
        args=args,
        jobs=args.jobs,
        scheduler=args.scheduler,
    )
    write_sweep(doc, args.out)
    print(json.dumps(doc, indent=2) if args.json else format_sweep(doc))
    return 0
