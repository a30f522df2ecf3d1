"""The compute engine: COMPUTE instructions in, SRAM rows through the array, results out.

Three in-order job queues decouple the parts so that consecutive instructions overlap the
way the array core allows: the weight (``b``) streamer may load the next WS tile while the
input (``a``) streamer still feeds the current one, and the writer retires instructions in
order as their output rows come back. An instruction's tokens are popped when it enters the
engine and pushed when its last output row is written, so a STORE that waits for it sees the
finished rows and a LOAD that waits for it no longer races its reads.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig, Dataflow
from .core import ArrayCore
from .isa import Engine, Opcode, field_bits
from .isa_layout import insn_layout, intake, token_members
from .streamer import RowStreamer, row_address_bits

__all__ = ["ComputeEngine"]


def _fifo_for(layout: data.Layout, depth: int) -> fifo.SyncFIFO:
    return fifo.SyncFIFO(width=layout.size, depth=depth)


class ComputeEngine(wiring.Component):
    """Runs COMPUTE instructions on the array (see :mod:`cdm_qta.hw.isa` for the semantics).

    Members
    -------
    insn : In(stream)        COMPUTE instruction words, in program order
    has_*, pop_*, push_* : token ports toward LOAD (``prev``) and STORE (``next``)
    in_rd_*, w_rd_* : memory read ports of the input and weight buffers
    out_rd_*, out_wr_* : read (transparent to the write) and write ports of the output buffer
    retire : Out             an instruction finished (strobe)
    macs : Out               useful multiply-accumulates started this cycle
    busy, wait_token, wait_array : Out   performance-counter conditions
    skip : In                with ``insn``: skip it (illegal flags), still pushing its tokens
    flush : In               drop incoming instructions unexecuted (deadlock recovery)
    quiet : Out              nothing accepted is still in flight
    range_error, array_error : Out     error strobes for the status register
    """

    def __init__(self, cfg: AcceleratorConfig) -> None:
        self._cfg = cfg
        n = cfg.n
        operand = signed(cfg.array.operand_bits)
        acc = signed(cfg.array.acc_bits)
        self._in_row = data.ArrayLayout(operand, n)
        self._out_row = data.ArrayLayout(acc, n)
        in_bits = row_address_bits(cfg.input_rows)
        w_bits = row_address_bits(cfg.weight_rows)
        out_bits = row_address_bits(cfg.output_rows)
        self._bits = (in_bits, w_bits, out_bits)
        super().__init__(
            {
                "insn": In(stream.Signature(insn_layout(Opcode.COMPUTE))),
                **token_members(Engine.COMPUTE),
                "skip": In(1),
                "flush": In(1),
                "quiet": Out(1),
                "in_rd_addr": Out(in_bits),
                "in_rd_en": Out(1),
                "in_rd_data": In(self._in_row),
                "w_rd_addr": Out(w_bits),
                "w_rd_en": Out(1),
                "w_rd_data": In(self._in_row),
                "out_rd_addr": Out(out_bits),
                "out_rd_en": Out(1),
                "out_rd_data": In(self._out_row),
                "out_wr_addr": Out(out_bits),
                "out_wr_en": Out(n),
                "out_wr_data": Out(self._out_row),
                "retire": Out(1),
                "macs": Out(range(n * n + 1)),
                "busy": Out(1),
                "wait_token": Out(1),
                "wait_array": Out(1),
                "range_error": Out(1),
                "array_error": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self._cfg
        n = cfg.n
        in_bits, w_bits, out_bits = self._bits
        m.submodules.core = core = ArrayCore(cfg.array)

        a_tag = data.StructLayout(
            {"lanes": range(n + 1), "mode": Dataflow, "macs": range(n * n + 1)}
        )
        b_tag = data.StructLayout({"lanes": range(n + 1), "mode": Dataflow})
        # The a stream counts m (WS) or k (OS) rows, the b stream k rows: the widest of the two.
        count_bits = max(field_bits(Opcode.COMPUTE, "m"), field_bits(Opcode.COMPUTE, "k"))
        m.submodules.a_stream = a_st = RowStreamer(
            row_shape=self._in_row, addr_bits=in_bits, count_bits=count_bits, tag_shape=a_tag
        )
        m.submodules.b_stream = b_st = RowStreamer(
            row_shape=self._in_row, addr_bits=w_bits, count_bits=count_bits, tag_shape=b_tag
        )
        a_job = a_st.job.payload.shape()
        b_job = b_st.job.payload.shape()
        w_job = data.StructLayout(
            {
                "ok": 1,
                "os": 1,
                "accumulate": 1,
                "out_row": out_bits,
                "m": range(n + 1),  # rows this instruction writes (m <= N in OS; WS below)
                "m_ws": field_bits(Opcode.COMPUTE, "m"),
                "c": range(n + 1),
                "push_prev": 1,
                "push_next": 1,
            }
        )
        m.submodules.a_jobs = a_jobs = _fifo_for(a_job, 4)
        m.submodules.b_jobs = b_jobs = _fifo_for(b_job, 4)
        m.submodules.w_jobs = w_jobs = _fifo_for(w_job, 8)

        # ---- intake: pop tokens, check the shape, fan the instruction out to the queues ----
        insn = self.insn.payload
        ws = insn.dataflow == Dataflow.WS
        k, rows_m, c = insn.k, insn.m, insn.c
        fits = (
            (c >= 1)
            & (c <= n)
            & (insn.b_row + k <= cfg.weight_rows)
            & (insn.out_row + rows_m <= cfg.output_rows)
            & (k >= 1)
            & (rows_m >= 1)
        )
        ok = Signal()
        m.d.comb += ok.eq(
            fits
            & Mux(
                ws,
                (k <= n) & (insn.a_row + rows_m <= cfg.input_rows),
                (rows_m <= n) & (insn.a_row + k <= cfg.input_rows),
            )
        )
        tokens_ok = (~insn.pop_prev | self.has_prev) & (~insn.pop_next | self.has_next)
        space = a_jobs.w_rdy & b_jobs.w_rdy & w_jobs.w_rdy
        # Rejected instructions waiting in the writer queue (they retire at its head, in
        # order). While one waits, nothing newer is taken: the next tile's output rows would
        # reach the writer with the rejected job at the head, be counted against it and hang
        # the engine (a 1000-stream fuzz run found it: an OS tile draining, a WS COMPUTE with
        # c > N, and an OS tile right behind). Legal programs never wait here.
        rejected = Signal(range(w_jobs.depth + 1))
        space = space & (rejected == 0)
        take = intake(m, self, tokens_ok, ["pop_prev", "pop_next"], room=space)
        run = Signal()  # the instruction is executed (legal shape, legal flags)
        m.d.comb += [run.eq(ok & ~self.skip), self.range_error.eq(take & ~ok & ~self.skip)]
        aj = Signal(a_job)
        bj = Signal(b_job)
        wj = Signal(w_job)
        lanes_a = Mux(ws, k, rows_m)
        m.d.comb += [
            aj.start.eq(insn.a_row),
            aj.count.eq(Mux(ws, rows_m, k)),
            aj.tag.lanes.eq(lanes_a),
            aj.tag.mode.eq(insn.dataflow),
            aj.tag.macs.eq(lanes_a * c),
            bj.start.eq(insn.b_row),
            bj.count.eq(k),
            bj.tag.lanes.eq(c),
            bj.tag.mode.eq(insn.dataflow),
            wj.ok.eq(run),
            wj.os.eq(~ws),
            wj.accumulate.eq(insn.accumulate),
            wj.out_row.eq(insn.out_row),
            wj.m.eq(rows_m),
            wj.m_ws.eq(rows_m),
            wj.c.eq(c),
            wj.push_prev.eq(insn.push_prev),
            wj.push_next.eq(insn.push_next),
            a_jobs.w_data.eq(aj.as_value()),
            b_jobs.w_data.eq(bj.as_value()),
            w_jobs.w_data.eq(wj.as_value()),
            a_jobs.w_en.eq(take & run),
            b_jobs.w_en.eq(take & run),
            w_jobs.w_en.eq(take),
        ]

        # ---- streamers: SRAM rows -> array beats ----
        m.d.comb += [
            a_st.job.valid.eq(a_jobs.r_rdy),
            a_st.job.payload.eq(a_jobs.r_data),
            a_jobs.r_en.eq(a_st.job.ready),
            b_st.job.valid.eq(b_jobs.r_rdy),
            b_st.job.payload.eq(b_jobs.r_data),
            b_jobs.r_en.eq(b_st.job.ready),
            self.in_rd_addr.eq(a_st.rd_addr),
            self.in_rd_en.eq(a_st.rd_en),
            a_st.rd_data.eq(self.in_rd_data),
            self.w_rd_addr.eq(b_st.rd_addr),
            self.w_rd_en.eq(b_st.rd_en),
            b_st.rd_data.eq(self.w_rd_data),
        ]
        for st, port in ((a_st, core.a), (b_st, core.b)):
            row = st.rows.payload
            m.d.comb += [
                port.valid.eq(st.rows.valid),
                port.payload.data.eq(row.data),
                port.payload.lanes.eq(row.tag.lanes),
                port.payload.mode.eq(row.tag.mode),
                port.payload.last.eq(row.last),
                st.rows.ready.eq(port.ready),
            ]
        a_fire = core.a.valid & core.a.ready
        m.d.comb += [
            self.macs.eq(Mux(a_fire, a_st.rows.payload.tag.macs, 0)),
            self.wait_array.eq((core.a.valid & ~core.a.ready) | (core.b.valid & ~core.b.ready)),
        ]

        # ---- writer: output rows -> output buffer (read-modify-write when accumulating) ----
        head = data.View(w_job, w_jobs.r_data)
        have = w_jobs.r_rdy
        expected = Mux(head.ok, Mux(head.os, n, head.m_ws), 0)
        index = Signal(field_bits(Opcode.COMPUTE, "m"))
        row_index = Mux(head.os, n - 1 - index, index)
        o = core.o
        job_done = o.valid & (index + 1 == expected)

        s2_valid = Signal()
        s2_write = Signal()
        s2_addr = Signal(out_bits)
        s2_data = Signal(self._out_row)
        s2_acc = Signal()
        s2_c = Signal(range(n + 1))
        s2_done = Signal()
        s2_push_prev = Signal()
        s2_push_next = Signal()
        with m.If(o.valid):
            m.d.sync += index.eq(Mux(job_done, 0, index + 1))
        m.d.sync += [
            s2_valid.eq(o.valid),
            s2_write.eq(o.valid & have & head.ok & (~head.os | (row_index < head.m))),
            s2_addr.eq(head.out_row + row_index),
            s2_data.eq(o.payload.data),
            s2_acc.eq(head.accumulate),
            s2_c.eq(head.c),
            s2_done.eq(job_done & have),
            s2_push_prev.eq(head.push_prev),
            s2_push_next.eq(head.push_next),
        ]
        # The read is transparent to the write port, so a row accumulating into the address
        # written in the same cycle (K-split tiles of one output row) sees the new value.
        m.d.comb += [
            self.out_rd_addr.eq(head.out_row + row_index),
            self.out_rd_en.eq(o.valid),
            self.out_wr_addr.eq(s2_addr),
        ]
        for j in range(n):
            old = self.out_rd_data[j]
            m.d.comb += [
                self.out_wr_data[j].eq(Mux(s2_acc, old + s2_data[j], s2_data[j])),
                self.out_wr_en[j].eq(s2_write & (j < s2_c)),
            ]
        # A rejected instruction produced no rows: it retires at the head of the queue, in
        # order, in a cycle in which no finished instruction retires.
        skip = Signal()
        m.d.comb += skip.eq(have & ~head.ok & ~o.valid & ~s2_done)
        queued = take & ~run
        with m.If(queued & ~skip):
            m.d.sync += rejected.eq(rejected + 1)
        with m.Elif(skip & ~queued):
            m.d.sync += rejected.eq(rejected - 1)
        m.d.comb += [
            w_jobs.r_en.eq((job_done & have) | skip),
            self.push_prev.eq((s2_done & s2_push_prev) | (skip & head.push_prev)),
            self.push_next.eq((s2_done & s2_push_next) | (skip & head.push_next)),
            self.retire.eq(s2_done | skip),
        ]
        # A row nobody expects, or `last` where the count says otherwise, means the array and
        # the job queue disagree: never expected, reported rather than silently absorbed.
        m.d.comb += self.array_error.eq(
            (o.valid & (~have | ~head.ok | (o.payload.last != (index + 1 == expected))))
            | core.error.as_value().any()
        )

        working = a_jobs.r_rdy | b_jobs.r_rdy | have | a_st.busy | b_st.busy | core.busy | s2_valid
        m.d.comb += [self.busy.eq(self.insn.valid | working), self.quiet.eq(~working)]
        return m
