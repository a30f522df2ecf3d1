"""AXI4 and AXI4-Lite interface signatures, and the join that gives the DMA one AXI4 port.

Member names are the AXI specification's signal names in lower case without the channel
separator (``araddr``, ``rvalid``, ...), so that a top-level member ``m_axi`` becomes the
Verilog ports ``m_axi__araddr`` etc., which cocotbext-axi finds with
``AxiBus.from_prefix(dut, "m_axi_")`` (it joins prefix and name with another ``_``).

Only the signals the DMA engines need are present: no ``*lock``, ``*qos``, ``*region``,
``*user``; ``*cache``/``*prot`` are included with fixed values so a real interconnect sees
"normal, non-secure, data, modifiable" accesses rather than undriven ports.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .checks import check_int, check_pow2
from .config import AXI4_MAX_BUS_BYTES

__all__ = [
    "BURST_INCR",
    "CACHE_NORMAL",
    "READ_MEMBERS",
    "WRITE_MEMBERS",
    "AxiJoin",
    "AxiReadArbiter",
    "AxiResp",
    "axi4_lite_signature",
    "axi4_signature",
]


class AxiResp:
    """RRESP/BRESP codes (plain ints: Amaranth compares them with 2-bit signals)."""

    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


#: AXI4 burst type INCR (the only one the DMA issues).
BURST_INCR = 1
#: ``*cache`` = 0b0011 (normal non-cacheable bufferable, modifiable): what Xilinx and ARM
#: recommend for DMA masters; a DRAM controller may merge or split such bursts.
CACHE_NORMAL = 0b0011


#: Members of the read half (AR and R channels) of :func:`axi4_signature`.
READ_MEMBERS = (
    "araddr arlen arsize arburst arid arcache arprot arvalid arready "
    "rdata rresp rlast rid rvalid rready"
).split()
#: Members of the write half (AW, W and B channels) of :func:`axi4_signature`.
WRITE_MEMBERS = (
    "awaddr awlen awsize awburst awid awcache awprot awvalid awready "
    "wdata wstrb wlast wvalid wready bresp bid bvalid bready"
).split()


def axi4_signature(*, addr_bits: int = 32, data_bytes: int, id_bits: int = 1) -> wiring.Signature:
    """An AXI4 **master** interface (flip it, or use it as ``In(...)``, for a slave).

    Parameters
    ----------
    addr_bits : int
        Byte address width (12..64).
    data_bytes : int
        Data bus width in bytes, a power of two from 1 to 128 (``AXI4_MAX_BUS_BYTES``: AXI4's
        widest bus, 1024 bits, the largest beat ``AxSIZE``'s three bits can name).
    id_bits : int
        Width of ``arid``/``awid``/``rid``/``bid`` (1..16); the DMA uses a single ID.

    Raises
    ------
    ValueError
        If a width is out of range.
    """
    addr_bits = check_int("addr_bits", addr_bits, 12, 64)
    data_bytes = check_pow2("data_bytes", data_bytes, 1, AXI4_MAX_BUS_BYTES)
    id_bits = check_int("id_bits", id_bits, 1, 16)
    return wiring.Signature(
        {
            # read address
            "araddr": Out(addr_bits),
            "arlen": Out(8),
            "arsize": Out(3),
            "arburst": Out(2),
            "arid": Out(id_bits),
            "arcache": Out(4),
            "arprot": Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            # read data
            "rdata": In(8 * data_bytes),
            "rresp": In(2),
            "rlast": In(1),
            "rid": In(id_bits),
            "rvalid": In(1),
            "rready": Out(1),
            # write address
            "awaddr": Out(addr_bits),
            "awlen": Out(8),
            "awsize": Out(3),
            "awburst": Out(2),
            "awid": Out(id_bits),
            "awcache": Out(4),
            "awprot": Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            # write data
            "wdata": Out(8 * data_bytes),
            "wstrb": Out(data_bytes),
            "wlast": Out(1),
            "wvalid": Out(1),
            "wready": In(1),
            # write response
            "bresp": In(2),
            "bid": In(id_bits),
            "bvalid": In(1),
            "bready": Out(1),
        }
    )


def axi4_lite_signature(*, addr_bits: int, data_bytes: int = 4) -> wiring.Signature:
    """An AXI4-Lite **master** interface; a register slave takes it as ``In(...)``.

    Parameters
    ----------
    addr_bits : int
        Byte address width (3..64).
    data_bytes : int
        4 or 8 (the only AXI4-Lite data widths).

    Raises
    ------
    ValueError
        If a width is out of range.
    """
    addr_bits = check_int("addr_bits", addr_bits, 3, 64)
    data_bytes = check_int("data_bytes", data_bytes, 4, 8)
    if data_bytes not in (4, 8):
        raise ValueError(f"data_bytes of AXI4-Lite must be 4 or 8, not {data_bytes!r}")
    return wiring.Signature(
        {
            "awaddr": Out(addr_bits),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata": Out(8 * data_bytes),
            "wstrb": Out(data_bytes),
            "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2),
            "bvalid": In(1),
            "bready": Out(1),
            "araddr": Out(addr_bits),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata": In(8 * data_bytes),
            "rresp": In(2),
            "rvalid": In(1),
            "rready": Out(1),
        }
    )


class AxiJoin(wiring.Component):
    """Join the read half of one AXI4 master and the write half of another into one port.

    AXI4's read and write channels are independent, so a reader and a writer share one port
    without arbitration: this is wiring only (combinational, zero latency). The unused halves
    of ``read`` (AW/W/B) and ``write`` (AR/R) are ignored; their inputs are driven idle
    (``awready = wready = bvalid = 0`` on ``read``, ``arready = rvalid = 0`` on ``write``).

    Parameters
    ----------
    addr_bits, data_bytes, id_bits : int
        As for :func:`axi4_signature`; all three ports have this signature.

    Members
    -------
    read : In(axi4_signature)
        The read master (e.g. ``DmaReader.axi``); only AR and R are forwarded.
    write : In(axi4_signature)
        The write master (e.g. ``DmaWriter.axi``); only AW, W and B are forwarded.
    bus : Out(axi4_signature)
        The joined master, to the top-level ``m_axi`` port or an interconnect.
    """

    def __init__(self, *, addr_bits: int = 32, data_bytes: int, id_bits: int = 1) -> None:
        sig = axi4_signature(addr_bits=addr_bits, data_bytes=data_bytes, id_bits=id_bits)
        self._sig = sig
        super().__init__({"read": In(sig), "write": In(sig), "bus": Out(sig)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        for half, names in ((self.read, READ_MEMBERS), (self.write, WRITE_MEMBERS)):
            for name in names:
                src, dst = getattr(half, name), getattr(self.bus, name)
                if self._sig.members[name].flow == Out:  # a master output: toward the bus
                    m.d.comb += dst.eq(src)
                else:
                    m.d.comb += src.eq(dst)
        return m


class AxiReadArbiter(wiring.Component):
    """Share one AXI4 read channel among several read masters, each with its own ID.

    AR: a master is granted when the bus's AR is free and keeps the grant until its request is
    accepted (AXI forbids changing a presented request); ties go round-robin. The arbiter
    drives ``arid`` with the master's ID from ``ids`` (whatever the master drives), so R beats
    route back by ``rid`` and each master sees only its own, in order, as AXI guarantees per
    ID. The write halves of the masters are not used (their inputs are driven idle).

    Parameters
    ----------
    ids : sequence of int
        The AXI ID of each master; distinct, representable in ``id_bits``.
    addr_bits, data_bytes, id_bits : int
        As for :func:`axi4_signature`; all ports have this signature.

    Members
    -------
    m0, m1, ... : In(axi4_signature)
        The read masters (only AR and R are used).
    bus : Out(axi4_signature)
        The shared read master (AW/W are driven idle; join with a writer via :class:`AxiJoin`).
    """

    def __init__(
        self, *, ids: Sequence[int], addr_bits: int = 32, data_bytes: int, id_bits: int = 1
    ) -> None:
        self._ids = tuple(check_int("id", i, 0, (1 << id_bits) - 1) for i in ids)
        if len(set(self._ids)) != len(self._ids) or len(self._ids) < 1:
            raise ValueError(f"ids must be distinct and at least one, not {ids!r}")
        sig = axi4_signature(addr_bits=addr_bits, data_bytes=data_bytes, id_bits=id_bits)
        members = {f"m{i}": In(sig) for i in range(len(self._ids))}
        super().__init__({**members, "bus": Out(sig)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        n = len(self._ids)
        masters = [getattr(self, f"m{i}") for i in range(n)]
        bus = self.bus
        grant = Signal(range(n))  # the master being served while its request waits
        locked = Signal()  # bus.arvalid was high and not accepted: keep the grant
        last = Signal(range(n))  # the master served last, for round-robin
        sel = Signal(range(n))
        # Round-robin: the first valid master after the last one served.
        pick = Signal(range(n))
        for k in reversed(range(n)):
            for i in range(n):
                with m.If((last == i) & masters[(i + 1 + k) % n].arvalid):
                    m.d.comb += pick.eq((i + 1 + k) % n)
        m.d.comb += sel.eq(Mux(locked, grant, pick))
        ar_fields = ("araddr", "arlen", "arsize", "arburst", "arcache", "arprot")
        with m.Switch(sel):
            for i, mst in enumerate(masters):
                with m.Case(i):
                    m.d.comb += [getattr(bus, f).eq(getattr(mst, f)) for f in ar_fields]
                    m.d.comb += [
                        bus.arid.eq(self._ids[i]),
                        bus.arvalid.eq(mst.arvalid),
                        mst.arready.eq(bus.arready),
                    ]
        fire = bus.arvalid & bus.arready
        m.d.sync += [locked.eq(bus.arvalid & ~bus.arready), grant.eq(sel)]
        with m.If(fire):
            m.d.sync += last.eq(sel)
        for i, mst in enumerate(masters):
            mine = bus.rid == self._ids[i]
            m.d.comb += [
                mst.rdata.eq(bus.rdata),
                mst.rresp.eq(bus.rresp),
                mst.rlast.eq(bus.rlast),
                mst.rid.eq(bus.rid),
                mst.rvalid.eq(bus.rvalid & mine),
                mst.awready.eq(0),
                mst.wready.eq(0),
                mst.bvalid.eq(0),
            ]
            with m.If(mine):
                m.d.comb += bus.rready.eq(mst.rready)
        m.d.comb += [bus.awvalid.eq(0), bus.wvalid.eq(0), bus.bready.eq(0)]
        return m
