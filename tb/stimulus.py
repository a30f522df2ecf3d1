"""Clock and random stimulus shared by every testbench and job handler."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

__all__ = ["CLOCK_NS", "pauses", "start_clock"]

#: Clock period of every simulation (100 MHz in simulated time; only cycles matter).
CLOCK_NS = 10


def start_clock(dut: object) -> None:
    """Start ``dut.clk``, low first, so inputs set before it are stable at the first edge."""
    from cocotb.clock import Clock

    Clock(dut.clk, CLOCK_NS, unit="ns").start(start_high=False)


def pauses(rng: np.random.Generator, probability: float) -> Iterator[bool]:
    """An endless, seeded pattern: True (pause this cycle) with the given probability."""
    return (
        bool(x)
        for x in itertools.chain.from_iterable(
            rng.random(1024) < probability for _ in itertools.count()
        )
    )
