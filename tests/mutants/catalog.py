"""Hand-written mutants: the eight risks of issue 9, each a bug the fast suite must catch.

Each is either a precisely targeted yosys mutation, named by module, wire, bit and mode (the
``mutate -list`` candidates filtered that way must be exactly one cell port bit), or, where
``mutate`` cannot express the bug (operand signedness, a narrower register, a constant
operand), a regex edit of the generated Verilog that must match exactly once. Either way a
change of the generator that moves the target makes the mutant fail to build, loudly, instead
of silently simulating the genuine design.

``expect`` is the test that is meant to kill the mutant (documentation; the run reports the
test that actually did).
"""

from __future__ import annotations

import dataclasses

from .verilog import TextEdit

__all__ = ["HAND_MUTANTS", "HandMutant", "WireMutation"]


@dataclasses.dataclass(frozen=True)
class WireMutation:
    """``mutate -mode <mode>`` on the cell output that drives ``wire[bit]`` in ``module``."""

    module: str  #: module path below the top (:func:`mutants.verilog.resolve`)
    wire: str
    bit: int
    mode: str  #: ``const0``, ``const1`` or ``inv``
    port: str = ""  #: the cell port (``Q`` of a register), when readers see the wire too

    def filters(self, module: str) -> list[str]:
        port = [f"-port {self.port}"] if self.port else []
        return [f"-module {module}", f"-wire {self.wire}", f"-wirebit {self.bit}",
                f"-mode {self.mode}", *port]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class HandMutant:
    name: str
    target: str  #: a key of :data:`mutants.targets.TARGETS`
    risk: str  #: the risk of issue 9 it stands for
    how: str  #: what was changed, in words
    expect: str
    wire: WireMutation | None = None
    edit: TextEdit | None = None

    def __post_init__(self) -> None:
        if (self.wire is None) == (self.edit is None):
            raise ValueError(f"hand mutant {self.name}: give exactly one of wire or edit")


PE = "cdm_qta_pe_i8_a32"  # the PE module of 8-bit operands and 32-bit sums (pe_module_name)

HAND_MUTANTS: tuple[HandMutant, ...] = (
    HandMutant(
        name="narrow_psum",
        target="pe",
        risk="narrower partial sums",
        how="the PE's sum (WS partial sum and OS accumulator) is 24 bits, sign-extended: a "
        "register sized for the longest WS column, not for long OS reductions",
        expect="test_array.accumulator_wraps_like_golden",
        edit=TextEdit(
            PE,
            r"assign (\\\$\d+)  = \$signed\((\\\$\d+) \) \+ \$signed\(product\);",
            r"wire signed [23:0] mutant_narrow_psum = $signed(\2 ) + $signed(product);"
            "\n  assign \\1  = mutant_narrow_psum;",
        ),
    ),
    HandMutant(
        name="sign_extension_dropped",
        target="pe",
        risk="a dropped sign extension",
        how="the 16-bit product is zero-extended (not sign-extended) into the 32-bit sum",
        expect="test_array.random_single_tiles",
        edit=TextEdit(PE, r"\+ \$signed\(product\);", "+ product;"),
    ),
    HandMutant(
        name="weight_banks_swapped",
        target="pe",
        risk="swapped weight banks",
        how="a WS row multiplies with the weight bank the next tile loads into, not its own",
        expect="test_array.random_single_tiles",
        edit=TextEdit(PE, r"\? w1 : w0;", "? w0 : w1;"),
    ),
    HandMutant(
        name="os_acc_not_cleared",
        target="pe",
        risk="an OS accumulator that is not cleared between tiles",
        how="the first step of an OS tile adds to the previous tile's sum instead of zero",
        expect="test_array.random_single_tiles",
        edit=TextEdit(PE, r"\? 32'd0 : acc;", "? acc : acc;"),
    ),
    HandMutant(
        name="rmw_overwrites",
        target="accelerator",
        risk="read-modify-write that overwrites",
        how="the output buffer's writer ignores `accumulate` (s2_acc stuck at 0): K-split "
        "tiles overwrite the partial result instead of adding to it",
        expect="test_accelerator.random_gemms",
        wire=WireMutation("core.accel.compute", "s2_acc", 0, "const0", "Q"),
    ),
    HandMutant(
        name="token_never_pushed",
        target="accelerator",
        risk="a token that is never pushed",
        how="a finished COMPUTE never pushes its token to STORE (s2_push_next stuck at 0)",
        expect="test_accelerator.single_tiles",
        wire=WireMutation("core.accel.compute", "s2_push_next", 0, "const0", "Q"),
    ),
    HandMutant(
        name="burst_crosses_4kb",
        target="dma",
        risk="a DMA burst crossing 4 KB",
        how="the read planner's burst cap (the beats to the next 4 KB page, at most 256) reads "
        ">= 512 (cap[9] stuck at 1): no row is ever split at a 4 KB boundary",
        expect="test_dma.random_copies/stall=False",
        wire=WireMutation("reader.plan", "cap", 9, "const1", "Y"),
    ),
    HandMutant(
        name="wstrb_ignored",
        target="dma",
        risk="WSTRB ignored on a partial row",
        how="the writer strobes all 8 byte lanes on a row's final (partial) beat too, so "
        "bytes past row_bytes are overwritten",
        expect="test_dma.random_copies/stall=False",
        edit=TextEdit("writer", r"\? \{( \\\$\d+ ,){7} \\\$\d+  \} : 8'hff;", "? 8'hff : 8'hff;"),
    ),
)
