"""DMA engines between DRAM (an AXI4 master port) and SRAM rows: 2-D strided row transfers.

A *command* (:func:`dma_command_layout`) moves ``rows`` rows; row ``r`` is the DRAM bytes
``[dram_addr + r*stride, dram_addr + r*stride + row_bytes)`` and corresponds to one SRAM row
of ``row_width`` bytes: DRAM byte ``i`` of the row is byte ``i`` of the SRAM row, i.e. bits
``[8i, 8i+8)`` of the row data (lane 0 in the low bits, the order of
:func:`cdm_qta.golden.pack`).

Structure shared by both engines
--------------------------------
``cmd`` -> *check* register -> *burst planner* -> address channel (AR or AW), and a FIFO of
burst descriptors (pushed on the address handshake, popped when the burst's data is done) that
tells the data side what each burst is. The FIFO depth is ``max_outstanding``: that many bursts
may be in flight, so the address channel runs ahead of the data and a DRAM with latency up to
``max_outstanding`` cycles streams without bubbles. One ID, everything in order.

* A command is checked in the cycle after it is accepted (``align``, ``window`` in
  :func:`dma_error_layout`); a rejected command issues no bus transaction at all and travels
  through the same FIFO as a "done only" entry, so ``done`` beats stay in command order.
* Bursts are INCR, ``AxSIZE = log2(data_bytes)``, one per row unless the row crosses a 4 KB
  boundary or is longer than 256 beats; then it is split there. Rows start at multiples of
  ``data_bytes`` (an ``align`` rule), so every burst is aligned and only a row's final beat is
  partial.
* The planner issues one burst per cycle: rows of at most ``data_bytes`` bytes move at one row
  per cycle, longer rows at one beat per cycle, also across command boundaries.

Timing: a command accepted on ``cmd`` in cycle ``t`` has its first AR/AW valid in cycle
``t + 2`` (``CMD_TO_ADDR``); a back-to-back next command continues in the cycle after the
previous command's last burst, so commands add no bubbles.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, CACHE_NORMAL, axi4_signature
from .checks import check_int, check_pow2
from .config import AXI4_MAX_BUS_BYTES
from .isa import Opcode, field_bits

__all__ = [
    "CMD_TO_ADDR",
    "DmaParams",
    "DmaReader",
    "DmaWriter",
    "dma_command_layout",
    "dma_error_layout",
    "dma_read_row_layout",
    "dma_write_row_layout",
]

#: Cycles from a command's acceptance on ``cmd`` to its first AR/AW ``valid``.
CMD_TO_ADDR = 2

#: Bytes a burst may not cross (AXI4: no burst crosses a 4 KB address boundary).
PAGE_BYTES = 4096
#: AXI4 INCR bursts have at most 256 beats.
MAX_BEATS = 256
#: ``*prot`` = unprivileged, non-secure, data.
PROT_DATA = 0b010
#: AXI byte address width of the DMA's master port.
ADDR_BITS = 32

#: The command fields, as wide as the LOAD/STORE instruction fields that fill them.
_COMMAND_FIELDS = ("dram_addr", "stride", "rows", "row_bytes")


def dma_command_layout() -> data.StructLayout:
    """One 2-D transfer: ``rows`` rows of ``row_bytes`` bytes, ``stride`` bytes apart in DRAM.

    Field widths are the ISA's (:data:`cdm_qta.hw.isa.FIELDS`), so a LOAD or STORE always fits.
    """
    return data.StructLayout({f: field_bits(Opcode.LOAD, f) for f in _COMMAND_FIELDS})


def dma_error_layout() -> data.StructLayout:
    """Outcome of one command, in its ``done`` beat (all zero: success).

    ``align``: ``dram_addr`` or ``stride`` not a multiple of ``data_bytes``, ``row_bytes`` 0 or
    above ``row_width``, or ``rows`` 0. ``window``: a byte of the transfer lies outside
    ``[dram_base, dram_base + dram_size)``. Both are found before any bus transaction; the
    command then moves nothing. ``bus``: a response other than OKAY arrived (the transfer was
    still completed: every row was delivered or every write issued).
    """
    return data.StructLayout({"align": 1, "window": 1, "bus": 1})


def dma_read_row_layout(row_width: int) -> data.StructLayout:
    """A row leaving the reader; ``last`` marks the final row of a command."""
    return data.StructLayout(
        {
            "data": data.ArrayLayout(unsigned(8), check_int("row_width", row_width, 1, 1024)),
            "last": 1,
        }
    )


def dma_write_row_layout(row_width: int) -> data.StructLayout:
    """A row entering the writer (the writer knows from its command which row is last)."""
    width = check_int("row_width", row_width, 1, 1024)
    return data.StructLayout({"data": data.ArrayLayout(unsigned(8), width)})


def _burst_layout(data_bytes: int) -> data.StructLayout:
    lw = data_bytes.bit_length() - 1
    return data.StructLayout(
        {
            "addr": ADDR_BITS,
            "len": 8,  # AxLEN: beats - 1
            "row_end": 1,  # the row's final burst
            "cmd_end": 1,  # the command's final burst
            "tail": lw,  # valid bytes in the row's final beat, minus 1 (meaningful if row_end)
            "reject": 1,  # no burst: the command was rejected (error says why)
            "error": dma_error_layout(),
            "rows": dma_command_layout()["rows"].shape,  # rows of a rejected command (dropped)
        }
    )


class DmaParams:
    """Validated constructor parameters of :class:`DmaReader` and :class:`DmaWriter`."""

    def __init__(
        self,
        *,
        data_bytes: int,
        row_width: int,
        dram_base: int,
        dram_size: int,
        max_outstanding: int,
        id_bits: int,
    ) -> None:
        self.data_bytes = check_pow2("data_bytes", data_bytes, 4, AXI4_MAX_BUS_BYTES)
        self.row_width = check_int("row_width", row_width, 1, 1024)
        self.dram_base = check_int("dram_base", dram_base, 0, (1 << ADDR_BITS) - 1)
        self.dram_size = check_int("dram_size", dram_size, 1, 1 << ADDR_BITS)
        if self.dram_base + self.dram_size > 1 << ADDR_BITS:
            raise ValueError(
                f"the DRAM window must lie in 32-bit addresses, not base={dram_base!r} "
                f"size={dram_size!r}"
            )
        self.max_outstanding = check_int("max_outstanding", max_outstanding, 1, 256)
        self.id_bits = check_int("id_bits", id_bits, 1, 16)

    @property
    def log2_bytes(self) -> int:
        return self.data_bytes.bit_length() - 1

    @property
    def slots(self) -> int:
        """Bus beats one SRAM row spans (its last one possibly partial)."""
        return -(-self.row_width // self.data_bytes)

    def axi(self) -> wiring.Signature:
        return axi4_signature(addr_bits=ADDR_BITS, data_bytes=self.data_bytes, id_bits=self.id_bits)


class _BurstPlanner(wiring.Component):
    """Check commands and cut them into bursts, one burst per cycle.

    ``cmd`` is registered (the *check* register), checked combinationally from there and
    loaded into the generator in the next cycle; while the generator issues the final burst of
    a command it loads the next command, so consecutive commands leave no idle cycle. A rejected
    command becomes one ``burst`` beat with ``reject`` set (issued once the previous command's
    bursts are all out). ``burst`` is valid from registers only, its payload is combinational
    from registers (the 4 KB / 256-beat / row-end minimum) and stable until accepted.
    """

    def __init__(self, p: DmaParams) -> None:
        self._p = p
        super().__init__(
            {
                "cmd": In(stream.Signature(dma_command_layout())),
                "burst": Out(stream.Signature(_burst_layout(p.data_bytes))),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        p = self._p
        w, lw = p.data_bytes, p.log2_bytes

        # ---- check register ----
        c = Signal(dma_command_layout())
        c_valid = Signal()
        align = Signal()
        window = Signal()
        rows_m1 = Mux(c.rows == 0, 0, c.rows - 1)
        # One past the last byte, wide enough never to wrap: address + rows * stride + bytes.
        end = Signal(max(len(c.dram_addr), len(c.rows) + len(c.stride), len(c.row_bytes)) + 2)
        m.d.comb += [
            align.eq(
                (c.dram_addr[:lw] != 0)
                | (c.stride[:lw] != 0)
                | (c.row_bytes == 0)
                | (c.row_bytes > p.row_width)
                | (c.rows == 0)
            ),
            end.eq(c.dram_addr + rows_m1 * c.stride + c.row_bytes),
            window.eq((c.dram_addr < p.dram_base) | (end > p.dram_base + p.dram_size)),
        ]
        c_err = align | window

        # ---- generator: the current burst of the current command ----
        g_active = Signal()
        g_addr = Signal(ADDR_BITS)  # this burst's address
        g_row_addr = Signal(ADDR_BITS)  # start of this row
        g_left = Signal.like(c.row_bytes)  # bytes of this row not yet covered by a burst
        g_rows = Signal.like(c.rows)  # rows left including this one
        g_stride = Signal.like(c.stride)
        g_row_bytes = Signal.like(c.row_bytes)

        beats_row = Signal(len(c.row_bytes) + 1 - lw)  # ceil(g_left / W): beats to finish the row
        to_page = Signal(range(PAGE_BYTES // w + 1))  # beats to the next 4 KB boundary
        cap = Signal(range(PAGE_BYTES // w + 1))
        row_end = Signal()
        beats = Signal(range(MAX_BEATS + 1))
        m.d.comb += [
            beats_row.eq((g_left + (w - 1)) >> lw),
            to_page.eq((PAGE_BYTES - g_addr[:12]) >> lw),
            cap.eq(Mux(to_page > MAX_BEATS, MAX_BEATS, to_page)),
            row_end.eq(beats_row <= cap),
            beats.eq(Mux(row_end, beats_row, cap)),
        ]
        cmd_end = row_end & (g_rows == 1)

        out = self.burst.payload
        with m.If(g_active):
            m.d.comb += [
                out.addr.eq(g_addr),
                out.len.eq(beats - 1),
                out.row_end.eq(row_end),
                out.cmd_end.eq(cmd_end),
                out.tail.eq(g_left - 1),  # truncated to log2(W) bits: (row bytes - 1) mod W
            ]
        with m.Else():
            m.d.comb += [
                out.reject.eq(1),
                out.cmd_end.eq(1),
                out.error.align.eq(align),
                out.error.window.eq(window),
                out.rows.eq(c.rows),
            ]
        m.d.comb += self.burst.valid.eq(g_active | (c_valid & c_err))
        fire = self.burst.valid & self.burst.ready

        load = c_valid & ~c_err & (~g_active | (fire & cmd_end))
        take = load | (fire & ~g_active)  # the check register empties
        m.d.comb += self.cmd.ready.eq(~c_valid | take)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [c.eq(self.cmd.payload), c_valid.eq(1)]
        with m.Elif(take):
            m.d.sync += c_valid.eq(0)

        with m.If(load):
            m.d.sync += [
                g_active.eq(1),
                g_addr.eq(c.dram_addr),
                g_row_addr.eq(c.dram_addr),
                g_left.eq(c.row_bytes),
                g_rows.eq(c.rows),
                g_stride.eq(c.stride),
                g_row_bytes.eq(c.row_bytes),
            ]
        with m.Elif(fire & g_active):
            with m.If(cmd_end):
                m.d.sync += g_active.eq(0)
            with m.Elif(row_end):
                next_row = g_row_addr + g_stride
                m.d.sync += [
                    g_addr.eq(next_row),
                    g_row_addr.eq(next_row),
                    g_left.eq(g_row_bytes),
                    g_rows.eq(g_rows - 1),
                ]
            with m.Else():  # a 4 KB boundary or the 256-beat limit splits the row here
                m.d.sync += [
                    g_addr.eq(g_addr + (beats << lw)),
                    g_left.eq(g_left - (beats << lw)),
                ]

        m.d.comb += self.busy.eq(c_valid | g_active)
        return m


def _tie_off_write(m: Module, axi: object) -> None:
    m.d.comb += [axi.awvalid.eq(0), axi.wvalid.eq(0), axi.bready.eq(0)]


def _drive_addr(m: Module, p: DmaParams, prefix: str, axi: object, burst: data.View) -> None:
    """Drive AR or AW from the planner's burst (constant fields here, valid by the caller)."""
    m.d.comb += [
        getattr(axi, f"{prefix}addr").eq(burst.addr),
        getattr(axi, f"{prefix}len").eq(burst.len),
        getattr(axi, f"{prefix}size").eq(p.log2_bytes),
        getattr(axi, f"{prefix}burst").eq(BURST_INCR),
        getattr(axi, f"{prefix}id").eq(0),
        getattr(axi, f"{prefix}cache").eq(CACHE_NORMAL),
        getattr(axi, f"{prefix}prot").eq(PROT_DATA),
    ]


