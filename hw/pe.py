"""One processing element: a signed multiplier, one adder and the registers both dataflows need."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .checks import check_int
from .layouts import FLAGS, TOKEN

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """Multiply-accumulate cell that serves both dataflows on the same registers.

    Every input is registered here and forwarded to the neighbour on the next cycle, so an
    operand and its control flags advance one PE per cycle and no control signal reaches more
    than one PE. Only the column bus ``bus`` is shared (by the N PEs of one column); it is driven
    by a register at the top edge.

    * **WS** (``flags.ws``): ``d <= d_in + a * w[flags.sel]``; the partial sum moves one row
      down per cycle. A weight token (``tok.en``) writes ``bus`` into bank ``tok.bank``, so the
      next tile's weights load into one bank while the current tile streams against the other.
    * **OS** (``flags.os``): ``acc <= (0 if flags.sel else acc) + a * bus``; on ``flags.last``
      the finished sum goes into ``d`` instead, which frees ``acc`` for the next tile's first
      step in the very next cycle while the finished tile drains down the ``d`` chain.
    * Otherwise ``d <= d_in``: the ``d`` chain is a shift register that carries OS results to
      the bottom edge behind (never on top of) WS partial sums.

    Arithmetic wraps modulo ``2**acc_bits``. ``LATENCY`` = 1: every output is the register
    written in the cycle the operand is in this PE.

    Parameters
    ----------
    operand_bits, acc_bits : int
        Signed operand and accumulator widths.

    Members
    -------
    a_in, flags_in, tok_in : In
        Operand, flags and weight token from the left neighbour (or the left edge).
    bus : In
        Column bus: the OS right operand, or the weight being loaded (WS).
    d_in : In
        Partial sum / drained result from the PE above (0 for the top row).
    a_out, flags_out, tok_out, d_out : Out
        The registered copies passed to the right and down.
    """

    LATENCY = 1

    def __init__(self, *, operand_bits: int = 8, acc_bits: int = 32) -> None:
        self._operand_bits = check_int("operand_bits", operand_bits, 2, 16)
        self._acc_bits = check_int("acc_bits", acc_bits, 2, 64)
        operand = signed(self._operand_bits)
        acc = signed(self._acc_bits)
        super().__init__(
            {
                "a_in": In(operand),
                "flags_in": In(FLAGS),
                "tok_in": In(TOKEN),
                "bus": In(operand),
                "d_in": In(acc),
                "a_out": Out(operand),
                "flags_out": Out(FLAGS),
                "tok_out": Out(TOKEN),
                "d_out": Out(acc),
            }
        )

    @property
    def operand_bits(self) -> int:
        return self._operand_bits

    @property
    def acc_bits(self) -> int:
        return self._acc_bits

    def elaborate(self, platform: object) -> Module:
        m = Module()
        operand = signed(self._operand_bits)
        acc_shape = signed(self._acc_bits)

        # Data registers need no reset: after reset every flag is clear, so stale data is never
        # used (WS sums start from the top row's zero, OS tiles start with `sel` = first).
        # The weights are the exception: rows above a tile's K keep whatever the bank held and
        # meet zero inputs; in hardware 0 * junk = 0, but a simulator's 0 * X is X.
        a = Signal(operand, reset_less=True)
        w0 = Signal(operand)
        w1 = Signal(operand)
        acc = Signal(acc_shape, reset_less=True)
        d = Signal(acc_shape, reset_less=True)
        flags = Signal(FLAGS)
        tok = Signal(TOKEN)

        m.d.sync += [a.eq(self.a_in), flags.eq(self.flags_in), tok.eq(self.tok_in)]

        with m.If(tok.en & ~tok.bank):
            m.d.sync += w0.eq(self.bus)
        with m.If(tok.en & tok.bank):
            m.d.sync += w1.eq(self.bus)

        # One multiplier and one adder serve both modes: WS adds to the sum from above, OS to
        # its own accumulator (or to zero on the first step of a tile).
        right = Mux(flags.ws, Mux(flags.sel, w1, w0), self.bus)
        product = Signal.like(a * right)
        m.d.comb += product.eq(a * right)
        base = Mux(flags.ws, self.d_in, Mux(flags.sel, 0, acc))
        total = Signal(acc_shape)
        m.d.comb += total.eq(base + product)  # truncation to acc_bits is the wrap-around

        with m.If(flags.ws | (flags.os & flags.last)):
            m.d.sync += d.eq(total)
        with m.Else():
            m.d.sync += d.eq(self.d_in)
        with m.If(flags.os):
            m.d.sync += acc.eq(total)

        m.d.comb += [
            self.a_out.eq(a),
            self.flags_out.eq(flags),
            self.tok_out.eq(tok),
            self.d_out.eq(d),
        ]
        return m
