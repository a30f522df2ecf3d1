"""Instruction fetch: the accelerator reads a program from DRAM into its instruction queue.

Why: pushing each 128-bit word through four AXI4-Lite register writes costs the host dozens of
bus cycles per instruction; a training step is thousands of instructions. As in VTA's fetch
module, the host writes the program's DRAM address and length, starts it, and waits for
completion, while the accelerator streams the words in at the speed of its own AXI4 master.

A program of ``count`` words at ``addr`` is read as rows of ``R = max(16, W)`` bytes (``W`` the
bus width; a row is one or more whole instructions) by a :class:`~cdm_qta.hw.dma.DmaReader`,
so bursts, 4 KB splitting, outstanding reads, bus errors and the DRAM window are handled by
the same engine that moves data. ``addr`` must be a multiple of ``R`` and ``count`` at most
:data:`MAX_WORDS`; anything else is a ``align`` error and nothing is read.

Timing: the first word enters ``words`` after the DRAM's read latency; then one word per cycle
while the queue takes them (rows of several words are unpacked one word per cycle).

The read channel is shared with the LOAD engine's DMA (one R channel, in order per slave), so
the fetch must never hold read data it cannot take: a burst is requested only when a row of
the row buffer (:func:`~cdm_qta.hw.config.fetch_buffer_rows` rows) is free for it. A full
instruction queue then stops new requests instead of stopping the bus, and the LOAD whose data
stands behind ours still gets it.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import READ_MEMBERS
from .config import INSN_BYTES, fetch_buffer_rows, fetch_row_bytes
from .dma import DmaReader, dma_command_layout, dma_error_layout
from .isa import INSN_BITS, Opcode, field_max

__all__ = ["INSN_BYTES", "FetchUnit", "fetch_row_bytes", "max_fetch_words"]

assert INSN_BYTES * 8 == INSN_BITS


def max_fetch_words(data_bytes: int) -> int:
    """Longest program one fetch can read (the DMA command's row count limits it)."""
    return field_max(Opcode.LOAD, "rows") * (fetch_row_bytes(data_bytes) // INSN_BYTES)


class FetchUnit(wiring.Component):
    """Read ``count`` instruction words from DRAM at ``addr`` into a stream.

    Parameters
    ----------
    data_bytes : int
        AXI data width W.
    dram_base, dram_size : int
        The DRAM window (a program outside it is a ``window`` error, nothing is read).

    Members
    -------
    start : In(1)
        Strobe: begin fetching ``addr``/``count`` (ignored while ``active``; see ``busy_start``).
    addr, count : In(32)
        The program, sampled with ``start``.
    words : Out(stream(INSN_BITS))
        Instruction words in program order.
    axi : Out(AXI4)
        Read master (AR/R; the write half is idle), to an arbiter shared with the DMA reader.
    active : Out(1)
        A fetch is in progress: words may still come.
    finished : Out(1)
        Strobe: the program's last word was taken (or the fetch was refused or failed).
    error : Out(dma_error_layout())
        Strobe with ``finished``: ``align`` (address/count), ``window``, ``bus``.
    busy_start : Out(1)
        Strobe: ``start`` arrived while a fetch was active (it is ignored).
    """

    def __init__(self, *, data_bytes: int, dram_base: int, dram_size: int) -> None:
        self._row = fetch_row_bytes(data_bytes)
        self._buffer_rows = fetch_buffer_rows(data_bytes)
        self._reader = DmaReader(
            data_bytes=data_bytes,
            row_width=self._row,
            dram_base=dram_base,
            dram_size=dram_size,
            max_outstanding=self._buffer_rows,
        )
        super().__init__(
            {
                "start": In(1),
                "addr": In(32),
                "count": In(32),
                "words": Out(stream.Signature(INSN_BITS)),
                "axi": Out(self._reader.axi.signature),
                "active": Out(1),
                "finished": Out(1),
                "error": Out(dma_error_layout()),
                "busy_start": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.reader = rd = self._reader
        per_row = self._row // INSN_BYTES

        # ---- the read port, with requests gated by a reserved buffer row each ----
        depth = self._buffer_rows
        m.submodules.rows = buf = fifo.SyncFIFO(width=8 * self._row, depth=depth)
        requested = Signal(range(depth + 1))  # bursts asked for, not yet in `rows`
        room = buf.level + requested < depth
        for name in READ_MEMBERS:
            ours, theirs = getattr(self.axi, name), getattr(rd.axi, name)
            if name == "arvalid":
                m.d.comb += ours.eq(theirs & room)
            elif name == "arready":
                m.d.comb += theirs.eq(ours & room)
            elif rd.axi.signature.members[name].flow == Out:
                m.d.comb += ours.eq(theirs)
            else:
                m.d.comb += theirs.eq(ours)
        asked = self.axi.arvalid & self.axi.arready
        arrived = buf.w_en & buf.w_rdy
        m.d.sync += requested.eq(requested + asked - arrived)
        m.d.comb += [
            self.axi.awvalid.eq(0),
            self.axi.wvalid.eq(0),
            self.axi.bready.eq(0),
            buf.w_data.eq(rd.row.payload.data.as_value()),
            buf.w_en.eq(rd.row.valid),
            rd.row.ready.eq(buf.w_rdy),  # never low: every arriving row has its place
        ]
        limit = max_fetch_words(rd.params.data_bytes)

        left = Signal(32)  # words not yet emitted
        slot = Signal(range(per_row))  # word of the current row to emit next
        cmd = Signal(dma_command_layout())
        sent = Signal()  # the DMA command was accepted
        m.d.comb += [rd.cmd.payload.eq(cmd), self.busy_start.eq(self.start & self.active)]

        row_words = data.ArrayLayout(INSN_BITS, per_row)
        row = data.View(row_words, buf.r_data)
        last_of_row = (slot == per_row - 1) | (left == 1)
        with m.FSM(name="fetch"):
            with m.State("Idle"):
                with m.If(self.start):
                    row_bits = self._row.bit_length() - 1  # rows and words per row: powers of 2
                    bad = (self.addr[:row_bits] != 0) | (self.count > limit)
                    with m.If(bad | (self.count == 0)):
                        m.d.comb += [self.finished.eq(1), self.error.align.eq(bad)]
                    with m.Else():
                        rows = (self.count + (per_row - 1)) >> (per_row.bit_length() - 1)
                        m.d.sync += [
                            cmd.dram_addr.eq(self.addr),
                            cmd.stride.eq(self._row),
                            cmd.rows.eq(rows),
                            cmd.row_bytes.eq(self._row),
                            left.eq(self.count),
                            slot.eq(0),
                            sent.eq(0),
                        ]
                        m.next = "Run"
            with m.State("Run"):
                m.d.comb += [
                    self.active.eq(1),
                    rd.cmd.valid.eq(~sent),
                    self.words.valid.eq(buf.r_rdy & (left != 0)),
                    self.words.payload.eq(row[slot]),
                    # A row leaves the buffer with its last wanted word (or at once if none).
                    buf.r_en.eq((left == 0) | (self.words.ready & last_of_row)),
                ]
                with m.If(rd.cmd.ready):
                    m.d.sync += sent.eq(1)
                with m.If(self.words.valid & self.words.ready):
                    m.d.sync += [
                        left.eq(left - 1),
                        slot.eq(Mux(last_of_row, 0, slot + 1)),
                    ]
                # The reader's done beat follows its last row; finished once all are emitted.
                m.d.comb += rd.done.ready.eq(sent & ~buf.r_rdy)
                with m.If(rd.done.valid & sent & ~buf.r_rdy):
                    m.d.comb += [self.finished.eq(1), self.error.eq(rd.done.payload)]
                    m.next = "Idle"
        return m
