"""Energy of a run from its event counts: cited 45 nm figures times what the run did.

The cycle model (and ``qta perf``) counts events; this module prices them. Keeping the two
apart means every energy number can be traced to a count and a cited figure:

* arithmetic, DRAM and register figures: ``sw/data/energy_45nm.json`` (Horowitz, ISSCC 2014,
  and the Nangate45 Liberty that synthesis uses), each with its reference voltage;
* SRAM energy per access and SRAM leakage: the CACTI 7 table of :mod:`cdm_qta.hw.sram_table`,
  for the macros each buffer of the configuration is built from;
* flip-flop count and logic leakage: the synthesis results of :mod:`cdm_qta.hw.synth` (or a
  structural estimate, flagged in the report, when none are given).

Figures are scaled from their reference voltage to the operating one by the rule stored in the
data file: dynamic energy ~ V^2, leakage power ~ V. The clock does not change energy per event;
it turns cycles into seconds (leakage, power).

Counts
------
A plain ``dict`` of non-negative numbers; missing keys are 0, unknown keys are an error (a typo
must not silently cost nothing). :data:`COUNTS` lists every key with its meaning; the RTL's
counter names ``dma_read_bytes`` / ``dma_write_bytes`` are accepted for the DRAM keys, so
``RunStats.counters`` (which also carries ``macs`` and ``cycles``) can be passed in directly
once the SRAM byte counts are added.

Example
-------
>>> from cdm_qta.hw.config import AcceleratorConfig
>>> model = EnergyModel.for_accelerator(AcceleratorConfig.scaled(8))
>>> report = model.energy({"macs": 64_000, "input_buffer_read_bytes": 8_000, "cycles": 1_000})
>>> round(report.total_pj) > 0
True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cdm_qta.hw.config import AcceleratorConfig, ArrayConfig
from cdm_qta.hw.sram_table import SramMacro, SramTable, load_sram_table

__all__ = [
    "BUFFERS",
    "COUNTS",
    "DEFAULT_FIGURES",
    "EnergyModel",
    "EnergyReport",
    "array_register_bytes",
    "load_figures",
    "pe_register_bits",
    "scale_dynamic",
    "scale_leakage",
    "structural_flops",
]

DEFAULT_FIGURES = Path(__file__).parent / "data" / "energy_45nm.json"
#: SRAM buffers of the accelerator (the Memory names in hw/accelerator.py).
BUFFERS = ("input_buffer", "weight_buffer", "output_buffer")

#: Every count the model prices, and what it means.
COUNTS: dict[str, str] = {
    "macs": "INT8 x INT8 products accumulated into INT32 in the PE array (the RTL counter `macs`)",
    "adds": "INT32 additions outside the array: one per output lane accumulated into the output "
    "buffer (read-modify-write with the accumulate flag)",
    **{
        f"{b}_{d}_bytes": f"bytes {'read from' if d == 'read' else 'written to'} the {b} "
        "(whole rows: the RTL always moves a full row, N bytes for input/weight rows, 4N for "
        "output rows, even when fewer lanes are valid)"
        for b in BUFFERS
        for d in ("read", "write")
    },
    "dram_read_bytes": "bytes the DMA reads from DRAM (the RTL counter `dma_read_bytes`)",
    "dram_write_bytes": "bytes the DMA writes to DRAM (the RTL counter `dma_write_bytes`)",
    "register_bytes": "bytes of new data written into pipeline registers: operand forwarding, "
    "partial sums and skew buffers (array_register_bytes() estimates it from macs)",
    "cycles": "clock cycles of the run: every flip-flop is clocked every cycle (no clock "
    "gating) and everything leaks for cycles / clock seconds",
}
#: Alternative names accepted for a count (the hardware counters of cdm_qta.hw.regs).
ALIASES = {"dma_read_bytes": "dram_read_bytes", "dma_write_bytes": "dram_write_bytes"}
#: Counters of cdm_qta.hw.regs that carry no energy of their own (ignored, not an error).
IGNORED = {
    "load_busy",
    "load_wait_token",
    "load_wait_bus",
    "compute_busy",
    "compute_wait_token",
    "compute_wait_array",
    "store_busy",
    "store_wait_token",
    "store_wait_bus",
    "insns_retired",
}


def load_figures(path: Path | None = None) -> dict[str, Any]:
    """The per-operation figures (``sw/data/energy_45nm.json`` unless ``path`` is given)."""
    path = Path(path) if path else DEFAULT_FIGURES
    if not path.is_file():
        raise FileNotFoundError(f"energy figures not found: {path}")
    doc = json.loads(path.read_text())
    for name, fig in doc["figures"].items():
        if "pj" not in fig or "source" not in fig:
            raise ValueError(f"energy figure {name!r} needs 'pj' and 'source'")
    return doc


def scale_dynamic(pj: float, v_ref: float | None, vdd: float) -> float:
    """Dynamic energy at ``vdd`` from its value at ``v_ref`` (~V^2); ``None`` = not scaled."""
    return pj if v_ref is None else pj * (vdd / v_ref) ** 2


def scale_leakage(mw: float, v_ref: float, vdd: float) -> float:
    """Leakage power at ``vdd`` from its value at ``v_ref`` (~V, constant leakage current)."""
    return mw * (vdd / v_ref)


def pe_register_bits(cfg: ArrayConfig) -> int:
    """Flip-flops of one PE (hw/pe.py): operand ``a`` and two weight banks (3 x operand),
    accumulator and partial sum (2 x acc), 4 flag and 2 token bits. Synthesis of the INT8/INT32
    PE finds exactly 3*8 + 2*32 + 6 = 94."""
    return 3 * cfg.operand_bits + 2 * cfg.acc_bits + 6


def structural_flops(cfg: ArrayConfig) -> int:
    """Flip-flops of the array core counted from its structure (a lower bound for the whole
    accelerator): the PEs plus the row skew (operand + 4 flags), column skew (operand) and
    output de-skew (accumulator) registers of hw/core.py, N(N-1)/2 of each."""
    n = cfg.n
    skews = n * (n - 1) // 2 * ((cfg.operand_bits + 4) + cfg.operand_bits + cfg.acc_bits)
    return n * n * pe_register_bits(cfg) + skews


def array_register_bytes(macs: int, cfg: ArrayConfig | None = None) -> int:
    """Register bytes written per MAC in the array: the operand forwarded to the right
    neighbour and the partial sum (WS) or accumulator (OS) written back, 1 + 4 bytes for
    INT8/INT32. A count for :data:`COUNTS` ``register_bytes`` when the cycle model has no
    finer one."""
    cfg = cfg or ArrayConfig()
    return macs * (cfg.operand_bits + cfg.acc_bits) // 8


@dataclasses.dataclass(frozen=True)
class EnergyReport:
    """Energy of one run: a breakdown in pJ, the total, and power and efficiency over time.

    ``breakdown`` keys: ``mac``, ``add``, ``<buffer>_read``, ``<buffer>_write``, ``dram``,
    ``register``, ``clock``, ``leakage_logic``, ``leakage_sram``.
    """

    breakdown: dict[str, float]
    counts: dict[str, float]
    cycles: float
    clock_mhz: float
    vdd: float
    notes: tuple[str, ...] = ()

    @property
    def total_pj(self) -> float:
        return sum(self.breakdown.values())

    @property
    def on_chip_pj(self) -> float:
        """Everything but DRAM (what a chip's power figure, like the paper's, covers)."""
        return self.total_pj - self.breakdown.get("dram", 0.0)

    @property
    def seconds(self) -> float:
        return self.cycles / (self.clock_mhz * 1e6)

    @property
    def power_w(self) -> float:
        """Mean power over the run (total, DRAM included)."""
        return self.total_pj * 1e-12 / self.seconds if self.cycles else 0.0

    @property
    def on_chip_power_w(self) -> float:
        return self.on_chip_pj * 1e-12 / self.seconds if self.cycles else 0.0

    @property
    def tops_per_w(self) -> float:
        """Operations (2 per MAC) per joule, in TOPS/W, total energy."""
        return 2 * self.counts.get("macs", 0) / (self.total_pj * 1e-12) / 1e12

    @property
    def on_chip_tops_per_w(self) -> float:
        return 2 * self.counts.get("macs", 0) / (self.on_chip_pj * 1e-12) / 1e12

    def to_dict(self) -> dict[str, Any]:
        return {
            "breakdown_pj": {k: round(v, 3) for k, v in self.breakdown.items()},
            "total_pj": round(self.total_pj, 3),
            "on_chip_pj": round(self.on_chip_pj, 3),
            "cycles": self.cycles,
            "seconds": self.seconds,
            "power_w": self.power_w,
            "on_chip_power_w": self.on_chip_power_w,
            "tops_per_w": self.tops_per_w if self.total_pj else None,
            "clock_mhz": self.clock_mhz,
            "vdd": self.vdd,
            "notes": list(self.notes),
        }


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Prices of every count at one voltage and clock, for one accelerator configuration.

    Build it with :meth:`for_accelerator`; the fields are public so a sweep can vary one.

    Parameters
    ----------
    figures : dict
        The data file (:func:`load_figures`).
    sram : dict
        Buffer name -> the macros it is built from (one access touches one macro).
    flops : int
        Flip-flops clocked every cycle.
    logic_leakage_mw : float
        Leakage of the standard-cell logic at ``logic_leakage_vdd``.
    vdd, clock_mhz : float
        Operating point.
    notes : tuple of str
        Approximations made while building the model (carried into every report).
    """

    figures: Mapping[str, Any]
    sram: Mapping[str, list[SramMacro]]
    flops: int
    logic_leakage_mw: float
    vdd: float = 1.1
    clock_mhz: float = 400.0
    logic_leakage_vdd: float = 1.1
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.3 <= self.vdd <= 2.0:
            raise ValueError(f"vdd must be between 0.3 and 2.0 V, not {self.vdd!r}")
        if not self.clock_mhz > 0:
            raise ValueError(f"clock_mhz must be positive, not {self.clock_mhz!r}")
        missing = set(BUFFERS) - set(self.sram)
        if missing:
            raise ValueError(f"no SRAM macros for {sorted(missing)}")

    @classmethod
    def for_accelerator(
        cls,
        cfg: AcceleratorConfig,
        *,
        vdd: float = 1.1,
        clock_mhz: float = 400.0,
        mapping: str = "pingpong",
        synth: Any = None,
        table: SramTable | None = None,
        figures: Mapping[str, Any] | None = None,
    ) -> EnergyModel:
        """The model of ``cfg``: SRAM macros from the CACTI table, flops and logic leakage from
        synthesis results (a :class:`cdm_qta.hw.synth.SynthResults`, measured or fitted at
        ``cfg.n``) or, without them, from :func:`structural_flops` and the PE's leakage per
        flop (noted in every report)."""
        table = table or load_sram_table()
        figures = figures or load_figures()
        notes = []
        if synth is not None:
            flops, extra_f = synth.accelerator_metric(cfg.n, "flops")
            leak_nw, extra_l = synth.accelerator_metric(cfg.n, "leakage_nw")
            if extra_f or extra_l:
                notes.append(f"flops and logic leakage at N={cfg.n} extrapolated from synthesis")
        else:
            flops = structural_flops(cfg.array)
            per_flop = figures["fallback_logic"]["leakage_nw_per_flop"]
            leak_nw = flops * per_flop
            notes.append(
                "no synthesis results: flops counted from the array's structure (a lower bound)"
                f" and logic leakage as {per_flop} nW per flop (the synthesized PE's ratio)"
            )
        return cls(
            figures=figures,
            sram=table.buffer_macros(cfg, mapping),
            flops=round(flops),
            logic_leakage_mw=leak_nw / 1e6,
            vdd=vdd,
            clock_mhz=clock_mhz,
            notes=tuple(notes),
        )

    def pj(self, figure: str) -> float:
        """A figure of the data file at this model's voltage."""
        fig = self.figures["figures"][figure]
        return scale_dynamic(fig["pj"], fig.get("vdd"), self.vdd)

    def sram_pj_per_byte(self, buffer: str, direction: str) -> float:
        """Energy per byte of one buffer's reads (``"read"``) or writes (``"write"``)."""
        macro = self.sram[buffer][0]
        per = macro.read_pj_per_byte if direction == "read" else macro.write_pj_per_byte
        return scale_dynamic(per, macro.vdd, self.vdd)

    def sram_leakage_mw(self) -> float:
        return sum(
            scale_leakage(m.leakage_mw, m.vdd, self.vdd) for ms in self.sram.values() for m in ms
        )

    def energy(self, counts: Mapping[str, float]) -> EnergyReport:
        """Price ``counts`` (see :data:`COUNTS`).

        Raises
        ------
        ValueError
            For an unknown key or a negative count.
        """
        c = normalize_counts(counts)
        b: dict[str, float] = {
            "mac": c["macs"] * (self.pj("mult_int8") + self.pj("add_int32")),
            "add": c["adds"] * self.pj("add_int32"),
        }
        for buf in BUFFERS:
            for d in ("read", "write"):
                b[f"{buf}_{d}"] = c[f"{buf}_{d}_bytes"] * self.sram_pj_per_byte(buf, d)
        b["dram"] = (c["dram_read_bytes"] + c["dram_write_bytes"]) * self.pj("dram_per_byte")
        b["register"] = c["register_bytes"] * self.pj("register_write_per_byte")
        b["clock"] = c["cycles"] * self.flops * self.pj("flop_clock")
        seconds = c["cycles"] / (self.clock_mhz * 1e6)
        logic_mw = scale_leakage(self.logic_leakage_mw, self.logic_leakage_vdd, self.vdd)
        b["leakage_logic"] = logic_mw * 1e-3 * seconds * 1e12
        b["leakage_sram"] = self.sram_leakage_mw() * 1e-3 * seconds * 1e12
        return EnergyReport(
            breakdown=b,
            counts=dict(c),
            cycles=c["cycles"],
            clock_mhz=self.clock_mhz,
            vdd=self.vdd,
            notes=self.notes,
        )


def normalize_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """``counts`` with every key of :data:`COUNTS` (missing ones 0), aliases resolved.

    Raises
    ------
    ValueError
        For an unknown key, a key given twice (under its alias too) or a negative value.
    """
    out = dict.fromkeys(COUNTS, 0.0)
    seen: set[str] = set()
    for key, value in counts.items():
        if key in IGNORED:
            continue
        name = ALIASES.get(key, key)
        if name not in COUNTS:
            raise ValueError(f"unknown energy count {key!r}; known: {sorted(COUNTS)}")
        if name in seen:
            raise ValueError(f"count {name!r} given twice (as {key!r} too)")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"count {key!r} must be a non-negative number, not {value!r}")
        seen.add(name)
        out[name] = float(value)
    return out
