"""A test top for the DMA engines: reader, writer, AXI join and a register port with a tiny file.

:class:`DmaTop` is what :mod:`cdm_qta.tb.test_dma` simulates. Its ports are the engines' own
streams (``rd_cmd``, ``rd_row``, ``rd_done``, ``wr_cmd``, ``wr_row``, ``wr_done``), one AXI4
master ``m_axi`` (the reader's AR/R joined with the writer's AW/W/B) and one AXI4-Lite slave
``s_axil`` in front of a small register file:

====  ======================================================================================
word  register
====  ======================================================================================
0-3   scratch, read/write with byte strobes
4     ``ID_MAGIC`` (read-only)
5     bytes the reader moved (sum of ``DmaReader.beat_bytes``), read-only
6     bytes the writer moved (sum of ``DmaWriter.beat_bytes``), read-only
7     clock cycles since reset, read-only
8-    unmapped: reads return 0, every access answers SLVERR
====  ======================================================================================
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from cdm_qta.hw.axi import AxiJoin, axi4_lite_signature, axi4_signature
from cdm_qta.hw.axil import AxiLiteRegisterPort
from cdm_qta.hw.config import EnvConfig
from cdm_qta.hw.dma import (
    DmaReader,
    DmaWriter,
    dma_command_layout,
    dma_error_layout,
    dma_read_row_layout,
    dma_write_row_layout,
)

from .axi_monitor import AxiLiteMonitor, AxiMonitor, watch

__all__ = ["AXIL_ADDR_BITS", "ID_MAGIC", "DmaTop", "DmaTopConfig", "generate_dma_top"]

ID_MAGIC = 0xD3A0_C0DE
AXIL_ADDR_BITS = 8
SCRATCH_WORDS = 4
MAPPED_WORDS = 8


@dataclasses.dataclass(frozen=True)
class DmaTopConfig(EnvConfig):
    """One test configuration: bus and row widths, DRAM window and bursts in flight."""

    data_bytes: int
    row_width: int
    dram_base: int = 0x2000
    dram_size: int = 0xC000
    max_outstanding: int = 8

    @property
    def module_name(self) -> str:
        return f"cdm_qta_dma_top_w{self.data_bytes}_r{self.row_width}_o{self.max_outstanding}"

    def __str__(self) -> str:
        return f"w{self.data_bytes}r{self.row_width}"


class DmaTop(wiring.Component):
    """Reader + writer on one AXI4 master, an AXI4-Lite register port, for simulation.

    Parameters
    ----------
    cfg : DmaTopConfig

    Members
    -------
    rd_cmd, wr_cmd : In(stream(dma_command_layout()))
    rd_row : Out(stream(dma_read_row_layout(R)))
    wr_row : In(stream(dma_write_row_layout(R)))
    rd_done, wr_done : Out(stream(dma_error_layout()))
    rd_busy, wr_busy : Out(1)
    m_axi : Out(axi4_signature(data_bytes=W))
    s_axil : In(axi4_lite_signature(addr_bits=AXIL_ADDR_BITS))
    protocol_error, protocol_code : Out
        The AXI4 and AXI4-Lite monitors' first broken rule (:mod:`cdm_qta.tb.axi_monitor`).
    """

    def __init__(self, cfg: DmaTopConfig) -> None:
        self._cfg = cfg
        cmd = stream.Signature(dma_command_layout())
        done = stream.Signature(dma_error_layout())
        super().__init__(
            {
                "rd_cmd": In(cmd),
                "rd_row": Out(stream.Signature(dma_read_row_layout(cfg.row_width))),
                "rd_done": Out(done),
                "rd_busy": Out(1),
                "wr_cmd": In(cmd),
                "wr_row": In(stream.Signature(dma_write_row_layout(cfg.row_width))),
                "wr_done": Out(done),
                "wr_busy": Out(1),
                "m_axi": Out(axi4_signature(data_bytes=cfg.data_bytes)),
                "s_axil": In(axi4_lite_signature(addr_bits=AXIL_ADDR_BITS)),
                "protocol_error": Out(1),
                "protocol_code": Out(8),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self._cfg
        params = {
            "data_bytes": cfg.data_bytes,
            "row_width": cfg.row_width,
            "dram_base": cfg.dram_base,
            "dram_size": cfg.dram_size,
            "max_outstanding": cfg.max_outstanding,
        }
        m.submodules.reader = reader = DmaReader(**params)
        m.submodules.writer = writer = DmaWriter(**params)
        m.submodules.join = join = AxiJoin(data_bytes=cfg.data_bytes)
        m.submodules.regs = port = AxiLiteRegisterPort(addr_bits=AXIL_ADDR_BITS)

        wiring.connect(m, wiring.flipped(self.rd_cmd), reader.cmd)
        wiring.connect(m, reader.row, wiring.flipped(self.rd_row))
        wiring.connect(m, reader.done, wiring.flipped(self.rd_done))
        wiring.connect(m, wiring.flipped(self.wr_cmd), writer.cmd)
        wiring.connect(m, wiring.flipped(self.wr_row), writer.row)
        wiring.connect(m, writer.done, wiring.flipped(self.wr_done))
        wiring.connect(m, reader.axi, join.read)
        wiring.connect(m, writer.axi, join.write)
        wiring.connect(m, join.bus, wiring.flipped(self.m_axi))
        wiring.connect(m, wiring.flipped(self.s_axil), port.axil)
        m.d.comb += [self.rd_busy.eq(reader.busy), self.wr_busy.eq(writer.busy)]
        m.submodules.axi_monitor = mon = AxiMonitor(data_bytes=cfg.data_bytes)
        m.submodules.axil_monitor = lite = AxiLiteMonitor(addr_bits=AXIL_ADDR_BITS)
        watch(m, mon, join.bus)
        watch(m, lite, port.axil)
        m.d.comb += [
            self.protocol_error.eq(mon.error | lite.error),
            self.protocol_code.eq(Mux(mon.error, mon.code, lite.code)),
        ]

        # ---- the register file: read data registered, as the port expects ----
        scratch = [Signal(32, name=f"scratch_{i}") for i in range(SCRATCH_WORDS)]
        rd_bytes = Signal(32)
        wr_bytes = Signal(32)
        cycles = Signal(32)
        m.d.sync += [
            rd_bytes.eq(rd_bytes + reader.beat_bytes),
            wr_bytes.eq(wr_bytes + writer.beat_bytes),
            cycles.eq(cycles + 1),
        ]
        words = [*scratch, ID_MAGIC, rd_bytes, wr_bytes, cycles]
        unmapped = port.reg_addr >= MAPPED_WORDS
        read_error = Signal()  # belongs to the read data of the next cycle
        with m.If(port.reg_we):
            for i, reg in enumerate(scratch):
                with m.If(port.reg_addr == i):
                    for b in range(4):
                        with m.If(port.reg_wstrb[b]):
                            m.d.sync += reg[8 * b : 8 * b + 8].eq(port.reg_wdata[8 * b : 8 * b + 8])
        with m.If(port.reg_re):
            m.d.sync += [port.reg_rdata.eq(0), read_error.eq(unmapped)]
            with m.Switch(port.reg_addr):
                for i, value in enumerate(words):
                    with m.Case(i):
                        m.d.sync += port.reg_rdata.eq(value)
        m.d.comb += port.reg_error.eq(Mux(port.reg_we, unmapped, read_error))
        return m


def generate_dma_top(cfg: DmaTopConfig, out_dir: Path) -> Path:
    """Write the test top's Verilog (and its config beside it); return the ``.v`` path."""
    from cdm_qta.hw.generate import emit

    def convert() -> str:
        from amaranth.back import verilog

        return verilog.convert(DmaTop(cfg), name=cfg.module_name, emit_src=False)

    desc = {"config": cfg.to_dict()}
    sources = [Path(__file__), Path(__file__).with_name("axi_monitor.py")]
    return emit(out_dir, cfg.module_name, desc, convert, extra_sources=sources)
