"""The hardware half of the paper's Table I: area, peak TOPS, power, TOPS/W and TOPS/mm^2.

Each of our numbers comes from a command of this project, never from the paper:

* **area** = accelerator logic from yosys (:mod:`cdm_qta.hw.synth`: measured at the sizes
  synthesized, fitted beyond them and marked so) + SRAM macros from the CACTI table
  (:mod:`cdm_qta.hw.sram_table`, ping-pong mapping unless asked otherwise);
* **peak TOPS** = 2 N^2 f (one MAC = two operations per PE and cycle);
* **power** = the energy model (:mod:`cdm_qta.sw.energy`) priced on the counts of one
  steady-state cycle (below), times the clock; on-chip only, as the paper's 3.49 W (DRAM is
  off-chip and is shown apart);
* **TOPS/W** = delivered TOPS (peak x utilization) / power, **TOPS/mm^2** = peak TOPS / area.

The steady-state cycle (what "power" assumes)
---------------------------------------------
A fraction ``utilization`` of cycles streams the array (all N^2 PEs do a MAC); the rest idle,
paying clock and leakage only. A streaming cycle, weight-stationary with tiles of
``tile_rows`` input rows (``M``): one N-byte input row read, the next tile's N weight rows read
once per ``M`` cycles, one 4N-byte output row written, and read back and added to when the
reduction spans several tiles (``accumulate``: the fraction of output rows accumulated; 1.0
for every K > N reduction after its first tile, which dominates long reductions). Output
stationary: one input and one weight row per reduction step; N output rows per ``tile_rows``
(``K``) steps. Register writes: 5 bytes per MAC (:func:`cdm_qta.sw.energy.array_register_bytes`).
These are assumptions about a workload, stated so; ``qta perf`` prices real counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.sram_table import SramTable, load_sram_table
from cdm_qta.hw.synth import SynthResults, load_results

from .energy import EnergyModel, array_register_bytes
from .errors import CliError
from .tables import format_table

__all__ = ["PAPER", "REF16", "add_parser", "run", "steady_state_counts", "table1"]

#: The paper's Table I, "ours" column (45 nm, 1.1 V, 400 MHz).
PAPER = {
    "technology_nm": 45,
    "voltage_v": 1.1,
    "clock_mhz": 400,
    "area_mm2": 15.07,
    "power_w": 3.49,
    "peak_tops": 3.28,
    "tops_per_w": 0.94,
    "tops_per_mm2": 0.22,
}
#: Its reference [16] (Liu et al., TCAS-II 2024), 28 nm; in brackets the paper's 45 nm scaling.
REF16 = {
    "technology_nm": 28,
    "voltage_v": 0.9,
    "clock_mhz": 400,
    "area_mm2": 1.89,
    "power_w": 0.61,
    "peak_tops": 0.55,
    "tops_per_w": "0.90 (0.57 at 45 nm)",
    "tops_per_mm2": "0.29 (0.12 at 45 nm)",
}


def steady_state_counts(
    n: int,
    *,
    utilization: float = 1.0,
    dataflow: str = "ws",
    tile_rows: int = 1024,
    accumulate: float = 1.0,
    cycles: int = 1_000_000,
) -> dict[str, float]:
    """Event counts of ``cycles`` steady-state cycles (see the module docstring).

    Raises
    ------
    ValueError
        If a fraction is outside [0, 1], ``tile_rows`` < 1 or the dataflow is unknown.
    """
    if not 0 <= utilization <= 1 or not 0 <= accumulate <= 1:
        raise ValueError(
            f"utilization and accumulate must be in [0, 1], not {utilization!r}, {accumulate!r}"
        )
    if tile_rows < 1:
        raise ValueError(f"tile_rows must be at least 1, not {tile_rows!r}")
    busy = utilization * cycles
    row_in, row_out = n, 4 * n
    if dataflow == "ws":
        in_rows, w_rows, out_rows = busy, busy * n / tile_rows, busy
    elif dataflow == "os":
        in_rows, w_rows, out_rows = busy, busy, busy * n / tile_rows
    else:
        raise ValueError(f"dataflow must be ws or os, not {dataflow!r}")
    macs = busy * n * n
    return {
        "macs": macs,
        "adds": out_rows * n * accumulate,
        "input_buffer_read_bytes": in_rows * row_in,
        "weight_buffer_read_bytes": w_rows * row_in,
        "output_buffer_write_bytes": out_rows * row_out,
        "output_buffer_read_bytes": out_rows * row_out * accumulate,
        "register_bytes": float(array_register_bytes(int(macs))),
        "cycles": cycles,
    }


def table1(
    n: int = 64,
    *,
    synth: SynthResults,
    table: SramTable | None = None,
    clock_mhz: float = 400.0,
    vdd: float = 1.1,
    mapping: str = "pingpong",
    **activity: Any,
) -> dict[str, Any]:
    """Our Table I entries at array size ``n`` next to the paper's; ``activity`` goes to
    :func:`steady_state_counts`. Every value says whether it rests on an extrapolation."""
    table = table or load_sram_table()
    cfg = AcceleratorConfig.scaled(n)
    logic_um2, logic_extra = synth.accelerator_logic_um2(n)
    sram_um2 = sum(table.buffers_area(cfg, mapping=mapping).values())
    area_mm2 = (logic_um2 + sram_um2) / 1e6
    model = EnergyModel.for_accelerator(
        cfg, vdd=vdd, clock_mhz=clock_mhz, mapping=mapping, synth=synth, table=table
    )
    counts = steady_state_counts(n, **activity)
    report = model.energy(counts)
    peak = 2 * n * n * clock_mhz * 1e6 / 1e12
    delivered = peak * counts["macs"] / (n * n * counts["cycles"])
    power = report.on_chip_power_w
    slow = sorted({m.key for ms in model.sram.values() for m in ms if not m.meets(clock_mhz)})
    ours = {
        "technology_nm": 45,
        "voltage_v": vdd,
        "clock_mhz": int(clock_mhz) if float(clock_mhz).is_integer() else clock_mhz,
        "area_mm2": round(area_mm2, 2),
        "power_w": round(power, 2),
        "peak_tops": round(peak, 2),
        "tops_per_w": round(delivered / power, 2),
        "tops_per_mm2": round(peak / area_mm2, 3),
    }
    return {
        "n": n,
        "ours": ours,
        "paper": PAPER,
        "ref16": REF16,
        "area_breakdown_mm2": {
            "logic": round(logic_um2 / 1e6, 3),
            "logic_extrapolated": logic_extra,
            "sram": round(sram_um2 / 1e6, 3),
            "sram_mapping": mapping,
        },
        "power_breakdown_w": {
            k: round(v * 1e-12 / report.seconds, 4) for k, v in report.breakdown.items()
        },
        "dram_excluded": "DRAM energy is off-chip and not in power (as in the paper)",
        "activity": {
            **activity,
            "counts_per_cycle": {
                k: v / counts["cycles"] for k, v in counts.items() if k != "cycles"
            },
        },
        "sram_slower_than_clock": slow,
        "notes": list(report.notes),
        "synth_tool": synth.doc.get("tool"),
    }


def format_report(doc: dict[str, Any]) -> str:
    labels = {
        "technology_nm": "Technology (nm)",
        "voltage_v": "Voltage (V)",
        "clock_mhz": "Frequency (MHz)",
        "area_mm2": "Area (mm^2)",
        "power_w": "Power (W)",
        "peak_tops": "Performance (TOPS)",
        "tops_per_w": "Energy efficiency (TOPS/W)",
        "tops_per_mm2": "Area efficiency (TOPS/mm^2)",
    }
    rows = [
        {"": label, "ours": doc["ours"][k], "paper": doc["paper"][k], "[16]": doc["ref16"][k]}
        for k, label in labels.items()
    ]
    area = doc["area_breakdown_mm2"]
    power = doc["power_breakdown_w"]
    lines = [
        f"Table I at N={doc['n']} (ours from qta synth + CACTI table + energy model)",
        format_table(rows, ["", "ours", "paper", "[16]"]),
        f"area: logic {area['logic']} mm^2"
        + (" (extrapolated from smaller N)" if area["logic_extrapolated"] else "")
        + f" + SRAM {area['sram']} mm^2 ({area['sram_mapping']} mapping)",
        "power: " + ", ".join(f"{k} {v:.3f}" for k, v in power.items() if k != "dram") + " W",
        doc["dram_excluded"],
    ]
    if doc["sram_slower_than_clock"]:
        lines.append(f"CACTI cycle time above the clock period: {doc['sram_slower_than_clock']}")
    lines += [f"note: {n}" for n in doc["notes"]]
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "table1", help="the paper's Table I (area, TOPS, power, TOPS/W) from synthesis + models"
    )
    parser.add_argument("--n", type=int, default=64, help="array size (default 64)")
    parser.add_argument(
        "--synth",
        type=Path,
        default=Path("build/synth/synth_results.json"),
        help="results of `qta synth` (default build/synth/synth_results.json)",
    )
    parser.add_argument("--clock-mhz", type=float, default=400.0)
    parser.add_argument("--vdd", type=float, default=1.1, help="core voltage (default 1.1 V)")
    parser.add_argument(
        "--mapping",
        choices=SramTable.MAPPINGS,
        default="pingpong",
        help="how buffers become SRAM macros (see cdm_qta.hw.sram_table)",
    )
    parser.add_argument(
        "--utilization",
        type=float,
        default=1.0,
        help="fraction of cycles the array streams (default 1.0 = peak)",
    )
    parser.add_argument("--dataflow", choices=["ws", "os"], default="ws")
    parser.add_argument(
        "--tile-rows",
        type=int,
        default=1024,
        help="WS input rows per tile / OS reduction steps per tile (1024)",
    )
    parser.add_argument(
        "--accumulate",
        type=float,
        default=1.0,
        help="fraction of output rows accumulated (read-modify-write), 1.0",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CliError(f"--n must be positive, not {args.n}")
    doc = table1(
        args.n,
        synth=load_results(args.synth),
        clock_mhz=args.clock_mhz,
        vdd=args.vdd,
        mapping=args.mapping,
        utilization=args.utilization,
        dataflow=args.dataflow,
        tile_rows=args.tile_rows,
        accumulate=args.accumulate,
    )
    print(json.dumps(doc, indent=2) if args.json else format_report(doc))
    return 0
