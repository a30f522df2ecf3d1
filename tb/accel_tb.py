"""Cocotb host and DRAM around the simulated accelerator (:mod:`cdm_qta.tb.sim_top`).

The host is cocotbext-axi's AXI4-Lite master on ``s_axil``. DRAM is either the in-simulator
model (``dram="model"``: loaded and read through its back door, stalls and bus errors set by
its control ports) or cocotbext-axi's AXI4 RAM on the ``m_axi`` ports (``dram="cocotb"``: its
own back door, stalls by pause generators, SLVERR by a guard around its storage). Either way:

* :meth:`AccelTB.run` writes the program into the DRAM's program area, starts it through the
  FETCH registers and waits for the ``done`` edge, at most ``max_cycles`` (no register polling);
* :meth:`AccelTB.run_pushed` queues the words through INSN0..3 instead and polls STATUS (the
  host-driven path, kept working and tested);
* a protocol monitor violation fails the test at once, with the rule's name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from cdm_qta.hw.axi import AxiResp
from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.fetch import INSN_BYTES
from cdm_qta.hw.isa import Engine, Instruction
from cdm_qta.hw.regs import CONTROL_BITS, COUNTERS, ERRORS, MAGIC, STATUS_BITS, Reg, counter_address

from .axi_monitor import Rule
from .dram import DUMP_FILE, LOAD_FILE
from .sim_top import SimTopConfig
from .stimulus import CLOCK_NS, start_clock

__all__ = ["AccelTB", "BusFault", "ProtocolViolation"]

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


class BusFault(Exception):
    """Raised by the cocotbext-axi RAM's storage for a faulty address: it answers SLVERR."""


class ProtocolViolation(AssertionError):
    """An AXI monitor saw a rule broken (the message names it)."""


def words_of(program: Iterable[Instruction | int]) -> list[int]:
    return [w if isinstance(w, int) else w.encode() for w in program]


