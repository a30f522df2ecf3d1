"""The LOAD and STORE engines: DMA commands for DRAM <-> SRAM row transfers.

Both engines execute their instructions in order and pipelined: an instruction's DMA command
goes out as soon as its tokens are there, while up to ``transfers_in_flight`` older ones still
move data (the DMA behind them keeps ``dma_outstanding`` bursts in flight), so a stream of
short transfers pays the DRAM latency once, not per instruction. Each instruction retires, and
pushes its token, when the DMA reports it ``done``, oldest first; one that moves nothing
(out of range, illegal flags) waits until the older ones have retired.

Their ends of the DMA interfaces follow :mod:`cdm_qta.hw.dma`: a command, one row beat per DRAM
row, and one ``done`` beat per command that carries the error bits (a command the DMA rejects
moves no data and sends only its ``done``, after every older command's).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
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
        desc = data.StructLayout(
            {
                "buffer": 1,
                "base": len(insn.sram_row),
                "row_bytes": len(insn.row_bytes),
                "push": 1,
            }
        )
        # Transfers whose command went (or goes) to the DMA, oldest first: rows arrive in this
        # order, so the head says where the current row lands.
        m.submodules.started = started = SyncFIFO(width=desc.size, depth=cfg.transfers_in_flight)
        # Transfers whose last row has landed and whose `done` (with its errors) has not come.
        m.submodules.landed = landed = SyncFIFO(width=1, depth=cfg.transfers_in_flight)
        head = data.View(desc, started.r_data)
        cmd = Signal(dma_command_layout())
        cmd_pending = Signal()
        index = Signal.like(insn.rows)
        outstanding = started.r_rdy | landed.r_rdy

        tokens_ok = ~insn.pop_next | self.has_next
        limit = Signal(range(max(cfg.input_rows, cfg.weight_rows) + 1))
        m.d.comb += limit.eq(Mux(insn.buffer == Buffer.WEIGHT, cfg.weight_rows, cfg.input_rows))
        in_range = (insn.rows >= 1) & (insn.sram_row + insn.rows <= limit)
        good = in_range & ~self.skip
        # A transfer that moves nothing retires when it is taken, so it waits for the older
        # ones to retire: instructions retire (and push tokens) in program order.
        room = Mux(good, started.w_rdy & (~cmd_pending | self.dma_cmd.ready), ~outstanding)
        take = intake(m, self, tokens_ok, ["pop_next"], room)

        # ---- issue: one command register, refilled in the cycle the DMA takes it ----
        m.d.comb += [
            self.dma_cmd.valid.eq(cmd_pending),
            self.dma_cmd.payload.eq(cmd),
            started.w_en.eq(take & good),
            started.w_data.eq(
                Cat(insn.buffer == Buffer.WEIGHT, insn.sram_row, insn.row_bytes, insn.push_next)
            ),
        ]
        with m.If(take & good):
            m.d.sync += [
                cmd_pending.eq(1),
                cmd.dram_addr.eq(insn.dram_addr),
                cmd.stride.eq(insn.stride),
                cmd.rows.eq(insn.rows),
                cmd.row_bytes.eq(insn.row_bytes),
            ]
        with m.Elif(self.dma_cmd.ready):
            m.d.sync += cmd_pending.eq(0)
        with m.If(take & ~good):
            # Outside the buffer (or illegal flags): nothing moves, tokens flow.
            m.d.comb += [
                self.range_error.eq(~self.skip),
                self.retire.eq(1),
                self.push_next.eq(insn.push_next),
            ]

        # ---- rows land at the head transfer's rows; `done` retires the oldest landed one ----
        m.d.comb += [
            self.dma_row.ready.eq(started.r_rdy),
            self.dma_done.ready.eq(outstanding),
            self.wr_data.eq(self.dma_row.payload.data.as_value()),
            self.in_wr_addr.eq(head.base + index),
            self.w_wr_addr.eq(head.base + index),
        ]
        with m.If(self.dma_row.valid & started.r_rdy):
            m.d.comb += [
                self.bytes.eq(head.row_bytes),
                self.in_wr_en.eq(~head.buffer),
                self.w_wr_en.eq(head.buffer),
            ]
            with m.If(self.dma_row.payload.last):
                m.d.sync += index.eq(0)
                m.d.comb += [started.r_en.eq(1), landed.w_en.eq(1), landed.w_data.eq(head.push)]
            with m.Else():
                m.d.sync += index.eq(index + 1)
        with m.If(self.dma_done.valid & outstanding):
            m.d.comb += [self.dma_error.eq(self.dma_done.payload), self.retire.eq(1)]
            with m.If(landed.r_rdy):
                m.d.comb += [landed.r_en.eq(1), self.push_next.eq(landed.r_data)]
            with m.Else():
                # The DMA rejected the head's command (alignment, window): no rows, only the
                # `done`, which the DMA sends after every older transfer's `done`.
                m.d.comb += [started.r_en.eq(1), self.push_next.eq(head.push)]
        m.d.comb += [
            self.wait_bus.eq(
                (cmd_pending & ~self.dma_cmd.ready)
                | (outstanding & ~cmd_pending & ~self.dma_row.valid & ~self.dma_done.valid)
            ),
            self.busy.eq(self.insn.valid | outstanding),
            self.quiet.eq(~outstanding),
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
        insn = self.insn.payload
        m.submodules.rows = rows = RowStreamer(
            row_shape=self._out_row,
            addr_bits=self._addr_bits,
            count_bits=field_bits(Opcode.STORE, "rows"),
            tag_shape=unsigned(len(insn.row_bytes)),  # each row's DRAM bytes, for the counter
        )
        # Transfers started and not yet `done` (their push flags), oldest first.
        m.submodules.started = started = SyncFIFO(width=1, depth=cfg.transfers_in_flight)
        cmd = Signal(dma_command_layout())
        cmd_pending = Signal()
        job = Signal(rows.job.payload.shape())
        job_pending = Signal()

        tokens_ok = ~insn.pop_prev | self.has_prev
        in_range = (insn.rows >= 1) & (insn.sram_row + insn.rows <= cfg.output_rows)
        good = in_range & ~self.skip
        free = (~cmd_pending | self.dma_cmd.ready) & (~job_pending | rows.job.ready)
        # As in LOAD: a transfer that moves nothing waits for the older ones to retire.
        room = Mux(good, started.w_rdy & free, ~started.r_rdy)
        take = intake(m, self, tokens_ok, ["pop_prev"], room)

        # ---- issue: the DMA command and the row reads go out independently ----
        # (the DMA consumes every row even if it rejects the command, so the row side never
        # depends on the outcome)
        m.d.comb += [
            self.dma_cmd.valid.eq(cmd_pending),
            self.dma_cmd.payload.eq(cmd),
            rows.job.valid.eq(job_pending),
            rows.job.payload.eq(job),
            started.w_en.eq(take & good),
            started.w_data.eq(insn.push_prev),
            self.out_rd_addr.eq(rows.rd_addr),
            self.out_rd_en.eq(rows.rd_en),
            rows.rd_data.eq(self.out_rd_data),
            self.dma_row.valid.eq(rows.rows.valid),
            self.dma_row.payload.data.eq(rows.rows.payload.data.as_value()),
            rows.rows.ready.eq(self.dma_row.ready),
            self.bytes.eq(Mux(self.dma_row.valid & self.dma_row.ready, rows.rows.payload.tag, 0)),
        ]
        with m.If(take & good):
            m.d.sync += [
                cmd_pending.eq(1),
                cmd.dram_addr.eq(insn.dram_addr),
                cmd.stride.eq(insn.stride),
                cmd.rows.eq(insn.rows),
                cmd.row_bytes.eq(insn.row_bytes),
                job_pending.eq(1),
                job.start.eq(insn.sram_row),
                job.count.eq(insn.rows),
                job.tag.eq(insn.row_bytes),
            ]
        with m.Else():
            with m.If(self.dma_cmd.ready):
                m.d.sync += cmd_pending.eq(0)
            with m.If(rows.job.ready):
                m.d.sync += job_pending.eq(0)
        with m.If(take & ~good):
            m.d.comb += [
                self.range_error.eq(~self.skip),
                self.retire.eq(1),
                self.push_prev.eq(insn.push_prev),
            ]
        with m.If(self.dma_done.valid & started.r_rdy):
            m.d.comb += [
                self.dma_error.eq(self.dma_done.payload),
                self.retire.eq(1),
                self.push_prev.eq(started.r_data),
                started.r_en.eq(1),
            ]
        m.d.comb += [
            self.dma_done.ready.eq(started.r_rdy),
            self.wait_bus.eq(
                (self.dma_row.valid & ~self.dma_row.ready) | (cmd_pending & ~self.dma_cmd.ready)
            ),
            self.busy.eq(self.insn.valid | started.r_rdy | rows.busy),
            self.quiet.eq(~started.r_rdy & ~rows.busy),
        ]
        return m
