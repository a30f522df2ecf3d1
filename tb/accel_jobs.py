"""Jobs the simulated accelerator answers: the engine of :class:`cdm_qta.sw.rtl_backend.RtlBackend`.

DRAM is cocotbext-axi's AXI4 RAM behind the accelerator's master port (loaded and read through
its back door), the host its AXI4-Lite master; :class:`~cdm_qta.tb.accel_tb.AccelTB` owns both.
Every job returns plain data, so the host never needs cocotb.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdm_qta.hw.config import AcceleratorConfig

from .accel_tb import AccelTB

__all__ = ["AcceleratorJobs"]


class AcceleratorJobs:
    """``open``, then ``write_dram`` / ``read_dram`` / ``run`` / ``clear`` in any order."""

    def __init__(self, dut: object) -> None:
        self.dut = dut
        self.cfg = AcceleratorConfig.from_env()
        self.tb: AccelTB | None = None

    async def open(
        self, *, seed: int = 0, pause: float | None = None, ram_size: int | None = None
    ) -> dict[str, Any]:
        """Start clock, host and DRAM; ``pause``: probability of a stall on every AXI channel."""
        rng = np.random.default_rng(seed)
        self.tb = AccelTB(self.dut, self.cfg, rng, pause=pause, ram_size=ram_size)
        await self.tb.start()
        return {"config": self.cfg.to_dict(), "ram_size": self.tb.ram_size}

    def _bench(self) -> AccelTB:
        if self.tb is None:
            raise RuntimeError("the session was not opened")
        return self.tb

    async def write_dram(self, *, addr: int, data: bytes) -> None:
        self._bench().dram_write(addr, data)

    async def read_dram(self, *, addr: int, nbytes: int) -> bytes:
        return self._bench().dram_read(addr, nbytes)

    async def set_pause(self, *, probability: float) -> None:
        self._bench().set_pause(probability)

    async def run(self, *, words: list[int], max_cycles: int) -> dict[str, Any]:
        """Clear errors and counters, queue ``words``, wait until idle (at most ``max_cycles``),
        return the STATUS error bits and every counter."""
        errors, counters = await self._bench().run(words, max_cycles=max_cycles)
        return {"errors": sorted(errors), "counters": counters}
