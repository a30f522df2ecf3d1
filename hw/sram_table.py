"""SRAM macros at 45 nm: area, energy per access, leakage and timing from CACTI 7.

yosys can say how big the logic is, but an SRAM is a hard macro, not standard cells. So the
accelerator's buffers are black boxes in synthesis (:mod:`cdm_qta.hw.synth`) and costed from
this table, which the energy model (:mod:`cdm_qta.sw.energy`) reads too. The data file
``hw/pdk/sram_45nm.json`` holds one CACTI 7.0 run per macro; its ``derivation`` section
records the exact CACTI parameters, which are also the ones :func:`cacti_config` writes, so
``python -m cdm_qta.hw.sram_table --cacti PATH`` regenerates the file from a CACTI build.

CACTI parameters (the same for every macro)
-------------------------------------------
CACTI 7.0 (Balasubramonian et al., ACM TACO 14(2), 2017; the paper's ref. [14]), 45 nm,
``cache type "ram"`` (a scratchpad, no tags), ITRS-LSTP cells and periphery (Vdd 1.1 V in
CACTI's 45 nm tables, the paper's and the Liberty's voltage), 300 K, one UCA bank, block
size and bus width = one SRAM row (N bytes for the input and weight buffers, 4N for the
output buffer, so one access moves one row as the RTL does), ``Optimize ED^2``, no ECC, no
power gating; ports ``1rw`` (one read/write port), ``1r1w`` (one read, one write) or
``2r1w``.

How a buffer becomes macros (``mapping``)
-----------------------------------------
The RTL's buffers are 1R1W (input, weight) and 2R1W (output) memories. The compiler splits
every buffer into two ping-pong halves (a load fills one while compute reads the other), so
a buffer can be built from two half-size macros:

* ``pingpong`` (default): input/weight halves single-port (a half is either written by the
  load engine or read by compute, never both); output halves 1R1W (the compute engine
  reads and writes the half it accumulates into in the same cycle; the store engine reads
  the other half).
* ``rtl_ports``: one full-size macro with the RTL's ports (1R1W, 1R1W, 2R1W): an upper
  bound, legal without the compiler's ping-pong rule.
* ``single_port``: every half single-port: the lower bound, as a paper that states only the
  capacities (512 KB, 512 KB, 1 MB) would have modelled them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .checks import check_positive
from .config import AcceleratorConfig
from .files import write_atomic

__all__ = [
    "DEFAULT_TABLE",
    "PORTS",
    "SramMacro",
    "SramTable",
    "cacti_config",
    "load_sram_table",
    "parse_cacti_output",
]

DEFAULT_TABLE = Path(__file__).parent / "pdk" / "sram_45nm.json"
#: Port configurations -> CACTI's (read-write, exclusive read, exclusive write) port counts.
PORTS: dict[str, tuple[int, int, int]] = {"1rw": (1, 0, 0), "1r1w": (0, 1, 1), "2r1w": (0, 2, 1)}

#: CACTI input lines that never change (see the module docstring for why each is chosen).
CACTI_FIXED = {
    "associativity": "1",
    "single ended read ports": "0",
    "UCA bank count": "1",
    "technology (u)": "0.045",
    "page size (bits)": "8192",
    "burst length": "8",
    "internal prefetch width": "8",
    "Data array cell type -": '"itrs-lstp"',
    "Data array peripheral type -": '"itrs-lstp"',
    "Tag array cell type -": '"itrs-lstp"',
    "Tag array peripheral type -": '"itrs-lstp"',
    "operating temperature (K)": "300",
    "cache type": '"ram"',
    "tag size (b)": '"default"',
    "access mode (normal, sequential, fast) -": '"normal"',
    "design objective (weight delay, dynamic power, leakage power, cycle time, area)": (
        "0:0:0:100:0"
    ),
    "deviate (delay, dynamic power, leakage power, cycle time, area)": (
        "20:100000:100000:100000:100000"
    ),
    "NUCAdesign objective (weight delay, dynamic power, leakage power, cycle time, area)": (
        "100:100:0:0:100"
    ),
    "NUCAdeviate (delay, dynamic power, leakage power, cycle time, area)": (
        "10:10000:10000:10000:10000"
    ),
    "Optimize ED or ED^2 (ED, ED^2, NONE):": '"ED^2"',
    "Cache model (NUCA, UCA)  -": '"UCA"',
    "NUCA bank count": "0",
    "Wire signaling (fullswing, lowswing, default) -": '"Global_30"',
    "Wire inside mat -": '"semi-global"',
    "Wire outside mat -": '"semi-global"',
    "Interconnect projection -": '"conservative"',
    "Core count": "8",
    "Cache level (L2/L3) -": '"L3"',
    "Add ECC -": '"false"',
    "Print level (DETAILED, CONCISE) -": '"DETAILED"',
    "Print input parameters -": '"true"',
    "Force cache config -": '"false"',
    "Ndwl": "1",
    "Ndbl": "1",
    "Nspd": "0",
    "Ndcm": "1",
    "Ndsam1": "0",
    "Ndsam2": "0",
    "Array Power Gating -": '"false"',
    "WL Power Gating -": '"false"',
    "CL Power Gating -": '"false"',
    "Bitline floating -": '"false"',
    "Interconnect Power Gating -": '"false"',
    "Power Gating Performance Loss": "0.01",
}
#: CACTI 7 divides by some off-chip IO parameters even for an on-chip RAM (a missing one is a
#: floating-point exception): the values of CACTI's sample ``cache.cfg``, unused for a RAM.
CACTI_IO = [
    '-dram_type "DDR3"',
    '-io state "WRITE"',
    "-addr_timing 1.0",
    "-mem_density 4 Gb",
    "-bus_freq 800 MHz",
    "-duty_cycle 1.0",
    "-activity_dq 1.0",
    "-activity_ca 0.5",
    "-num_dq 72",
    "-num_dqs 18",
    "-num_ca 25",
    "-num_clk 2",
    "-num_mem_dq 2",
    "-mem_data_width 8",
    "-rtt_value 10000",
    "-ron_value 34",
    "-tflight_value",
    "-num_bobs 1",
    "-capacity 80",
    "-num_channels_per_bob 1",
    '-first metric "Cost"',
    '-second metric "Bandwidth"',
    '-third metric "Energy"',
    '-DIMM model "ALL"',
    '-mirror_in_bob "F"',
]


@dataclasses.dataclass(frozen=True)
class SramMacro:
    """One CACTI macro: capacity, row width, ports and what CACTI says about it.

    Energies are per access of one whole row; ``*_pj_per_byte`` divide by the row width.
    """

    capacity_bytes: int
    row_bytes: int
    ports: str
    area_mm2: float
    read_pj: float
    write_pj: float
    leakage_mw: float
    access_ns: float
    cycle_ns: float
    vdd: float

    @property
    def key(self) -> str:
        return f"{self.capacity_bytes}B_{self.row_bytes}B_{self.ports}"

    @property
    def read_pj_per_byte(self) -> float:
        return self.read_pj / self.row_bytes

    @property
    def write_pj_per_byte(self) -> float:
        return self.write_pj / self.row_bytes

    def meets(self, clock_mhz: float) -> bool:
        """Whether CACTI's cycle time fits one clock period (the RTL reads in one cycle)."""
        return self.cycle_ns <= 1e3 / clock_mhz


