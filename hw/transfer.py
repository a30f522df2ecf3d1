"""The LOAD and STORE engines: DMA commands for DRAM <-> SRAM row transfers.

Both engines execute their instructions one at a time and in order; the DMA behind them keeps
several bursts in flight within one instruction. Their ends of the DMA interfaces follow
:mod:`cdm_qta.hw.dma`: a command, one row beat per DRAM row, and one ``done`` beat per command
that carries the error bits (a command the DMA rejects moves no data).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .dma import (
    dma_command_layout,
    dma_error_layout,
    dma_read_row_layout,
    dma_write_row_layout,
)
from .isa import Buffer, Engine, Opcode, field_bits, field_max
from .isa_layout import insn_layout, intake, token_members
from .streamer import RowStreamer, row_address_bits

__all__ = ["LoadEngine", "StoreEngine"]


def _transfer_members(engine: Engine, opcode: Opcode) -> dict[str, wiring.Member]:
    """Members LOAD and STORE share: instructions, tokens, flush, the DMA's command and
    completion streams, and the status and counter strobes."""
    return {
        "insn": In(stream.Signature(insn_layout(opcode))),
        **token_members(engine),
        "skip": In(1),
        "flush": In(1),
        "quiet": Out(1),
        "dma_cmd": Out(stream.Signature(dma_command_layout())),
        "dma_done": In(stream.Signature(dma_error_layout())),
        "retire": Out(1),
        "busy": Out(1),
        "wait_token": Out(1),
        "wait_bus": Out(1),
        "range_error": Out(1),
        "dma_error": Out(dma_error_layout()),
        "bytes": Out(range(field_max(opcode, "row_bytes") + 1)),
    }


class LoadEngine(wiring.Component):
    """LOAD: DRAM rows -> input or weight buffer rows (see :mod:`cdm_qta.hw.isa`).

    Members
    -------
    insn : In(stream)       LOAD instruction words in program order
    has_next, pop_next, push_next : the COMPUTE-side token ports (:func:`token_members`)
    dma_cmd, dma_row, dma_done : the DMA reader's command, row and completion streams
    in_wr_*, w_wr_* : Out   write ports of the input and weight buffers
    retire, busy, wait_token, wait_bus, range_error : Out
    bytes : Out             DRAM bytes delivered this cycle (for the DMA counter)
    skip, flush, quiet : see :class:`~cdm_qta.hw.compute.ComputeEngine`
    """

    def __init__(self, cfg: AcceleratorConfig) -> None:
        self._cfg = cfg
        super().__init__(
            {
                **_transfer_members(Engine.LOAD, Opcode.LOAD),
                "dma_row": In(stream.Signature(dma_read_row_layout(cfg.input_row_bytes))),
                "in_wr_addr": Out(row_address_bits(cfg.input_rows)),
                "in_wr_en": Out(1),
                "w_wr_addr": Out(row_address_bits(cfg.weight_rows)),
                "w_wr_en": Out(1),
                "wr_data": Out(8 * cfg.input_row_bytes),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self._cfg
        insn = self.insn.payload
        buffer = Signal()
        base = Signal.like(insn.sram_row)
        index = Signal.like(insn.rows)
        push = Signal()
        cmd = Signal(dma_command_layout())

        tokens_ok = ~insn.pop_next | self.has_next
        limit = Signal(range(max(cfg.input_rows, cfg.weight_rows) + 1))
        m.d.comb += limit.eq(Mux(insn.buffer == Buffer.WEIGHT, cfg.weight_rows, cfg.input_rows))
        in_range = (insn.rows >= 1) & (insn.sram_row + insn.rows <= limit)

        m.d.comb += [
            self.dma_cmd.payload.eq(cmd),
            self.wr_data.eq(self.dma_row.payload.data.as_value()),
        ]
        with m.FSM(name="load") as fsm:
            with m.State("Idle"):
                take = intake(m, self, tokens_ok, ["pop_next"])
                with m.If(take):
                    m.d.sync += [
                        buffer.eq(insn.buffer),
                        base.eq(insn.sram_row),
                        index.eq(0),
                        push.eq(insn.push_next),
                        cmd.dram_addr.eq(insn.dram_addr),
                        cmd.stride.eq(insn.stride),
                        cmd.rows.eq(insn.rows),
                        cmd.row_bytes.eq(insn.row_bytes),
                    ]
                    with m.If(in_range & ~self.skip):
                        m.next = "Issue"
                    with m.Else():
                        # Outside the buffer (or illegal flags): nothing moves, tokens flow.
                        m.d.comb += [
                            self.range_error.eq(~self.skip),
                            self.retire.eq(1),
                            self.push_next.eq(insn.push_next),
                        ]
            with m.State("Issue"):
                m.d.comb += [self.dma_cmd.valid.eq(1), self.wait_bus.eq(~self.dma_cmd.ready)]
                with m.If(self.dma_cmd.ready):
                    m.next = "Transfer"
            with m.State("Transfer"):
                m.d.comb += [
                    self.dma_row.ready.eq(1),
                    self.dma_done.ready.eq(1),
                    self.wait_bus.eq(~self.dma_row.valid & ~self.dma_done.valid),
                ]
                with m.If(self.dma_row.valid):
                    m.d.sync += index.eq(index + 1)
                    m.d.comb += [
                        self.bytes.eq(cmd.row_bytes),
                        self.in_wr_en.eq(buffer == Buffer.INPUT),
                        self.w_wr_en.eq(buffer == Buffer.WEIGHT),
                    ]
                with m.If(self.dma_done.valid):
                    m.d.comb += [
                        self.dma_error.eq(self.dma_done.payload),
                        self.retire.eq(1),
                        self.push_next.eq(push),
                    ]
                    m.next = "Idle"
        m.d.comb += [
            self.in_wr_addr.eq(base + index),
            self.w_wr_addr.eq(base + index),
            self.busy.eq(self.insn.valid | ~fsm.ongoing("Idle")),
            self.quiet.eq(fsm.ongoing("Idle")),
        ]
        return m


class StoreEngine(wiring.Component):
    """STORE: output buffer rows (INT32 lanes, little-endian) -> DRAM rows.

    Members
    -------
    insn : In(stream)        STORE instruction words in program order
    has_prev, pop_prev, push_prev : the COMPUTE-side token ports (:func:`token_members`)
    dma_cmd, dma_row, dma_done : the DMA writer's command, row and completion streams
    out_rd_* : the output buffer's store-side read port
    retire, busy, wait_token, wait_bus, range_error : Out
    bytes : Out              bytes handed to the DMA writer this cycle (for the DMA counter)
    """

    def __init__(self, cfg: AcceleratorConfig) -> None:
        self._cfg = cfg
        self._out_row = data.ArrayLayout(signed(cfg.array.acc_bits), cfg.n)
        self._addr_bits = row_address_bits(cfg.output_rows)
        super().__init__(
            {
                **_transfer_members(Engine.STORE, Opcode.STORE),
                "dma_row": Out(stream.Signature(dma_write_row_layout(cfg.output_row_bytes))),
                "out_rd_addr": Out(self._addr_bits),
                "out_rd_en": Out(1),
                "out_rd_data": In(self._out_row),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self._cfg
        m.submodules.rows = rows = RowStreamer(
            row_shape=self._out_row,
            addr_bits=self._addr_bits,
            count_bits=field_bits(Opcode.STORE, "rows"),
            tag_shape=unsigned(1),
        )
        insn = self.insn.payload
        push = Signal()
        cmd = Signal(dma_command_layout())
        cmd_sent = Signal()
        job_sent = Signal()
        job = Signal(rows.job.payload.shape())

        tokens_ok = ~insn.pop_prev | self.has_prev
        in_range = (insn.rows >= 1) & (insn.sram_row + insn.rows <= cfg.output_rows)
        m.d.comb += [
            self.dma_cmd.payload.eq(cmd),
            rows.job.payload.eq(job),
            self.out_rd_addr.eq(rows.rd_addr),
            self.out_rd_en.eq(rows.rd_en),
            rows.rd_data.eq(self.out_rd_data),
            self.dma_row.valid.eq(rows.rows.valid),
            self.dma_row.payload.data.eq(rows.rows.payload.data.as_value()),
            rows.rows.ready.eq(self.dma_row.ready),
            self.bytes.eq(Mux(self.dma_row.valid & self.dma_row.ready, cmd.row_bytes, 0)),
        ]
        busy = Signal()
        with m.FSM(name="store") as fsm:
            with m.State("Idle"):
                take = intake(m, self, tokens_ok, ["pop_prev"])
                with m.If(take):
                    m.d.sync += [
                        push.eq(insn.push_prev),
                        cmd.dram_addr.eq(insn.dram_addr),
                        cmd.stride.eq(insn.stride),
                        cmd.rows.eq(insn.rows),
                        cmd.row_bytes.eq(insn.row_bytes),
                        job.start.eq(insn.sram_row),
                        job.count.eq(insn.rows),
                        cmd_sent.eq(0),
                        job_sent.eq(0),
                    ]
                    with m.If(in_range & ~self.skip):
                        m.next = "Run"
                    with m.Else():
                        m.d.comb += [
                            self.range_error.eq(~self.skip),
                            self.retire.eq(1),
                            self.push_prev.eq(insn.push_prev),
                        ]
            with m.State("Run"):
                # The command and the row reads start together; the DMA consumes every row
                # even if it rejects the command, so the engine's side never changes.
                m.d.comb += [
                    busy.eq(1),
                    self.dma_cmd.valid.eq(~cmd_sent),
                    rows.job.valid.eq(~job_sent),
                    self.dma_done.ready.eq(cmd_sent & job_sent),
                    self.wait_bus.eq(
                        (self.dma_row.valid & ~self.dma_row.ready)
                        | (~cmd_sent & ~self.dma_cmd.ready)
                    ),
                ]
                with m.If(self.dma_cmd.ready):
                    m.d.sync += cmd_sent.eq(1)
                with m.If(rows.job.ready):
                    m.d.sync += job_sent.eq(1)
                with m.If(self.dma_done.valid & cmd_sent & job_sent):
                    m.d.comb += [
                        self.dma_error.eq(self.dma_done.payload),
                        self.retire.eq(1),
                        self.push_prev.eq(push),
                    ]
                    m.next = "Idle"
        m.d.comb += [
            self.busy.eq(self.insn.valid | busy | rows.busy),
            self.quiet.eq(fsm.ongoing("Idle") & ~rows.busy),
        ]
        return m
