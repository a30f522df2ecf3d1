"""The N x N grid of processing elements, wired as a systolic array."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ArrayConfig
from .layouts import FLAGS, TOKEN
from .pe import ProcessingElement

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """N x N processing elements: operands move right, partial sums and results move down.

    The grid has no control of its own and no back-pressure: what enters the left edge in a
    cycle reaches column ``c`` ``c`` cycles later, a partial sum leaving row ``r`` enters row
    ``r + 1`` one cycle later, and the edge logic (:class:`~cdm_qta.hw.core.ArrayCore`) is
    responsible for skewing inputs and de-skewing outputs.

    Parameters
    ----------
    cfg : ArrayConfig

    Members
    -------
    a_in, flags_in, tok_in : In, one lane per row
        Left edge: operand, flags and weight token entering column 0 of each row.
    bus : In, one lane per column
        Column buses (registered by the caller).
    d_out : Out, one lane per column
        Bottom edge: the ``d`` register of the last row, one per column.
    corner_flags : Out
        Flags of the bottom-right PE: which output the bottom row produces next cycle.
    """

    def __init__(self, cfg: ArrayConfig) -> None:
        self._cfg = cfg
        n = cfg.n
        operand = signed(cfg.operand_bits)
        super().__init__(
            {
                "a_in": In(data.ArrayLayout(operand, n)),
                "flags_in": In(data.ArrayLayout(FLAGS, n)),
                "tok_in": In(data.ArrayLayout(TOKEN, n)),
                "bus": In(data.ArrayLayout(operand, n)),
                "d_out": Out(data.ArrayLayout(signed(cfg.acc_bits), n)),
                "corner_flags": Out(FLAGS),
            }
        )

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    def elaborate(self, platform: object) -> Module:
        m = Module()
        n = self._cfg.n
        pes = [
            [
                ProcessingElement(operand_bits=self._cfg.operand_bits, acc_bits=self._cfg.acc_bits)
                for _ in range(n)
            ]
            for _ in range(n)
        ]
        for r in range(n):
            for c in range(n):
                pe = pes[r][c]
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += pe.bus.eq(self.bus[c])
                if c == 0:
                    m.d.comb += [
                        pe.a_in.eq(self.a_in[r]),
                        pe.flags_in.eq(self.flags_in[r]),
                        pe.tok_in.eq(self.tok_in[r]),
                    ]
                else:
                    left = pes[r][c - 1]
                    m.d.comb += [
                        pe.a_in.eq(left.a_out),
                        pe.flags_in.eq(left.flags_out),
                        pe.tok_in.eq(left.tok_out),
                    ]
                # The top row adds to zero: `d_in` is left undriven and keeps its init of 0.
                if r > 0:
                    m.d.comb += pe.d_in.eq(pes[r - 1][c].d_out)
        for c in range(n):
            m.d.comb += self.d_out[c].eq(pes[n - 1][c].d_out)
        m.d.comb += self.corner_flags.eq(pes[n - 1][n - 1].flags_out)
        return m
