"""The accelerator as it is simulated: the design, its DRAM, and protocol monitors on its ports.

::

    host (cocotb AXI4-Lite master) -s_axil-> [AxiLiteMonitor] Accelerator -m_axi-> [AxiMonitor]
                                                                  |
                                 dram="model":  SimDram (in the simulator, back door by file)
                                 dram="cocotb": m_axi ports out, to cocotbext-axi's AxiRam

Both DRAM flavours run the same tests: the in-simulator model for speed, cocotbext-axi as the
protocol reference. The monitors' first broken rule comes out on ``protocol_error`` /
``protocol_code`` (:class:`~cdm_qta.tb.axi_monitor.Rule`; lite rules are on the same code).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Self

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cdm_qta.hw.accelerator import REG_ADDR_BITS, RETIRE_BITS, Accelerator
from cdm_qta.hw.axi import axi4_lite_signature, axi4_signature
from cdm_qta.hw.checks import check_pow2
from cdm_qta.hw.config import AcceleratorConfig, DramTiming, EnvConfig
from cdm_qta.hw.fetch import INSN_BYTES, fetch_row_bytes

from .axi_monitor import AxiLiteMonitor, AxiMonitor, watch
from .dram import SimDram, storage_verilog

__all__ = ["DRAM_KINDS", "AcceleratorSimTop", "SimTopConfig", "generate_sim_top"]

#: Where DRAM lives in a simulation.
DRAM_KINDS = ("model", "cocotb")


@dataclasses.dataclass(frozen=True)
class SimTopConfig(EnvConfig):
    """One simulated accelerator: its configuration, its DRAM and the DRAM's timing.

    ``dram_bytes`` is the simulated memory from address 0 (a power of two); the top
    ``program_bytes`` of it hold instruction programs (:attr:`program_base`).
    """

    accel: AcceleratorConfig = dataclasses.field(default_factory=AcceleratorConfig)
    dram: str = "model"
    dram_bytes: int = 1 << 24
    timing: DramTiming = dataclasses.field(default_factory=DramTiming)

    def __post_init__(self) -> None:
        if self.dram not in DRAM_KINDS:
            raise ValueError(f"dram must be one of {DRAM_KINDS}, not {self.dram!r}")
        check_pow2("dram_bytes", self.dram_bytes, 1 << 14, 1 << 31)
        end = self.accel.dram_base + self.accel.dram_size
        if self.program_base < self.accel.dram_base or self.dram_bytes > end:
            raise ValueError(
                f"the simulated DRAM [0, {self.dram_bytes:#x}) must end inside the accelerator's "
                f"DRAM window [{self.accel.dram_base:#x}, {end:#x})"
            )

    @property
    def program_bytes(self) -> int:
        """The program area: a quarter of the DRAM, at most 1 MB (65536 instructions)."""
        return min(1 << 20, self.dram_bytes // 4)

    @property
    def program_base(self) -> int:
        return self.dram_bytes - self.program_bytes

    @property
    def max_program(self) -> int:
        """Instructions that fit the program area."""
        return self.program_bytes // INSN_BYTES

    @property
    def fetch_align(self) -> int:
        return fetch_row_bytes(self.accel.dram_bus_bytes)

    @property
    def module_name(self) -> str:
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:8]
        return f"cdm_qta_sim_n{self.accel.n}_{self.dram}_{digest}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        if isinstance(d.get("accel"), dict):
            d["accel"] = AcceleratorConfig.from_dict(d["accel"])
        if isinstance(d.get("timing"), dict):
            d["timing"] = DramTiming.from_dict(d["timing"])
        return super().from_dict(d)

    def __str__(self) -> str:
        return f"n{self.accel.n}-{self.dram}"


class AcceleratorSimTop(wiring.Component):
    """The accelerator, monitors on both its ports, and (``dram="model"``) its DRAM.

    Members
    -------
    s_axil : In(AXI4-Lite)      host port
    busy, done, retire : Out    as the accelerator's
    protocol_error : Out(1)     a monitor saw a rule broken (sticky until reset)
    protocol_code : Out(8)      the first rule (:class:`~cdm_qta.tb.axi_monitor.Rule`)
    m_axi : Out(AXI4)           ``dram="cocotb"`` only: the DRAM port
    stall_prob ... bd_hi : In   ``dram="model"`` only: the DRAM's controls (:class:`SimDram`)
    """

    def __init__(self, cfg: SimTopConfig) -> None:
        self._cfg = cfg
        accel = cfg.accel
        members: dict[str, wiring.Member] = {
            "s_axil": In(axi4_lite_signature(addr_bits=REG_ADDR_BITS)),
            "busy": Out(1),
            "done": Out(1),
            "retire": Out(RETIRE_BITS),
            "protocol_error": Out(1),
            "protocol_code": Out(8),
        }
        if cfg.dram == "cocotb":
            members["m_axi"] = Out(axi4_signature(data_bytes=accel.dram_bus_bytes))
            self._dram = None
        else:
            self._dram = SimDram(
                data_bytes=accel.dram_bus_bytes, size_bytes=cfg.dram_bytes, timing=cfg.timing
            )
            for name, member in self._dram.signature.members.items():
                if name != "axi":
                    members[name] = In(member.shape)
        super().__init__(members)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        accel_cfg = self._cfg.accel
        m.submodules.accel = accel = Accelerator(accel_cfg)
        wiring.connect(m, wiring.flipped(self.s_axil), accel.s_axil)
        m.d.comb += [
            self.busy.eq(accel.busy),
            self.done.eq(accel.done),
            self.retire.eq(accel.retire),
        ]
        m.submodules.axi_monitor = mon = AxiMonitor(data_bytes=accel_cfg.dram_bus_bytes)
        m.submodules.axil_monitor = lite = AxiLiteMonitor(addr_bits=REG_ADDR_BITS)
        watch(m, mon, accel.m_axi)
        watch(m, lite, accel.s_axil)
        m.d.comb += [
            self.protocol_error.eq(mon.error | lite.error),
            self.protocol_code.eq(Mux(mon.error, mon.code, lite.code)),
        ]
        if self._dram is None:
            wiring.connect(m, accel.m_axi, wiring.flipped(self.m_axi))
        else:
            m.submodules.dram = dram = self._dram
            wiring.connect(m, accel.m_axi, dram.axi)
            for name in dram.signature.members:
                if name != "axi":
                    m.d.comb += getattr(dram, name).eq(getattr(self, name))
        return m


def generate_sim_top(cfg: SimTopConfig, out_dir: Path) -> Path:
    """Write the simulation top's Verilog (PE module, DRAM storage, the top); return its path."""
    from cdm_qta.hw.array import pe_verilog
    from cdm_qta.hw.generate import PortsOnly, emit

    def convert() -> str:
        from amaranth.back import verilog

        top = PortsOnly(AcceleratorSimTop(cfg))
        text = pe_verilog(cfg.accel.array)
        if cfg.dram == "model":
            w = cfg.accel.dram_bus_bytes
            text += storage_verilog(cfg.dram_bytes // w, w)
        return text + verilog.convert(top, name=cfg.module_name, emit_src=False)

    sources = [Path(__file__).with_name(n) for n in ("sim_top.py", "dram.py", "axi_monitor.py")]
    return emit(out_dir, cfg.module_name, {"config": cfg.to_dict()}, convert, extra_sources=sources)
