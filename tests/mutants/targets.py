"""What is mutated, in which design, and which fast tests judge a mutant (in what order).

A :class:`MutationTarget` is a simulation top (:class:`~cdm_qta.tb.targets.SimTarget`), the
modules of its Verilog that mutations may touch, and the *suites* of its fast tests (cocotb
test modules of tests/rtl, and random programs checked against golden). The control (the
genuine design after a yosys round trip) runs each suite in one simulator process; every
mutant then runs the suite's tests one per process, cheapest first (by the control's simulated
time), and stops at the first that fails: that test killed it, and a test that hangs is ended
at a bound derived from its own time, not the whole suite's.

Simulator choice (measured on the 2-core machine, see README "Mutation testing"): Icarus for
every target. Icarus compiles each of these tops in under a second; a Verilator build takes
30-90 s, more than a mutant's whole Icarus run (2 s for the array suite, 8-60 s for the
accelerator's stages, 5 s for the DMA suite).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from cdm_qta.hw.array import pe_module_name
from cdm_qta.hw.config import AcceleratorConfig, ArrayConfig
from cdm_qta.tb.dma_top import DmaTopConfig
from cdm_qta.tb.sim_top import SimTopConfig
from cdm_qta.tb.targets import Config, Top

__all__ = ["TARGETS", "MutationTarget", "Stage", "Suite"]


@dataclasses.dataclass(frozen=True)
class Suite:
    """A part of a target's fast suite: a cocotb test module of tests/rtl (every test in it but
    ``exclude``), or ``"fuzz"``: ``fuzz_streams`` random programs through a job session, each
    compared with the golden back end (:mod:`mutants.fuzz`)."""

    module: str
    exclude: tuple[str, ...] = ()
    fuzz_streams: int = 0


@dataclasses.dataclass(frozen=True)
class Stage:
    """One simulator run: a whole suite (``test`` empty: the control) or one of its tests."""

    suite: Suite
    test: str = ""

    @property
    def name(self) -> str:
        if self.suite.module == "fuzz":
            return f"fuzz[{self.suite.fuzz_streams} streams]"
        return f"{self.suite.module}.{self.test}" if self.test else self.suite.module

    def to_dict(self) -> dict[str, object]:
        return {"module": self.suite.module, "exclude": list(self.suite.exclude),
                "fuzz_streams": self.suite.fuzz_streams, "test": self.test}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Stage:
        suite = Suite(str(data["module"]), tuple(data["exclude"]), int(data["fuzz_streams"]))  # type: ignore[arg-type, call-overload]
        return cls(suite, str(data["test"]))


@dataclasses.dataclass(frozen=True)
class MutationTarget:
    """A design, the part of it that is mutated, and the tests that judge each mutant.

    ``mutable(name, top)`` says whether the Verilog module ``name`` of a design whose top
    module is ``top`` may be mutated; test infrastructure compiled into the simulation (AXI
    monitors, the in-simulator DRAM, the DMA test top's register file) never is.
    """

    name: str
    top: Top
    config: Config
    mutable: Callable[[str, str], bool]
    suites: tuple[Suite, ...]
    sample: int  #: yosys mutants drawn by default
    description: str
    sim: str = "icarus"

    @property
    def module(self) -> str:
        return self.config.module_name


ARRAY_N = 4
_ARRAY = ArrayConfig(n=ARRAY_N)
#: The accelerator exactly as tests/rtl/test_accelerator.py runs it first (N=4, 256-row
#: buffers, a 4-byte bus), with the in-simulator DRAM.
_ACCEL = SimTopConfig(
    accel=AcceleratorConfig.small(ARRAY_N, dram_size=1 << 16), dram="model", dram_bytes=1 << 16
)
#: Rows of 20 bytes on an 8-byte bus: every row ends in a partial beat (WSTRB matters).
_DMA = DmaTopConfig(data_bytes=8, row_width=20)

ARRAY_WRAP = "accumulator_wraps_like_golden"
ACCEL_WRAP = "accumulators_wrap_like_golden"
ACCEL_GEMMS = "random_gemms"

_ARRAY_SUITES = (Suite("test_array"),)


def _pe(name: str, top: str) -> bool:
    return name == pe_module_name(_ARRAY)


def _core(name: str, top: str) -> bool:
    return name in (f"{top}.core", f"{top}.core.array")


def _accelerator(name: str, top: str) -> bool:
    # The accelerator below the simulation top; its array core and PEs are the pe/core targets.
    inside = name.startswith(f"{top}.core.accel")
    return inside and not name.startswith(f"{top}.core.accel.compute.core")


def _dma(name: str, top: str) -> bool:
    return name.startswith((f"{top}.reader", f"{top}.writer", f"{top}.regs"))


TARGETS: dict[str, MutationTarget] = {
    t.name: t
    for t in (
        MutationTarget(
            name="pe",
            top=Top.ARRAY,
            config=_ARRAY,
            mutable=_pe,
            suites=_ARRAY_SUITES,
            sample=20,
            description=f"the PE module, in every PE of the {ARRAY_N}x{ARRAY_N} array core",
        ),
        MutationTarget(
            name="core",
            top=Top.ARRAY,
            config=_ARRAY,
            mutable=_core,
            suites=_ARRAY_SUITES,
            sample=20,
            description="ArrayCore's edges: skew, weight banks, hazards, de-skew, errors",
        ),
        MutationTarget(
            name="accelerator",
            top=Top.ACCELERATOR,
            config=_ACCEL,
            mutable=_accelerator,
            suites=(Suite("test_accelerator"), Suite("fuzz", fuzz_streams=40)),
            sample=40,
            description="engines, SRAMs, tokens, registers, fetch and DMA of the accelerator",
        ),
        MutationTarget(
            name="dma",
            top=Top.DMA,
            config=_DMA,
            mutable=_dma,
            suites=(Suite("test_dma"),),
            sample=20,
            description="DMA reader and writer (burst planner, FIFOs, W/R sides), AXI4-Lite port",
        ),
    )
}