class _DmaEngine(wiring.Component):
    """What the reader and the writer share: parameters, members and the burst planner.

    Parameters
    ----------
    data_bytes : int
        AXI data width W in bytes, a power of two from 4 to 256.
    row_width : int
        SRAM row width R in bytes, 1 to 1024 (need not relate to W).
    dram_base, dram_size : int
        The DRAM window the engine may touch; any command reaching outside is rejected.
    max_outstanding : int
        Bursts in flight (address issued, data or response not yet complete), 1 to 256.
    id_bits : int
        Width of the AXI ID signals (the engine always uses ID 0).

    Members
    -------
    cmd : In(stream(dma_command_layout()))
        Commands, accepted one per cycle while the planner has room.
    row : stream of SRAM rows, out of the reader and into the writer
    done : Out(stream(dma_error_layout()))
        Exactly one beat per command, after its last row or response (all-zero: success).
    axi : Out(axi4_signature(data_bytes=W, id_bits=id_bits))
        The reader uses AR and R, the writer AW, W and B; the other half is tied idle (join
        them with :class:`~cdm_qta.hw.axi.AxiJoin`).
    busy : Out(1)
        A command is accepted and its ``done`` beat not yet taken.
    beat : Out(1)
        Combinational strobe: a data beat (R or W) transfers in this cycle.
    beat_bytes : Out(range(W + 1))
        Row bytes carried by that beat (W, or fewer for a row's final beat); 0 without ``beat``.

    Raises
    ------
    ValueError
        If a parameter is out of range (the message names the value).
    """

    def __init__(
        self,
        row: Callable[[int], wiring.Member],
        *,
        data_bytes: int,
        row_width: int,
        dram_base: int = 0,
        dram_size: int = 1 << ADDR_BITS,
        max_outstanding: int = 8,
        id_bits: int = 1,
    ) -> None:
        self._p = DmaParams(
            data_bytes=data_bytes,
            row_width=row_width,
            dram_base=dram_base,
            dram_size=dram_size,
            max_outstanding=max_outstanding,
            id_bits=id_bits,
        )
        super().__init__(
            {
                "cmd": In(stream.Signature(dma_command_layout())),
                "row": row(self._p.row_width),
                "done": Out(stream.Signature(dma_error_layout())),
                "axi": Out(self._p.axi()),
                "busy": Out(1),
                "beat": Out(1),
                "beat_bytes": Out(range(self._p.data_bytes + 1)),
            }
        )

    @property
    def params(self) -> DmaParams:
        """The validated constructor parameters."""
        return self._p

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.plan = plan = _BurstPlanner(self._p)
        wiring.connect(m, wiring.flipped(self.cmd), plan.cmd)
        self._data_side(m, plan)
        return m

    def _data_side(self, m: Module, plan: _BurstPlanner) -> None:
        """Issue the planner's bursts on the bus and move their data (reader or writer)."""
        raise NotImplementedError


