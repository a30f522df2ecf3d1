"""Cocotb host and DRAM for :class:`~cdm_qta.hw.accelerator.Accelerator`.

The host is cocotbext-axi's AXI4-Lite master on ``s_axil``; DRAM is its AXI4 RAM on ``m_axi``
(optionally pausing every channel at random, and answering SLVERR for chosen address ranges).
Data goes into and out of DRAM through the RAM's back door, instructions through the
registers of :mod:`cdm_qta.hw.regs`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.isa import Instruction
from cdm_qta.hw.regs import COUNTERS, ERRORS, MAGIC, Reg, counter_address

from .stimulus import start_clock

__all__ = ["AccelTB", "BusFault"]


class BusFault(Exception):
    """Raised by the DRAM model for a faulty address; cocotbext-axi answers it with SLVERR."""


class AccelTB:
    """Clock, reset, AXI4-Lite host and AXI4 DRAM around one accelerator."""

    def __init__(
        self,
        dut: object,
        cfg: AcceleratorConfig,
        rng: np.random.Generator,
        *,
        pause: float | None = None,
        ram_size: int | None = None,
    ) -> None:
        self.dut = dut
        self.cfg = cfg
        self.rng = rng
        self.pause = pause
        # The modelled DRAM need not span the whole window (1 GB by default): the RAM model
        # allocates what it models, and accesses inside the window wrap around its size.
        self.ram_size = min(ram_size or cfg.dram_size, cfg.dram_size)
        self.faults: list[tuple[int, int]] = []  # [start, end) byte ranges answering SLVERR

    async def start(self) -> None:
        from cocotb.triggers import ClockCycles, Timer
        from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

        dut = self.dut
        dut.rst.value = 1
        await Timer(1, unit="ns")
        start_clock(dut)
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=self.ram_size)
        # cocotbext-axi logs every transaction at INFO: far too much for long programs.
        for model in (self.host.write_if, self.host.read_if, self.ram.write_if, self.ram.read_if):
            model.log.setLevel(logging.WARNING)
        self._install_faults()
        for channel in (
            self.ram.write_if.aw_channel,
            self.ram.write_if.w_channel,
            self.ram.write_if.b_channel,
            self.ram.read_if.ar_channel,
            self.ram.read_if.r_channel,
        ):
            if self.pause is not None:  # None: never pause, and no per-cycle Python for it
                channel.set_pause_generator(self._pauses())
            # The default queue limit of 2 makes the RAM's write side drop ready one cycle in
            # four (its process drains a timestep late): a DRAM that keeps up needs more.
            channel.queue_occupancy_limit = 16
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        magic = await self.read_reg(Reg.ID)
        assert magic == MAGIC, f"ID register reads {magic:#x}, expected {MAGIC:#x}"

    def set_pause(self, probability: float) -> None:
        """Pause every DRAM channel in a random ``probability`` of cycles from now on.

        Only for a testbench created with a ``pause`` (0.0 included), which installs the
        pause generators once at start.
        """
        if self.pause is None:
            raise RuntimeError("create the AccelTB with pause=0.0 to change pauses later")
        self.pause = probability

    def _pauses(self) -> Iterator[int]:
        # One generator per channel for the whole test, reading the current probability:
        # replacing a pause generator makes cocotbext-axi call the deprecated task.kill().
        while True:
            if self.pause:
                yield from (self.rng.random(64) < self.pause).astype(int).tolist()
            else:
                yield from (0,) * 64

    def _install_faults(self) -> None:
        """Make the RAM's reads and writes raise inside ``self.faults`` (-> SLVERR)."""

        def guard(address: int, length: int) -> None:
            for lo, hi in self.faults:
                if address < hi and lo < address + length:
                    raise BusFault(f"injected bus error at {address:#x}")

        read, write = self.ram.read_if._read, self.ram.write_if._write

        async def faulty_read(address: int, length: int) -> bytes:
            guard(address, length)
            return await read(address, length)

        async def faulty_write(address: int, data: bytes) -> None:
            guard(address, len(data))
            await write(address, data)

        self.ram.read_if._read = faulty_read
        self.ram.write_if._write = faulty_write

    # -- registers -------------------------------------------------------------------------

    async def read_reg(self, addr: int) -> int:
        return int.from_bytes((await self.host.read(int(addr), 4)).data, "little")

    async def write_reg(self, addr: int, value: int) -> None:
        await self.host.write(int(addr), int(value).to_bytes(4, "little"))

    async def push(self, program: Iterable[Instruction | int]) -> None:
        """Queue instructions, never more than the queue has room for."""
        words = [w if isinstance(w, int) else w.encode() for w in program]
        space = 0
        for word in words:
            while space == 0:
                space = await self.read_reg(Reg.QUEUE_SPACE)
            for i in range(4):
                await self.write_reg(Reg.INSN0 + 4 * i, (word >> (32 * i)) & 0xFFFFFFFF)
            space -= 1

    async def status(self) -> tuple[bool, set[str]]:
        word = await self.read_reg(Reg.STATUS)
        errors = {name for i, name in enumerate(ERRORS) if word >> (16 + i) & 1}
        return bool(word & 1), errors

    async def wait_idle(self, max_cycles: int = 2_000_000, poll: int = 64) -> set[str]:
        """Wait until nothing is queued or running; return the error bits then set."""
        from cocotb.triggers import ClockCycles

        waited = 0
        while True:
            busy, errors = await self.status()
            if not busy:
                return errors
            if waited > max_cycles:
                raise AssertionError(f"still busy after {waited} cycles (errors: {errors})")
            await ClockCycles(self.dut.clk, poll)
            waited += poll

    async def clear(self, *, errors: bool = True, counters: bool = True) -> None:
        await self.write_reg(Reg.CONTROL, int(errors) | int(counters) << 1)

    async def counters(self) -> dict[str, int]:
        out = {}
        for name in COUNTERS:
            lo = await self.read_reg(counter_address(name))
            hi = await self.read_reg(counter_address(name) + 4)
            out[name] = lo | hi << 32
        return out

    async def run(
        self, program: Sequence[Instruction | int], *, max_cycles: int = 2_000_000
    ) -> tuple[set[str], dict[str, int]]:
        """Clear errors and counters, run a program to the end, return (errors, counters)."""
        await self.clear()
        await self.push(program)
        errors = await self.wait_idle(max_cycles=max_cycles)
        return errors, await self.counters()

    # -- DRAM back door ---------------------------------------------------------------------

    def dram_write(self, addr: int, data: bytes | np.ndarray) -> None:
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        self.ram.write(addr - self.cfg.dram_base, raw)

    def dram_read(self, addr: int, length: int) -> bytes:
        return self.ram.read(addr - self.cfg.dram_base, length)
