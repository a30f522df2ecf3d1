"""AXI4-Lite slave that turns host register accesses into a simple register bus.

The register file behind it (the controller's) sees one access at a time: a write strobe
``reg_we`` with address, data and byte strobes, or a read strobe ``reg_re`` whose data it
returns registered, in the next cycle. Everything AXI4-Lite allows is handled here: AW before
W, W before AW, both together, and a host that holds BREADY or RREADY low.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AxiResp, axi4_lite_signature
from .checks import check_int

__all__ = ["AxiLiteRegisterPort"]


class AxiLiteRegisterPort(wiring.Component):
    """32-bit AXI4-Lite slave in front of a register file.

    AW, W and AR each have a one-entry holding register (``*ready`` is high while it is empty,
    so it never depends on the matching ``*valid``). Once both AW and W are held and no B
    response is pending, the write is issued as a one-cycle ``reg_we``; the B response follows
    in the next cycle. Once AR is held and no R response is pending, ``reg_re`` pulses for one
    cycle; ``reg_rdata`` (and ``reg_error``) are sampled in the next cycle and R becomes valid
    in the cycle after. When a read and a write are ready in the same cycle they alternate, so
    neither starves. All ``reg_*`` outputs are combinational from registers.

    Latency (all channels always ready): a write whose AW and W arrive in cycle ``t`` strobes
    ``reg_we`` in ``t + 1`` and has BVALID in ``t + 2``; a read with AR in ``t`` strobes
    ``reg_re`` in ``t + 1`` and has RVALID in ``t + 3``.

    Parameters
    ----------
    addr_bits : int
        Byte address width of the AXI4-Lite port (3..32). The low two address bits select a
        byte within the 32-bit word and are dropped.

    Members
    -------
    axil : In(axi4_lite_signature(addr_bits=addr_bits))
        The slave port.
    reg_addr : Out(addr_bits - 2)
        Word address of the access being strobed (valid with ``reg_we`` or ``reg_re``).
    reg_wdata : Out(32)
    reg_wstrb : Out(4)
        Data and byte enables of the write (valid with ``reg_we``).
    reg_we : Out(1)
        One-cycle write strobe.
    reg_re : Out(1)
        One-cycle read strobe; the register file drives ``reg_rdata`` in the next cycle.
    reg_rdata : In(32)
        Read data, sampled the cycle after ``reg_re``.
    reg_error : In(1)
        Answer SLVERR instead of OKAY: sampled together with ``reg_we`` for a write, and with
        ``reg_rdata`` (the cycle after ``reg_re``) for a read. Tie to 0 if unused.

    Raises
    ------
    ValueError
        If ``addr_bits`` is out of range.
    """

    def __init__(self, *, addr_bits: int) -> None:
        self._addr_bits = check_int("addr_bits", addr_bits, 3, 32)
        super().__init__(
            {
                "axil": In(axi4_lite_signature(addr_bits=self._addr_bits)),
                "reg_addr": Out(self._addr_bits - 2),
                "reg_wdata": Out(32),
                "reg_wstrb": Out(4),
                "reg_we": Out(1),
                "reg_re": Out(1),
                "reg_rdata": In(32),
                "reg_error": In(1),
            }
        )

    @property
    def addr_bits(self) -> int:
        return self._addr_bits

    def elaborate(self, platform: object) -> Module:
        m = Module()
        bus = self.axil

        aw_full = Signal()
        aw_addr = Signal(self._addr_bits)
        w_full = Signal()
        w_data = Signal(32)
        w_strb = Signal(4)
        ar_full = Signal()
        ar_addr = Signal(self._addr_bits)
        b_valid = Signal()
        b_resp = Signal(2)
        r_pending = Signal()  # reg_re was strobed last cycle: reg_rdata is valid now
        r_valid = Signal()
        r_data = Signal(32)
        r_resp = Signal(2)
        last_was_write = Signal()

        m.d.comb += [
            bus.awready.eq(~aw_full),
            bus.wready.eq(~w_full),
            bus.arready.eq(~ar_full),
            bus.bvalid.eq(b_valid),
            bus.bresp.eq(b_resp),
            bus.rvalid.eq(r_valid),
            bus.rdata.eq(r_data),
            bus.rresp.eq(r_resp),
        ]
        with m.If(bus.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.arvalid & ~ar_full):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(bus.araddr)]

        # One access per cycle on the register bus; B/R must be free so the response can be
        # held until the host takes it.
        can_write = aw_full & w_full & ~b_valid
        can_read = ar_full & ~r_pending & ~r_valid
        do_write = can_write & ~(can_read & last_was_write)
        do_read = can_read & ~do_write
        m.d.comb += [
            self.reg_we.eq(do_write),
            self.reg_re.eq(do_read),
            self.reg_addr.eq(Mux(do_read, ar_addr, aw_addr)[2:]),
            self.reg_wdata.eq(w_data),
            self.reg_wstrb.eq(w_strb),
        ]
        error = Mux(self.reg_error, AxiResp.SLVERR, AxiResp.OKAY)
        with m.If(do_write):
            m.d.sync += [
                aw_full.eq(0),
                w_full.eq(0),
                b_valid.eq(1),
                b_resp.eq(error),
                last_was_write.eq(1),
            ]
        with m.Elif(bus.bready):
            m.d.sync += b_valid.eq(0)
        with m.If(do_read):
            m.d.sync += [ar_full.eq(0), r_pending.eq(1), last_was_write.eq(0)]
        with m.If(r_pending):
            m.d.sync += [
                r_pending.eq(0),
                r_valid.eq(1),
                r_data.eq(self.reg_rdata),
                r_resp.eq(error),
            ]
        with m.Elif(bus.rready):
            m.d.sync += r_valid.eq(0)
        return m