class SramTable:
    """The CACTI table: look up macros and cost the buffers of an accelerator configuration.

    Parameters
    ----------
    doc : dict
        The parsed data file (``macros``: list of :class:`SramMacro` fields).
    source : str
        Where it came from (for reports).
    """

    MAPPINGS: ClassVar[tuple[str, ...]] = ("pingpong", "rtl_ports", "single_port")

    def __init__(self, doc: Mapping[str, Any], source: str = "") -> None:
        self.doc = dict(doc)
        self.source = source
        fields = {f.name for f in dataclasses.fields(SramMacro)}
        self.macros = {}
        for raw in doc["macros"]:
            macro = SramMacro(**{k: v for k, v in raw.items() if k in fields})
            self.macros[(macro.capacity_bytes, macro.row_bytes, macro.ports)] = macro

    def macro(self, capacity_bytes: int, row_bytes: int, ports: str) -> SramMacro:
        """The macro of exactly this shape.

        Raises
        ------
        KeyError
            If CACTI was not run for it; the message lists the capacities that exist.
        """
        key = (capacity_bytes, row_bytes, ports)
        if key not in self.macros:
            have = sorted({(c, r) for c, r, p in self.macros if p == ports})
            raise KeyError(
                f"no {ports} SRAM of {capacity_bytes} bytes with {row_bytes}-byte rows in the "
                f"CACTI table (have {have}); regenerate it with python -m cdm_qta.hw.sram_table"
            )
        return self.macros[key]

    def buffer_macros(
        self, cfg: AcceleratorConfig, mapping: str = "pingpong"
    ) -> dict[str, list[SramMacro]]:
        """The macros each buffer (``input_buffer``, ``weight_buffer``, ``output_buffer``) is
        built from under ``mapping`` (see the module docstring)."""
        if mapping not in self.MAPPINGS:
            raise ValueError(f"mapping must be one of {self.MAPPINGS}, not {mapping!r}")
        shapes = {
            "input_buffer": (cfg.input_buffer_bytes, cfg.input_row_bytes, "1rw", "1r1w"),
            "weight_buffer": (cfg.weight_buffer_bytes, cfg.input_row_bytes, "1rw", "1r1w"),
            "output_buffer": (cfg.output_buffer_bytes, cfg.output_row_bytes, "1r1w", "2r1w"),
        }
        out = {}
        for name, (size, row, half_ports, full_ports) in shapes.items():
            if mapping == "rtl_ports":
                out[name] = [self.macro(size, row, full_ports)]
            else:
                ports = "1rw" if mapping == "single_port" else half_ports
                out[name] = [self.macro(size // 2, row, ports)] * 2
        return out

    def buffers_area(self, cfg: AcceleratorConfig, mapping: str = "pingpong") -> dict[str, float]:
        """um^2 of each buffer under ``mapping``."""
        return {
            name: round(sum(m.area_mm2 for m in macros) * 1e6, 1)
            for name, macros in self.buffer_macros(cfg, mapping).items()
        }


def load_sram_table(path: Path | None = None) -> SramTable:
    """The table shipped in ``hw/pdk/sram_45nm.json`` (or another file of the same form)."""
    path = Path(path) if path else DEFAULT_TABLE
    if not path.is_file():
        raise FileNotFoundError(f"SRAM table not found: {path}")
    return SramTable(json.loads(path.read_text()), source=str(path))


# ---------------------------------------------------------------------------------------------
# regenerating the table from CACTI
# ---------------------------------------------------------------------------------------------


def cacti_config(capacity_bytes: int, row_bytes: int, ports: str) -> str:
    """The CACTI 7 input file for one macro (the fixed lines of :data:`CACTI_FIXED` plus the
    shape)."""
    capacity_bytes = check_positive("capacity_bytes", capacity_bytes)
    row_bytes = check_positive("row_bytes", row_bytes)
    if ports not in PORTS:
        raise ValueError(f"ports must be one of {sorted(PORTS)}, not {ports!r}")
    rw, r, w = PORTS[ports]
    lines = [
        f"-size (bytes) {capacity_bytes}",
        f"-block size (bytes) {row_bytes}",
        f"-output/input bus width {8 * row_bytes}",
        f"-read-write port {rw}",
        f"-exclusive read port {r}",
        f"-exclusive write port {w}",
    ]
    lines += [f"-{key} {value}" for key, value in CACTI_FIXED.items()]
    lines += CACTI_IO
    return "\n".join(lines) + "\n"


_FIELDS = {
    "access_ns": r"Access time \(ns\):\s*([0-9.eE+-]+)",
    "cycle_ns": r"Cycle time \(ns\):\s*([0-9.eE+-]+)",
    "read_nj": r"Total dynamic read energy per access \(nJ\):\s*([0-9.eE+-]+)",
    "write_nj": r"Total dynamic write energy per access \(nJ\):\s*([0-9.eE+-]+)",
    "leakage_mw": r"Total leakage power of a bank \(mW\):\s*([0-9.eE+-]+)",
    "height_mm": r"Cache height x width \(mm\):\s*([0-9.eE+-]+)\s*x",
    "width_mm": r"Cache height x width \(mm\):\s*[0-9.eE+-]+\s*x\s*([0-9.eE+-]+)",
}


def parse_cacti_output(text: str) -> dict[str, float]:
    """Timing, energy, leakage and area of one CACTI run (its first, summary, occurrence).

    Raises
    ------
    ValueError
        If a field is missing (CACTI failed or changed its report).
    """
    out = {}
    for name, pattern in _FIELDS.items():
        match = re.search(pattern, text)
        if not match:
            raise ValueError(f"CACTI output has no {name!r} (pattern {pattern!r})")
        out[name] = float(match[1])
    out["area_mm2"] = out.pop("height_mm") * out.pop("width_mm")
    return out


def design_shapes(ns: Sequence[int]) -> list[tuple[int, int, str]]:
    """Every macro the mappings need for ``AcceleratorConfig.scaled(n)`` at each N."""
    shapes = []
    for n in ns:
        cfg = AcceleratorConfig.scaled(n)
        row_in, row_out = cfg.input_row_bytes, cfg.output_row_bytes
        shapes += [
            (cfg.input_buffer_bytes // 2, row_in, "1rw"),
            (cfg.input_buffer_bytes, row_in, "1r1w"),
            (cfg.output_buffer_bytes // 2, row_out, "1rw"),
            (cfg.output_buffer_bytes // 2, row_out, "1r1w"),
            (cfg.output_buffer_bytes, row_out, "2r1w"),
        ]
    return shapes


#: Macros of the sizes Horowitz (ISSCC 2014) quotes per 64-bit access, to compare against.
REFERENCE_SHAPES = [(8 * 1024, 8, "1rw"), (32 * 1024, 8, "1rw"), (1024 * 1024, 8, "1rw")]


def regenerate(cacti: Path, out: Path, ns: Sequence[int]) -> dict[str, Any]:
    """Run CACTI for every shape and write the data file (``cacti`` is a CACTI 7 binary; it
    needs its ``tech_params/`` folder beside it, so it runs in its own directory)."""
    cacti = Path(cacti).resolve()
    macros = []
    seen = set()
    for shape in [*design_shapes(ns), *REFERENCE_SHAPES]:
        if shape in seen:
            continue
        seen.add(shape)
        with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
            f.write(cacti_config(*shape))
        result = subprocess.run(
            [str(cacti), "-infile", f.name], capture_output=True, text=True, cwd=cacti.parent
        )
        Path(f.name).unlink()
        if result.returncode != 0:
            raise RuntimeError(f"CACTI failed for {shape}: {result.stderr.strip()[-200:]}")
        got = parse_cacti_output(result.stdout)
        macros.append(
            {
                "capacity_bytes": shape[0],
                "row_bytes": shape[1],
                "ports": shape[2],
                "area_mm2": round(got["area_mm2"], 5),
                "read_pj": round(got["read_nj"] * 1e3, 3),
                "write_pj": round(got["write_nj"] * 1e3, 3),
                "leakage_mw": round(got["leakage_mw"], 6),
                "access_ns": round(got["access_ns"], 4),
                "cycle_ns": round(got["cycle_ns"], 4),
                "vdd": 1.1,
            }
        )
        print(f"{shape}: {macros[-1]}", flush=True)
    doc = json.loads(DEFAULT_TABLE.read_text()) if DEFAULT_TABLE.exists() else {}
    doc["macros"] = macros
    write_atomic(out, json.dumps(doc, indent=1) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdm_qta.hw.sram_table", description="regenerate the CACTI SRAM table"
    )
    parser.add_argument("--cacti", type=Path, required=True, help="a CACTI 7 binary")
    parser.add_argument("--out", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128])
    args = parser.parse_args(argv)
    regenerate(args.cacti, args.out, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
