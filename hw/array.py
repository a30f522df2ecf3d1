"""The N x N grid of processing elements, wired as a systolic array."""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ArrayConfig
from .layouts import FLAGS, TOKEN
from .pe import ProcessingElement

__all__ = ["SystolicArray", "pe_module_name", "pe_verilog"]


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
        cfg = self._cfg
        n = cfg.n
        operand = signed(cfg.operand_bits)
        acc = signed(cfg.acc_bits)
        name = pe_module_name(cfg)

        def grid(shape: object, what: str) -> list[list[Signal]]:
            return [[Signal(shape, name=f"{what}_{r}_{c}") for c in range(n)] for r in range(n)]

        a, flags, tok, d = (
            grid(operand, "a"),
            grid(FLAGS, "flags"),
            grid(TOKEN, "tok"),
            grid(acc, "d"),
        )
        zero = Signal(acc, name="d_top")  # the top row adds to zero
        # Every PE is an instance of ONE Verilog module (emitted by `pe_verilog`), not N*N
        # copies: simulators then share the PE's code across instances (an N=64 array fits
        # the instruction cache) and synthesis maps the PE once.
        for r in range(n):
            for c in range(n):
                left = (
                    (self.a_in[r], self.flags_in[r], self.tok_in[r])
                    if c == 0
                    else (
                        a[r][c - 1],
                        flags[r][c - 1],
                        tok[r][c - 1],
                    )
                )
                m.submodules[f"pe_{r}_{c}"] = Instance(
                    name,
                    i_clk=ClockSignal(),
                    i_rst=ResetSignal(),
                    i_a_in=Value.cast(left[0]),
                    i_flags_in=Value.cast(left[1]),
                    i_tok_in=Value.cast(left[2]),
                    i_bus=Value.cast(self.bus[c]),
                    i_d_in=d[r - 1][c] if r > 0 else zero,
                    o_a_out=a[r][c],
                    o_flags_out=flags[r][c].as_value(),
                    o_tok_out=tok[r][c].as_value(),
                    o_d_out=d[r][c],
                )
        for c in range(n):
            m.d.comb += self.d_out[c].eq(d[n - 1][c])
        m.d.comb += self.corner_flags.eq(flags[n - 1][n - 1])
        return m


def pe_module_name(cfg: ArrayConfig) -> str:
    """Verilog name of the PE module the array instantiates (one per number format)."""
    return f"cdm_qta_pe_i{cfg.operand_bits}_a{cfg.acc_bits}"


def pe_verilog(cfg: ArrayConfig) -> str:
    """The PE module's Verilog, to be emitted next to any design containing the array."""
    from amaranth.back import verilog

    pe = ProcessingElement(operand_bits=cfg.operand_bits, acc_bits=cfg.acc_bits)
    return verilog.convert(pe, name=pe_module_name(cfg), emit_src=False)