class DmaReader(_DmaEngine):
    """Read 2-D strided transfers from DRAM into a stream of SRAM rows (AXI4 read master).

    Bursts go out on AR as described in :mod:`cdm_qta.hw.dma`; R beats of a row are gathered
    into an assembly register and the row leaves as one ``row`` beat in the cycle after its
    final R beat. Bytes at and above ``row_bytes`` of a row are zero (so a tile narrower than
    the SRAM row arrives zero-padded). Back-pressure on ``row`` holds ``rready`` low for the
    final beat of the next row (earlier beats keep flowing into the assembly register), so a
    slow consumer stalls the DRAM rather than losing data.

    Timing: with a DRAM that never stalls, rows of at most ``data_bytes`` bytes leave at one row
    per cycle, longer rows at one R beat per cycle; the ``done`` beat of a command becomes
    valid in the cycle after its last row was accepted. A rejected command produces only its
    ``done`` beat, after the previous command's ``done``.

    Parameters, members and errors are those of the shared base (see ``_DmaEngine``), with
    ``row : Out(stream(dma_read_row_layout(row_width)))``: one beat per DRAM row, ``last`` on
    the command's final row.
    """

    def __init__(self, **params: int) -> None:
        super().__init__(lambda width: Out(stream.Signature(dma_read_row_layout(width))), **params)

    def _data_side(self, m: Module, plan: _BurstPlanner) -> None:
        p = self._p
        w, r_bytes = p.data_bytes, p.row_width
        axi = self.axi

        desc_layout = data.StructLayout(
            {
                "len": 8,
                "row_end": 1,
                "cmd_end": 1,
                "tail": p.log2_bytes,
                "reject": 1,
                "error": dma_error_layout(),
            }
        )
        # Bursts in flight: pushed on the AR handshake (or for a rejected command when the
        # planner hands it over), popped with the burst's final R beat.
        m.submodules.inflight = inflight = SyncFIFO(width=desc_layout.size, depth=p.max_outstanding)
        # Finished commands' outcomes: two entries, so a consumer that takes each `done` in the
        # cycle it appears never stalls a following single-row command.
        m.submodules.done_q = done_q = SyncFIFO(width=dma_error_layout().size, depth=2)

        # ---- AR: straight from the planner; valid only while the FIFO has room ----
        burst = plan.burst.payload
        _drive_addr(m, p, "ar", axi, burst)
        _tie_off_write(m, axi)
        push = Signal(desc_layout)
        m.d.comb += [
            axi.arvalid.eq(plan.burst.valid & ~burst.reject & inflight.w_rdy),
            plan.burst.ready.eq(inflight.w_rdy & (burst.reject | axi.arready)),
            push.len.eq(burst.len),
            push.row_end.eq(burst.row_end),
            push.cmd_end.eq(burst.cmd_end),
            push.tail.eq(burst.tail),
            push.reject.eq(burst.reject),
            push.error.eq(burst.error),
            inflight.w_data.eq(push),
            inflight.w_en.eq(plan.burst.valid & plan.burst.ready),
        ]

        # ---- R: gather beats into rows ----
        d = desc_layout(inflight.r_data)
        beat_in_burst = Signal(8)
        slot = Signal(range(p.slots))  # beat index within the row
        asm = Signal(data.ArrayLayout(unsigned(8), r_bytes))  # earlier beats of this row
        out = Signal(dma_read_row_layout(r_bytes))
        out_valid = Signal()
        out_bus = Signal()  # bus error seen in out's command (meaningful with out.last)
        bus_acc = Signal()  # bus error seen so far in the command being received

        # The final row may leave only if its `done` has a place to go: done_q.w_rdy is a
        # register-derived level, so `row.valid` never depends on a `ready`.
        m.d.comb += self.row.valid.eq(out_valid & ~(out.last & ~done_q.w_rdy))
        m.d.comb += self.row.payload.eq(out)
        row_take = self.row.valid & self.row.ready
        out_free = ~out_valid | row_take

        burst_last = beat_in_burst == d.len
        row_last = burst_last & d.row_end
        m.d.comb += axi.rready.eq(inflight.r_rdy & ~d.reject & (~row_last | out_free))
        r_fire = axi.rvalid & axi.rready
        bad = axi.rresp != 0

        rbyte = [axi.rdata[8 * k : 8 * k + 8] for k in range(w)]
        merged = Signal(data.ArrayLayout(unsigned(8), r_bytes))
        for i in range(r_bytes):
            s, k = divmod(i, w)
            here = slot == s
            live = (slot > s) | (here & (k <= d.tail))
            m.d.comb += merged[i].eq(Mux(live, Mux(here, rbyte[k], asm[i]), 0))

        with m.If(row_take):
            m.d.sync += out_valid.eq(0)
        with m.If(r_fire):
            m.d.sync += beat_in_burst.eq(Mux(burst_last, 0, beat_in_burst + 1))
            with m.If(row_last):
                m.d.sync += [
                    out.data.eq(merged),
                    out.last.eq(d.cmd_end),
                    out_valid.eq(1),
                    out_bus.eq(bus_acc | bad),
                    bus_acc.eq(Mux(d.cmd_end, 0, bus_acc | bad)),
                    slot.eq(0),
                ]
            with m.Else():
                with m.Switch(slot):
                    for s in range(p.slots):
                        with m.Case(s):
                            for i in range(s * w, min(s * w + w, r_bytes)):
                                m.d.sync += asm[i].eq(rbyte[i - s * w])
                m.d.sync += [slot.eq(slot + 1), bus_acc.eq(bus_acc | bad)]

        # A rejected command: its done goes out once the previous command's last row has left
        # (and with it the previous done), keeping done beats in command order.
        reject_pop = inflight.r_rdy & d.reject & ~out_valid & done_q.w_rdy
        m.d.comb += inflight.r_en.eq((r_fire & burst_last) | reject_pop)

        done_in = Signal(dma_error_layout())
        with m.If(reject_pop):
            m.d.comb += [done_in.align.eq(d.error.align), done_in.window.eq(d.error.window)]
        with m.Else():
            m.d.comb += done_in.bus.eq(out_bus)
        m.d.comb += [
            done_q.w_data.eq(done_in),
            done_q.w_en.eq(reject_pop | (row_take & out.last)),
            self.done.valid.eq(done_q.r_rdy),
            self.done.payload.eq(done_q.r_data),
            done_q.r_en.eq(self.done.ready),
        ]

        m.d.comb += [
            self.beat.eq(r_fire),
            self.beat_bytes.eq(Mux(r_fire, Mux(row_last, d.tail + 1, w), 0)),
            self.busy.eq(plan.busy | inflight.r_rdy | out_valid | done_q.r_rdy),
        ]


