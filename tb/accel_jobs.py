"""Jobs the simulated accelerator answers: the engine of :class:`cdm_qta.sw.rtl_backend.RtlBackend`.

DRAM is the in-simulator model or cocotbext-axi's AXI4 RAM (:mod:`cdm_qta.tb.sim_top`), the
host cocotbext-axi's AXI4-Lite master; :class:`~cdm_qta.tb.accel_tb.AccelTB` owns both.
Every job returns plain data, so the host never needs cocotb.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .accel_tb import AccelTB
from .sim_top import SimTopConfig

__all__ = ["AcceleratorJobs"]


class AcceleratorJobs:
    """``open``, then ``write_dram`` / ``read_dram`` / ``run`` / ``clear`` in any order."""

    def __init__(self, dut: object) -> None:
        self.dut = dut
        self.cfg = SimTopConfig.from_env()
        self.tb: AccelTB | None = None

    async def open(self, *, seed: int = 0, pause: float | None = None) -> dict[str, Any]:
        """Start clock, host and DRAM; ``pause``: probability of a stall on every AXI channel."""
        rng = np.random.default_rng(seed)
        self.tb = AccelTB(self.dut, self.cfg, rng, pause=pause)
        await self.tb.start()
        return {"config": self.cfg.to_dict()}

    def _bench(self) -> AccelTB:
        if self.tb is None:
            raise RuntimeError("the session was not opened")
        return self.tb

    async def write_dram(self, *, addr: int, data: bytes) -> None:
        await self._bench().dram_write(addr, data)

    async def read_dram(self, *, addr: int, nbytes: int) -> bytes:
        return await self._bench().dram_read(addr, nbytes)

    async def set_pause(self, *, probability: float) -> None:
        await self._bench().set_pause(probability)

    async def set_faults(self, *, ranges: list[tuple[int, int]], resp: int) -> None:
        self._bench().set_faults(ranges, resp)

    async def run(
        self, *, words: list[int], max_cycles: int, trace: bool = False
    ) -> dict[str, Any]:
        """Fetch-run ``words`` from DRAM (errors and counters cleared first), wait for ``done``
        (at most ``max_cycles``), return the STATUS error bits and every counter; with
        ``trace``, also the cycle of every retirement per engine (``"retired"``)."""
        tb = self._bench()
        errors, counters = await tb.run(words, max_cycles=max_cycles, trace=trace)
        result: dict[str, Any] = {"errors": sorted(errors), "counters": counters}
        if trace:
            result["retired"] = tb.last_trace
        return result

    async def reset(self) -> None:
        """Pulse reset (in-simulator DRAM only)."""
        await self._bench().reset()
