"""Stream consecutive SRAM rows out of a synchronous read port, with back-pressure."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import check_int

__all__ = ["RowStreamer", "row_address_bits"]


def row_address_bits(rows: int) -> int:
    """Width of a row address of a memory with ``rows`` rows (at least 1 bit)."""
    return max(rows - 1, 1).bit_length()


class RowStreamer(wiring.Component):
    """Read rows ``start .. start+count-1`` of a memory and emit them as a stream.

    A memory read port answers one cycle after its address, but the consumer may stall at
    any time; reads are therefore only issued while the output FIFO has room for every row in
    flight, which sustains one row per cycle when the consumer takes one per cycle.
    Each job carries a ``tag`` (e.g. lane count and dataflow) that is copied onto every row of
    the job, so jobs can follow each other back to back.

    Parameters
    ----------
    row_shape : shape of one memory row
    addr_bits : width of row addresses
    count_bits : width of a job's row count (the instruction field it comes from)
    tag_shape : shape of the per-job tag
    depth : output FIFO depth (>= 2)

    Members
    -------
    job : In(stream)  ``{start, count, tag}``; ``count`` >= 1
    rows : Out(stream) ``{data, tag, last}``; ``last`` on a job's final row
    rd_addr, rd_en : Out   to the memory read port
    rd_data : In           from the memory read port (valid the cycle after ``rd_en``)
    busy : Out             a job is being read or rows are still buffered
    """

    def __init__(
        self,
        *,
        row_shape: object,
        addr_bits: int,
        count_bits: int,
        tag_shape: object,
        depth: int = 4,
    ) -> None:
        self._row_shape = row_shape
        self._addr_bits = check_int("addr_bits", addr_bits, 1, 32)
        self._count_bits = check_int("count_bits", count_bits, 1, 32)
        self._tag_shape = tag_shape
        self._depth = check_int("depth", depth, 2, 1 << 16)
        self._row_layout = data.StructLayout({"data": row_shape, "tag": tag_shape, "last": 1})
        super().__init__(
            {
                "job": In(
                    stream.Signature(
                        data.StructLayout(
                            {"start": self._addr_bits, "count": self._count_bits, "tag": tag_shape}
                        )
                    )
                ),
                "rows": Out(stream.Signature(self._row_layout)),
                "rd_addr": Out(self._addr_bits),
                "rd_en": Out(1),
                "rd_data": In(row_shape),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        width = Shape.cast(self._row_layout).width
        m.submodules.fifo = buf = fifo.SyncFIFO(width=width, depth=self._depth)

        active = Signal()
        start = Signal(self._addr_bits)
        index = Signal(self._count_bits)
        count = Signal(self._count_bits)
        tag = Signal(self._tag_shape)
        in_flight = Signal()
        in_flight_last = Signal()
        in_flight_tag = Signal(self._tag_shape)

        room = buf.level + in_flight < self._depth
        issue = Signal()
        last_issue = Signal()
        m.d.comb += [
            issue.eq(active & room),
            last_issue.eq(issue & (index + 1 == count)),
            self.rd_en.eq(issue),
            self.rd_addr.eq(start + index),
            # The next job starts in the cycle the current one issues its last read: jobs
            # follow each other without a bubble.
            self.job.ready.eq(~active | last_issue),
        ]
        with m.If(issue):
            m.d.sync += index.eq(index + 1)
        with m.If(last_issue):
            m.d.sync += active.eq(0)
        with m.If(self.job.valid & self.job.ready):
            m.d.sync += [
                active.eq(1),
                start.eq(self.job.payload.start),
                count.eq(self.job.payload.count),
                tag.eq(self.job.payload.tag),
                index.eq(0),
            ]
        m.d.sync += [
            in_flight.eq(issue),
            in_flight_last.eq(last_issue),
            in_flight_tag.eq(tag),
        ]

        row = Signal(self._row_layout)
        m.d.comb += [
            row.data.eq(self.rd_data),
            row.tag.eq(in_flight_tag),
            row.last.eq(in_flight_last),
            buf.w_data.eq(row.as_value()),
            buf.w_en.eq(in_flight),
            self.rows.valid.eq(buf.r_rdy),
            self.rows.payload.eq(buf.r_data),
            buf.r_en.eq(self.rows.ready),
            self.busy.eq(active | in_flight | buf.r_rdy),
        ]
        return m