class DmaWriter(_DmaEngine):
    """Write a stream of SRAM rows to 2-D strided places in DRAM (AXI4 write master).

    AW runs ahead of the data (up to ``max_outstanding`` bursts whose B response has not come
    back). The W channel is a register stage loaded from the current ``row`` beat, one W beat
    per cycle; ``row`` is accepted with the row's final W beat, so a row is read in place and
    never copied. WSTRB covers exactly the ``row_bytes`` bytes of a row: bytes at and above
    ``row_bytes`` are never written. A rejected command still consumes its ``rows`` row beats
    (the engine always supplies them) and drops them, one per cycle.

    Timing: with a DRAM that never stalls, rows of at most ``data_bytes`` bytes are taken at one
    row per cycle, longer rows at one W beat per cycle. ``done`` becomes valid in the cycle
    after the command's last B response.

    Parameters, members and errors are those of the shared base (see ``_DmaEngine``), with
    ``row : In(stream(dma_write_row_layout(row_width)))``: exactly ``rows`` row beats per
    command, in command order; ``beat_bytes`` counts the WSTRB bits of a W beat.
    """

    def __init__(self, **params: int) -> None:
        super().__init__(lambda width: In(stream.Signature(dma_write_row_layout(width))), **params)

    def _data_side(self, m: Module, plan: _BurstPlanner) -> None:
        p = self._p
        w, r_bytes = p.data_bytes, p.row_width
        axi = self.axi

        w_layout = data.StructLayout(
            {
                "len": 8,
                "row_end": 1,
                "tail": p.log2_bytes,
                "reject": 1,
                "rows": dma_command_layout()["rows"].shape,
            }
        )
        b_layout = data.StructLayout({"cmd_end": 1, "reject": 1, "error": dma_error_layout()})
        # wq: bursts whose W data is still to be sent (popped with the burst's last W beat);
        # bq: bursts whose B response is still to come. Both are pushed on the AW handshake,
        # so bq's depth bounds the bursts in flight.
        m.submodules.wq = wq = SyncFIFO(width=w_layout.size, depth=p.max_outstanding)
        m.submodules.bq = bq = SyncFIFO(width=b_layout.size, depth=p.max_outstanding)
        m.submodules.done_q = done_q = SyncFIFO(width=dma_error_layout().size, depth=2)

        # ---- AW ----
        burst = plan.burst.payload
        room = wq.w_rdy & bq.w_rdy
        _drive_addr(m, p, "aw", axi, burst)
        m.d.comb += [axi.arvalid.eq(0), axi.rready.eq(0)]
        w_push = Signal(w_layout)
        b_push = Signal(b_layout)
        fire = plan.burst.valid & plan.burst.ready
        m.d.comb += [
            axi.awvalid.eq(plan.burst.valid & ~burst.reject & room),
            plan.burst.ready.eq(room & (burst.reject | axi.awready)),
            w_push.len.eq(burst.len),
            w_push.row_end.eq(burst.row_end),
            w_push.tail.eq(burst.tail),
            w_push.reject.eq(burst.reject),
            w_push.rows.eq(burst.rows),
            b_push.cmd_end.eq(burst.cmd_end),
            b_push.reject.eq(burst.reject),
            b_push.error.eq(burst.error),
            wq.w_data.eq(w_push),
            bq.w_data.eq(b_push),
            wq.w_en.eq(fire),
            bq.w_en.eq(fire),
        ]

        # ---- W: one register stage, loaded from the current row's slot ----
        d = w_layout(wq.r_data)
        beat_in_burst = Signal(8)
        slot = Signal(range(p.slots))
        w_valid = Signal()
        w_data = Signal(8 * w)
        w_strb = Signal(w)
        w_last = Signal()
        w_count = Signal(range(w + 1))
        m.d.comb += [
            axi.wvalid.eq(w_valid),
            axi.wdata.eq(w_data),
            axi.wstrb.eq(w_strb),
            axi.wlast.eq(w_last),
        ]
        w_fire = w_valid & axi.wready
        w_free = ~w_valid | axi.wready
        burst_last = beat_in_burst == d.len
        row_last = burst_last & d.row_end
        load = wq.r_rdy & ~d.reject & self.row.valid & w_free

        slot_data = Signal(8 * w)
        with m.Switch(slot):
            for s in range(p.slots):
                with m.Case(s):
                    lanes = [
                        self.row.payload.data[i] for i in range(s * w, min(s * w + w, r_bytes))
                    ]
                    m.d.comb += slot_data.eq(Cat(*lanes))  # zero-extended past the row's end
        tail_mask = Cat(*(Const(k) <= d.tail for k in range(w)))

        with m.If(load):
            m.d.sync += [
                w_valid.eq(1),
                w_data.eq(slot_data),
                w_strb.eq(Mux(row_last, tail_mask, (1 << w) - 1)),
                w_count.eq(Mux(row_last, d.tail + 1, w)),
                w_last.eq(burst_last),
                beat_in_burst.eq(Mux(burst_last, 0, beat_in_burst + 1)),
                slot.eq(Mux(row_last, 0, slot + 1)),
            ]
        with m.Elif(w_fire):
            m.d.sync += w_valid.eq(0)

        # Rejected command: drop its rows, then count one finished drop for the B side.
        dropped = Signal.like(d.rows)
        dropping = wq.r_rdy & d.reject
        drop_end = dropping & (dropped == d.rows)
        with m.If(drop_end):
            m.d.sync += dropped.eq(0)
        with m.Elif(dropping & self.row.valid):
            m.d.sync += dropped.eq(dropped + 1)
        m.d.comb += [
            self.row.ready.eq((load & row_last) | (dropping & ~drop_end)),
            wq.r_en.eq((load & burst_last) | drop_end),
        ]

        # ---- B: collect responses; a command is done with its final burst's response ----
        e = b_layout(bq.r_data)
        drops = Signal(range(p.max_outstanding + 1))  # finished drops not yet reported
        bus_acc = Signal()
        m.d.comb += axi.bready.eq(bq.r_rdy & ~e.reject & (~e.cmd_end | done_q.w_rdy))
        b_fire = axi.bvalid & axi.bready
        b_bad = axi.bresp != 0
        reject_pop = bq.r_rdy & e.reject & (drops != 0) & done_q.w_rdy
        m.d.sync += drops.eq(drops + drop_end - reject_pop)
        with m.If(b_fire):
            m.d.sync += bus_acc.eq(Mux(e.cmd_end, 0, bus_acc | b_bad))

        done_in = Signal(dma_error_layout())
        with m.If(reject_pop):
            m.d.comb += [done_in.align.eq(e.error.align), done_in.window.eq(e.error.window)]
        with m.Else():
            m.d.comb += done_in.bus.eq(bus_acc | b_bad)
        m.d.comb += [
            bq.r_en.eq(b_fire | reject_pop),
            done_q.w_data.eq(done_in),
            done_q.w_en.eq(reject_pop | (b_fire & e.cmd_end)),
            self.done.valid.eq(done_q.r_rdy),
            self.done.payload.eq(done_q.r_data),
            done_q.r_en.eq(self.done.ready),
        ]

        m.d.comb += [
            self.beat.eq(w_fire),
            self.beat_bytes.eq(Mux(w_fire, w_count, 0)),
            self.busy.eq(plan.busy | wq.r_rdy | bq.r_rdy | w_valid | done_q.r_rdy),
        ]