class AccelTB:
    """Clock, reset, AXI4-Lite host and DRAM around one simulated accelerator.

    Parameters
    ----------
    dut : the simulation top
    cfg : SimTopConfig
    rng : seeds stalls
    pause : float, optional
        Probability of a stall on every DRAM channel per cycle; ``None`` (the default) never
        stalls and, on the cocotb DRAM, installs no pause generators (no per-cycle Python).
    """

    def __init__(
        self,
        dut: object,
        cfg: SimTopConfig,
        rng: np.random.Generator,
        *,
        pause: float | None = None,
    ) -> None:
        self.dut = dut
        self.cfg = cfg
        self.rng = rng
        self.pause = pause
        self.faults: list[tuple[int, int]] = []  # cocotb DRAM: [start, end) answering SLVERR
        self.bus_bytes = cfg.accel.dram_bus_bytes
        #: After ``run(..., trace=True)``: the cycles each engine retired in (see :meth:`run`).
        self.last_trace: dict[str, list[int]] = {}
        self._done_ps = 0

    @property
    def accel(self) -> AcceleratorConfig:
        return self.cfg.accel

    # -- start-up --------------------------------------------------------------------------

    async def start(self) -> None:
        import cocotb
        from cocotb.triggers import ClockCycles, Timer
        from cocotbext.axi import AxiLiteBus, AxiLiteMaster

        dut = self.dut
        dut.rst.value = 1
        if self.cfg.dram == "model":
            for name in ("stall_prob", "reseed", "bd_load", "bd_dump", "bd_lo", "bd_hi"):
                getattr(dut, name).value = 0
            dut.stall_seed.value = int(self.rng.integers(1, 1 << 32))
            self._no_faults()
        await Timer(1, unit="ns")
        start_clock(dut)
        # The models see no reset: cocotbext-axi reacts to a second reset with the deprecated
        # task.kill(), and the host never has a transaction open across a reset.
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk)
        self.host.write_if.log.setLevel(logging.WARNING)
        self.host.read_if.log.setLevel(logging.WARNING)
        if self.cfg.dram == "cocotb":
            self._start_axi_ram()
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        if self.pause is not None:
            await self.set_pause(self.pause)
        cocotb.start_soon(self._watch_protocol())
        magic = await self.read_reg(Reg.ID)
        assert magic == MAGIC, f"ID register reads {magic:#x}, expected {MAGIC:#x}"

    def _start_axi_ram(self) -> None:
        from cocotbext.axi import AxiBus, AxiRam

        dut = self.dut
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, size=self.cfg.dram_bytes)
        self.ram.write_if.log.setLevel(logging.WARNING)
        self.ram.read_if.log.setLevel(logging.WARNING)
        self._install_guard()
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

    async def _watch_protocol(self) -> None:
        from cocotb.triggers import ReadOnly, RisingEdge

        await RisingEdge(self.dut.protocol_error)
        await ReadOnly()  # the code settles after the sticky error bit's edge
        raise ProtocolViolation(f"AXI protocol violation: {self.protocol_rule().description}")

    def protocol_rule(self) -> Rule:
        """The first rule a monitor saw broken (``Rule.OK`` if none)."""
        if not self.dut.protocol_error.value:
            return Rule.OK
        return Rule(self.dut.protocol_code.value.to_unsigned())

    async def reset(self, cycles: int = 3) -> None:
        """Pulse reset (in-simulator DRAM only: the cocotbext-axi RAM keeps open bursts)."""
        from cocotb.triggers import ClockCycles

        if self.cfg.dram != "model":
            raise RuntimeError("reset in the middle of a program needs dram='model'")
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    # -- stalls and bus errors ----------------------------------------------------------------

    async def set_pause(self, probability: float) -> None:
        """Stall every DRAM channel in a random ``probability`` of cycles from now on.

        On the cocotb DRAM only for a testbench created with a ``pause`` (0.0 included), which
        installs the pause generators once at start.
        """
        self.pause = probability
        if self.cfg.dram == "model":
            from cocotb.triggers import RisingEdge

            self.dut.stall_prob.value = min(255, round(256 * probability))
            self.dut.stall_seed.value = int(self.rng.integers(1, 1 << 32))
            self.dut.reseed.value = 1
            await RisingEdge(self.dut.clk)
            self.dut.reseed.value = 0
        elif not hasattr(self, "ram"):
            raise RuntimeError("start the testbench first")

    def _pauses(self) -> Iterator[int]:
        # One generator per channel for the whole test, reading the current probability:
        # replacing a pause generator makes cocotbext-axi call the deprecated task.kill().
        while True:
            if self.pause:
                yield from (self.rng.random(64) < self.pause).astype(int).tolist()
            else:
                yield from (0,) * 64

    def set_faults(self, ranges: Sequence[tuple[int, int]], resp: int = AxiResp.SLVERR) -> None:
        """Make DRAM answer ``resp`` for bursts touching ``[start, end)`` byte ranges (<= 2).

        The cocotbext-axi RAM can only answer SLVERR (an exception in its storage); the
        in-simulator model answers SLVERR or DECERR.
        """
        if len(ranges) > 2:
            raise ValueError("at most two fault ranges")
        if self.cfg.dram == "cocotb":
            if ranges and resp != AxiResp.SLVERR:
                raise ValueError("the cocotbext-axi RAM answers SLVERR only")
            self.faults = list(ranges)
            return
        self._no_faults()
        for i, (lo, hi) in enumerate(ranges):
            getattr(self.dut, f"err{i}_lo").value = lo
            getattr(self.dut, f"err{i}_hi").value = hi
            getattr(self.dut, f"err{i}_resp").value = resp

    def _no_faults(self) -> None:
        for i in range(2):
            getattr(self.dut, f"err{i}_lo").value = 0
            getattr(self.dut, f"err{i}_hi").value = 0
            getattr(self.dut, f"err{i}_resp").value = 0

    def _install_guard(self) -> None:
        """Make the cocotb RAM's reads and writes raise inside ``self.faults`` (-> SLVERR)."""

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

    # -- DRAM back door --------------------------------------------------------------------

    def _check_span(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.cfg.dram_bytes:
            raise ValueError(
                f"[{addr:#x}, {addr + length:#x}) is outside the simulated DRAM "
                f"[0, {self.cfg.dram_bytes:#x})"
            )

    async def dram_write(self, addr: int, data: bytes | np.ndarray) -> None:
        raw = np.frombuffer(
            data.tobytes() if isinstance(data, np.ndarray) else bytes(data), np.uint8
        )
        self._check_span(addr, raw.size)
        if not raw.size:
            return
        if self.cfg.dram == "cocotb":
            self.ram.write(addr, raw.tobytes())
            return
        w = self.bus_bytes
        first, end = addr // w, -(-(addr + raw.size) // w)
        words = np.frombuffer(await self._dump(first, end), dtype=np.uint8).copy()
        words[addr - first * w : addr - first * w + raw.size] = raw
        lines = _hex_lines(words.reshape(end - first, w))
        Path(LOAD_FILE).write_bytes(f"@{first:x}\n".encode() + lines)
        await self._pulse("bd_load")

    async def dram_read(self, addr: int, length: int) -> bytes:
        self._check_span(addr, length)
        if not length:
            return b""
        if self.cfg.dram == "cocotb":
            return bytes(self.ram.read(addr, length))
        w = self.bus_bytes
        first, end = addr // w, -(-(addr + length) // w)
        raw = await self._dump(first, end)
        return raw[addr - first * w : addr - first * w + length]

    async def _dump(self, first: int, end: int) -> bytes:
        """Words ``[first, end)`` of the model's storage, as little-endian bytes."""
        if end - first <= 0:
            return b""
        self.dut.bd_lo.value = first
        self.dut.bd_hi.value = end - 1
        await self._pulse("bd_dump")
        return _parse_hex(Path(DUMP_FILE).read_bytes(), end - first, self.bus_bytes)

    async def _pulse(self, name: str) -> None:
        from cocotb.triggers import FallingEdge, RisingEdge

        getattr(self.dut, name).value = 1
        await RisingEdge(self.dut.clk)
        getattr(self.dut, name).value = 0
        await FallingEdge(self.dut.clk)  # the edge's always blocks (and their file) are done

    # -- registers -------------------------------------------------------------------------

    async def read_reg(self, addr: int) -> int:
        return int.from_bytes((await self.host.read(int(addr), 4)).data, "little")

    async def write_reg(self, addr: int, value: int) -> None:
        await self.host.write(int(addr), int(value).to_bytes(4, "little"))

    async def status(self) -> tuple[bool, set[str]]:
        word = await self.read_reg(Reg.STATUS)
        errors = {name for i, name in enumerate(ERRORS) if word >> (16 + i) & 1}
        return bool(word >> STATUS_BITS["busy"] & 1), errors

    async def clear(self, *, errors: bool = True, counters: bool = True) -> None:
        bits = int(errors) << CONTROL_BITS["clear_errors"]
        bits |= int(counters) << CONTROL_BITS["clear_counters"]
        await self.write_reg(Reg.CONTROL, bits)

    async def counters(self) -> dict[str, int]:
        out = {}
        for name in COUNTERS:
            lo = await self.read_reg(counter_address(name))
            hi = await self.read_reg(counter_address(name) + 4)
            out[name] = lo | hi << 32
        return out

    # -- programs ----------------------------------------------------------------------------

    async def run(
        self,
        program: Sequence[Instruction | int],
        *,
        max_cycles: int = 2_000_000,
        trace: bool = False,
    ) -> tuple[set[str], dict[str, int]]:
        """Fetch-run ``program``: clear errors and counters, start it, wait for ``done``.

        ``trace``: also record the cycle of every retirement (:attr:`last_trace`), counted like
        the ``cycles`` counter: cycle 0 is the first cycle it counts.
        Raises :class:`AssertionError` if ``done`` does not rise within ``max_cycles``.
        """
        import cocotb

        words = words_of(program)
        if len(words) > self.cfg.max_program:
            raise ValueError(
                f"{len(words)} instructions do not fit the {self.cfg.max_program}-word program area"
            )
        base = self.cfg.program_base
        image = b"".join(w.to_bytes(INSN_BYTES, "little") for w in words)
        await self.dram_write(base, image)
        await self.write_reg(Reg.FETCH_ADDR, base)
        await self.write_reg(Reg.FETCH_COUNT, len(words))
        changes: list[tuple[int, int]] = []
        tracer = cocotb.start_soon(self._record_retires(changes)) if trace else None
        await self.start_program()
        await self.wait_done(max_cycles)
        _, errors = await self.status()
        counters = await self.counters()
        if tracer is not None:
            await tracer  # it ended at the done edge
            self.last_trace = _retire_cycles(changes, self._done_ps, counters["cycles"])
        return errors, counters

    async def _record_retires(self, changes: list[tuple[int, int]]) -> None:
        """(time in ps, value) of every change of the ``retire`` port until ``done`` rises.

        Woken only by changes (a burst of back-to-back retirements is one high stretch), so a
        trace costs Python time per instruction, not per cycle.
        """
        from cocotb.triggers import First, RisingEdge

        retire, done = self.dut.retire, self.dut.done
        while True:
            fired = await First(retire.value_change, RisingEdge(done))
            if fired is not retire.value_change:
                self._done_ps = _sim_ps()
                return
            changes.append((_sim_ps(), int(retire.value)))

    async def start_program(self) -> None:
        """CONTROL: clear errors and counters and start the program at FETCH_ADDR."""
        bits = sum(1 << CONTROL_BITS[b] for b in ("clear_errors", "clear_counters", "start"))
        await self.write_reg(Reg.CONTROL, bits)

    async def wait_done(self, max_cycles: int) -> None:
        """Wait for the ``done`` edge (an edge trigger: no polling), at most ``max_cycles``."""
        from cocotb.triggers import First, RisingEdge, Timer

        if not self.dut.done.value:
            await First(RisingEdge(self.dut.done), Timer(max_cycles * CLOCK_NS, unit="ns"))
        if not self.dut.done.value:
            busy, errors = await self.status()
            space = await self.read_reg(Reg.QUEUE_SPACE)
            counters = {k: v for k, v in (await self.counters()).items() if v}
            raise AssertionError(
                f"still busy after {max_cycles} cycles (busy={busy}, errors {sorted(errors)}, "
                f"queue space {space}, counters {counters})"
            )

    async def push(self, program: Iterable[Instruction | int]) -> None:
        """Queue instructions through INSN0..3, never more than the queue has room for."""
        space = 0
        for word in words_of(program):
            while space == 0:
                space = await self.read_reg(Reg.QUEUE_SPACE)
            for i in range(4):
                await self.write_reg(Reg.INSN0 + 4 * i, (word >> (32 * i)) & 0xFFFFFFFF)
            space -= 1

    async def wait_idle(self, max_cycles: int = 2_000_000, poll: int = 64) -> set[str]:
        """Poll STATUS until nothing is queued or running; the error bits then set."""
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

    async def run_pushed(
        self, program: Sequence[Instruction | int], *, max_cycles: int = 2_000_000
    ) -> tuple[set[str], dict[str, int]]:
        """Host-driven run: push the words through the registers and poll until idle."""
        await self.clear()
        await self.push(program)
        errors = await self.wait_idle(max_cycles=max_cycles)
        return errors, await self.counters()


def _sim_ps() -> int:
    from cocotb.utils import get_sim_time

    return int(get_sim_time("ps"))


def _retire_cycles(
    changes: Sequence[tuple[int, int]], done_ps: int, cycles: int
) -> dict[str, list[int]]:
    """Per source (``load``, ``compute``, ``store``, ``dispatch``): the cycles it retired in.

    The ``cycles`` counter's last counted cycle is the one before ``done`` rises, so cycle
    ``c`` begins ``cycles - c`` clock periods before that edge. ``retire`` changes only at
    clock edges; a value holds until the next change.
    """
    period = round(CLOCK_NS * 1000)
    first = done_ps - cycles * period
    names = [e.name.lower() for e in Engine] + ["dispatch"]
    out: dict[str, list[int]] = {name: [] for name in names}
    kept = [(t, v) for t, v in changes if t < done_ps]
    for (t, v), (t_next, _) in zip(kept, [*kept[1:], (done_ps, 0)], strict=True):
        if not v or t_next == t:
            continue
        if (t - first) % period:
            raise AssertionError(f"retire changed between clock edges at {t} ps")
        for c in range((t - first) // period, (t_next - first) // period):
            for bit, name in enumerate(names):
                if v >> bit & 1:
                    out[name].append(c)
    return out


def _hex_lines(words: np.ndarray) -> bytes:
    """``$readmemh`` lines: one word a line, most significant byte first."""
    be = words[:, ::-1]
    chars = np.empty((be.shape[0], 2 * be.shape[1] + 1), dtype=np.uint8)
    chars[:, 0:-1:2] = _HEX[be >> 4]
    chars[:, 1:-1:2] = _HEX[be & 0xF]
    chars[:, -1] = ord("\n")
    return chars.tobytes()


def _parse_hex(text: bytes, count: int, width: int) -> bytes:
    """Bytes of ``count`` words from ``$writememh`` output (comments skipped, X/Z read as 0)."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith((b"//", b"@"))]
    if len(lines) != count:
        raise AssertionError(f"the DRAM dump has {len(lines)} words, expected {count}")
    joined = b"".join(lines).lower().translate(bytes.maketrans(b"xz", b"00"))
    raw = np.frombuffer(bytes.fromhex(joined.decode()), dtype=np.uint8)
    return raw.reshape(count, width)[:, ::-1].tobytes()
