"""DMA regressions: DmaReader + DmaWriter + AxiJoin + AxiLiteRegisterPort against cocotbext-axi.

The DRAM is a cocotbext-axi ``AxiRam`` (with random pauses on all five channels when the test
stalls) beside a NumPy byte model; every transfer is checked byte for byte, every AR/AW burst
against a Python model of the burst splitting, and the whole RAM against the model after every
write. The cocotb half runs inside the simulator; the pytest half at the bottom generates the
test top (:mod:`cdm_qta.tb.dma_top`) for each configuration and runs the cocotb half under
Verilator and Icarus.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray
from regression import run_regression

from cdm_qta.hw.dma import CMD_TO_ADDR, dma_command_layout, dma_error_layout
from cdm_qta.tb.axi_monitor import Rule
from cdm_qta.tb.dma_top import AXIL_ADDR_BITS, ID_MAGIC, DmaTopConfig
from cdm_qta.tb.stimulus import pauses, start_clock
from cdm_qta.tb.targets import SimTarget, Top

try:  # the cocotb half only exists inside a simulator
    import cocotb
    from cocotb.triggers import Event, ReadOnly, RisingEdge, Timer
    from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiResp
except ImportError:  # pragma: no cover - pytest collects this file without cocotb installed
    cocotb = None

TIMEOUT_MS = 20  # simulated time; the longest test needs well under 1 ms
RAM_SIZE = 0x10000  # the DRAM window of DmaTopConfig lies inside, with room on both sides
PAGE = 4096
#: Bursts in flight that cover AxiRam's round trip (AR handshake to the FIFO slot's reuse is
#: 3 cycles for reads, more for writes): from here on the engines must run at full rate.
FULL_RATE_OUTSTANDING = 8


# ---------------------------------------------------------------------------------------------
# Models: commands, checks and burst splitting, exactly as hw/dma.py documents them.


@dataclasses.dataclass(frozen=True)
class Cmd:
    dram_addr: int
    stride: int
    rows: int
    row_bytes: int

    def pack(self) -> int:
        layout = dma_command_layout()
        word = 0
        for name in ("dram_addr", "stride", "rows", "row_bytes"):
            field = layout[name]
            word |= (getattr(self, name) & ((1 << field.width) - 1)) << field.offset
        return word

    def row_addrs(self) -> list[int]:
        return [self.dram_addr + r * self.stride for r in range(self.rows)]


def expected_error(cmd: Cmd, cfg: DmaTopConfig) -> tuple[bool, bool]:
    """``(align, window)`` of a command."""
    w = cfg.data_bytes
    align = (
        cmd.dram_addr % w != 0
        or cmd.stride % w != 0
        or not 1 <= cmd.row_bytes <= cfg.row_width
        or cmd.rows == 0
    )
    end = cmd.dram_addr + max(cmd.rows - 1, 0) * cmd.stride + cmd.row_bytes
    window = cmd.dram_addr < cfg.dram_base or end > cfg.dram_base + cfg.dram_size
    return align, window


def error_bits(align: bool = False, window: bool = False, bus: bool = False) -> int:
    layout = dma_error_layout()
    return (
        (int(align) << layout["align"].offset)
        | (int(window) << layout["window"].offset)
        | (int(bus) << layout["bus"].offset)
    )


def plan_bursts(cmd: Cmd, w: int) -> list[tuple[int, int]]:
    """``(address, beats)`` of every burst: one per row, split at 4 KB and at 256 beats."""
    bursts = []
    for row in cmd.row_addrs():
        addr, left = row, cmd.row_bytes
        while left > 0:
            beats = min(-(-left // w), (PAGE - addr % PAGE) // w, 256)
            bursts.append((addr, beats))
            addr += beats * w
            left -= beats * w
    return bursts


class FaultyRam(AxiRam if cocotb is not None else object):  # type: ignore[misc]
    """An AxiRam whose backing read or write raises inside ``faults`` (the slave then answers
    SLVERR for that beat; a failed read beat carries zeros, a failed write beat writes nothing).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.faults: list[tuple[int, int]] = []  # [start, end) byte ranges
        read, write = self.read_if._read, self.write_if._write

        async def faulty_read(address: int, length: int) -> bytes:
            self._check(address, length)
            return await read(address, length)

        async def faulty_write(address: int, data: bytes) -> None:
            self._check(address, len(data))
            await write(address, data)

        self.read_if._read = faulty_read
        self.write_if._write = faulty_write

    def _check(self, address: int, length: int) -> None:
        for start, end in self.faults:
            if address < end and start < address + length:
                raise OSError(f"injected fault at {address:#x}")

    def faulty(self, address: int, length: int) -> bool:
        return any(address < end and start < address + length for start, end in self.faults)


# ---------------------------------------------------------------------------------------------
# The testbench.


class DmaTB:
    """Drives both engines' streams every cycle, records every handshake, models the DRAM."""

    def __init__(self, dut: object, cfg: DmaTopConfig, rng: np.random.Generator, *, stall: bool):
        self.dut = dut
        self.cfg = cfg
        self.rng = rng
        self.stall = stall
        self._check_ports()
        self.model: NDArray[np.uint8] = rng.integers(0, 256, RAM_SIZE, dtype=np.uint8)
        self._src_pause = pauses(rng, 0.3) if stall else None
        self._sink_pause = pauses(rng, 0.3) if stall else None
        # queues the cycle loop drives, and everything it saw
        self.rd_cmd_q: collections.deque[int] = collections.deque()
        self.wr_cmd_q: collections.deque[int] = collections.deque()
        self.wr_row_q: collections.deque[int] = collections.deque()
        self.rd_rows: list[tuple[bytes, bool, int]] = []  # data, last, cycle
        self.rd_dones: list[int] = []
        self.wr_dones: list[int] = []
        self.rd_cmd_cycles: list[int] = []
        self.wr_row_cycles: list[int] = []
        self.ar: list[tuple[int, int, int, int, int]] = []  # cycle, addr, beats, size, burst
        self.aw: list[tuple[int, int, int, int, int]] = []
        self.rd_bytes = 0  # the model of the byte counters
        self.wr_bytes = 0
        self.cycle = 0
        self._progress = Event()

    def _check_ports(self) -> None:
        """The config travels by environment; make sure it describes the Verilog we got."""
        got = len(self.dut.rd_row__payload)
        want = 8 * self.cfg.row_width + 1
        if got != want or len(self.dut.m_axi__wstrb) != self.cfg.data_bytes:
            raise AssertionError(f"ports do not match {self.cfg}: rd_row__payload is {got} bits")

    async def start(self) -> None:
        """Hold reset, create the AXI models, start the clock, release reset.

        The cocotbext-axi models are created while reset is already high: one that sees reset
        rise cancels its coroutines with the deprecated ``task.kill()``.
        """

        dut = self.dut
        dut.rst.value = 1
        for name in ("rd_cmd", "wr_cmd", "wr_row"):
            getattr(dut, f"{name}__valid").value = 0
            getattr(dut, f"{name}__payload").value = 0
        for name in ("rd_row", "rd_done", "wr_done"):
            getattr(dut, f"{name}__ready").value = 0
        await Timer(1, unit="ns")
        self.ram = FaultyRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=RAM_SIZE)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        ram_channels = (
            self.ram.write_if.aw_channel,
            self.ram.write_if.w_channel,
            self.ram.write_if.b_channel,
            self.ram.read_if.ar_channel,
            self.ram.read_if.r_channel,
        )
        if not self.stall:
            # AxiRam's default queue limit of 2 makes its write side drop ready one cycle in
            # four (its Python process drains the queue a timestep late): a DRAM that never
            # stalls needs deeper queues.
            for ch in ram_channels:
                ch.queue_occupancy_limit = 16
        else:
            lite_channels = (
                self.axil.write_if.aw_channel,
                self.axil.write_if.w_channel,
                self.axil.write_if.b_channel,
                self.axil.read_if.ar_channel,
                self.axil.read_if.r_channel,
            )
            for ch in (*ram_channels, *lite_channels):
                ch.set_pause_generator(pauses(self.rng, float(self.rng.uniform(0.2, 0.5))))
        for model in (self.ram.read_if, self.ram.write_if, self.axil.read_if, self.axil.write_if):
            model.log.setLevel(logging.WARNING)  # one INFO line per burst otherwise
        self.ram.write(0, self.model.tobytes())
        start_clock(dut)
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        cocotb.start_soon(self._cycle_loop())
        cocotb.start_soon(self._watch_protocol())

    async def _watch_protocol(self) -> None:
        """An AXI rule broken anywhere fails the test at once, by name."""
        await RisingEdge(self.dut.protocol_error)
        await ReadOnly()  # the code settles after the sticky error bit's edge
        rule = Rule(self.dut.protocol_code.value.to_unsigned())
        raise AssertionError(f"AXI protocol violation: {rule.description}")

    # -- the one per-cycle coroutine -------------------------------------------------------

    async def _cycle_loop(self) -> None:
        dut = self.dut
        src, sink = self._src_pause, self._sink_pause
        rd_cmd_on = wr_cmd_on = wr_row_on = False
        row_bits = 8 * self.cfg.row_width
        while True:
            if not rd_cmd_on and self.rd_cmd_q and not (src and next(src)):
                dut.rd_cmd__payload.value = self.rd_cmd_q[0]
                rd_cmd_on = True
            if not wr_cmd_on and self.wr_cmd_q and not (src and next(src)):
                dut.wr_cmd__payload.value = self.wr_cmd_q[0]
                wr_cmd_on = True
            if not wr_row_on and self.wr_row_q and not (src and next(src)):
                dut.wr_row__payload.value = self.wr_row_q[0]
                wr_row_on = True
            dut.rd_cmd__valid.value = int(rd_cmd_on)
            dut.wr_cmd__valid.value = int(wr_cmd_on)
            dut.wr_row__valid.value = int(wr_row_on)
            rd_row_ready = not (sink and next(sink))
            dut.rd_row__ready.value = int(rd_row_ready)
            dut.rd_done__ready.value = int(not (sink and next(sink)))
            dut.wr_done__ready.value = int(not (sink and next(sink)))
            await ReadOnly()
            rd_cmd_fire = rd_cmd_on and bool(dut.rd_cmd__ready.value)
            wr_cmd_fire = wr_cmd_on and bool(dut.wr_cmd__ready.value)
            wr_row_fire = wr_row_on and bool(dut.wr_row__ready.value)
            progress = False
            if rd_row_ready and dut.rd_row__valid.value:
                word = dut.rd_row__payload.value
                if not word.is_resolvable:
                    raise AssertionError(f"rd_row payload has X/Z bits in cycle {self.cycle}")
                value = word.to_unsigned()
                data = (value & ((1 << row_bits) - 1)).to_bytes(self.cfg.row_width, "little")
                self.rd_rows.append((data, bool(value >> row_bits), self.cycle))
            if dut.rd_done__ready.value and dut.rd_done__valid.value:
                self.rd_dones.append(dut.rd_done__payload.value.to_unsigned())
                progress = True
            if dut.wr_done__ready.value and dut.wr_done__valid.value:
                self.wr_dones.append(dut.wr_done__payload.value.to_unsigned())
                progress = True
            for prefix, log in (("ar", self.ar), ("aw", self.aw)):
                if (
                    getattr(dut, f"m_axi__{prefix}valid").value
                    and getattr(dut, f"m_axi__{prefix}ready").value
                ):
                    log.append(
                        (
                            self.cycle,
                            getattr(dut, f"m_axi__{prefix}addr").value.to_unsigned(),
                            getattr(dut, f"m_axi__{prefix}len").value.to_unsigned() + 1,
                            getattr(dut, f"m_axi__{prefix}size").value.to_unsigned(),
                            getattr(dut, f"m_axi__{prefix}burst").value.to_unsigned(),
                        )
                    )
            await RisingEdge(dut.clk)
            if rd_cmd_fire:
                self.rd_cmd_q.popleft()
                self.rd_cmd_cycles.append(self.cycle)
                rd_cmd_on = False
            if wr_cmd_fire:
                self.wr_cmd_q.popleft()
                wr_cmd_on = False
            if wr_row_fire:
                self.wr_row_q.popleft()
                self.wr_row_cycles.append(self.cycle)
                wr_row_on = False
            self.cycle += 1
            if progress:
                self._progress.set()

    async def wait_dones(self, reads: int, writes: int) -> None:
        """Wait until ``reads`` read and ``writes`` write ``done`` beats have arrived in total."""
        while len(self.rd_dones) < reads or len(self.wr_dones) < writes:
            self._progress.clear()
            await self._progress.wait()
        for _ in range(4):  # nothing more may follow: no stray beats
            await RisingEdge(self.dut.clk)
        assert len(self.rd_dones) == reads, f"{len(self.rd_dones)} read dones, want {reads}"
        assert len(self.wr_dones) == writes, f"{len(self.wr_dones)} write dones, want {writes}"
        assert not self.dut.rd_busy.value and not self.dut.wr_busy.value, "busy after done"

    # -- transactions ----------------------------------------------------------------------

    def beats(self, cmd: Cmd, addr: int) -> list[tuple[int, int]]:
        """``(address, valid bytes)`` of the W-aligned beats of the row at ``addr``."""
        w = self.cfg.data_bytes
        return [(addr + j, min(w, cmd.row_bytes - j)) for j in range(0, cmd.row_bytes, w)]

    def expected_rows(self, cmd: Cmd) -> tuple[list[bytes], bool]:
        """Rows as the reader must deliver them (DRAM bytes, zeros up to the row width) and
        whether a bus error is due: a beat the RAM fails to read carries zeros."""
        w, rows, bus = self.cfg.data_bytes, [], False
        for addr in cmd.row_addrs():
            row = bytearray(self.cfg.row_width)
            for start, n in self.beats(cmd, addr):
                if self.ram.faulty(start, w):
                    bus = True
                else:
                    row[start - addr : start - addr + n] = self.model[start : start + n].tobytes()
            rows.append(bytes(row))
        return rows, bus

    async def run(
        self,
        reads: Sequence[Cmd] = (),
        writes: Sequence[tuple[Cmd, list[bytes]]] = (),
    ) -> list[list[bytes]]:
        """Queue all commands at once, wait for every ``done``, check everything.

        Reads and writes run concurrently, so they must not touch the same bytes. Returns the
        rows each read command delivered.
        """
        cfg = self.cfg
        n_rd, n_wr = len(self.rd_dones), len(self.wr_dones)
        first_row = len(self.rd_rows)
        ar_from, aw_from = len(self.ar), len(self.aw)
        want_reads = []
        for cmd in reads:
            align, window = expected_error(cmd, cfg)
            ok = not (align or window)
            want, bus = self.expected_rows(cmd) if ok else ([], False)
            want_reads.append((cmd, ok, want, bus, align, window))
            self.rd_cmd_q.append(cmd.pack())
        want_writes = []
        for cmd, rows in writes:
            assert len(rows) == cmd.rows, "the engine must supply exactly `rows` row beats"
            align, window = expected_error(cmd, cfg)
            want_writes.append((cmd, rows, not (align or window), align, window))
            self.wr_cmd_q.append(cmd.pack())
            self.wr_row_q.extend(int.from_bytes(row, "little") for row in rows)
        await self.wait_dones(n_rd + len(reads), n_wr + len(writes))

        # ---- read results ----
        got_rows = self.rd_rows[first_row:]
        out: list[list[bytes]] = []
        pos = 0
        for i, (cmd, ok, want, bus, align, window) in enumerate(want_reads):
            done = self.rd_dones[n_rd + i]
            rows = got_rows[pos : pos + len(want)]
            pos += len(want)
            got = [data for data, _, _ in rows]
            lasts = [last for _, last, _ in rows]
            if ok:
                assert done == error_bits(bus=bus), f"read {i} {cmd}: done {done:#b}, bus {bus}"
                assert lasts == [False] * (cmd.rows - 1) + [True], f"read {i}: last {lasts}"
                for r, (g, wnt) in enumerate(zip(got, want, strict=True)):
                    assert g == wnt, f"read {i} {cmd} row {r}: got {g.hex()} want {wnt.hex()}"
                self.rd_bytes += cmd.rows * cmd.row_bytes
            else:
                assert done == error_bits(align, window), f"read {i} {cmd}: done {done:#b}"
            out.append(got)
        assert pos == len(got_rows), f"{len(got_rows)} rows arrived, {pos} expected"

        # ---- write results: apply to the model, compare the whole RAM ----
        for i, (cmd, rows, ok, align, window) in enumerate(want_writes):
            done = self.wr_dones[n_wr + i]
            if not ok:
                assert done == error_bits(align, window), f"write {i} {cmd}: done {done:#b}"
                continue
            bus = False
            for addr, row in zip(cmd.row_addrs(), rows, strict=True):
                for start, n in self.beats(cmd, addr):  # a failed beat writes nothing
                    if self.ram.faulty(start, n):
                        bus = True
                    else:
                        data = np.frombuffer(row[start - addr : start - addr + n], np.uint8)
                        self.model[start : start + n] = data
            assert done == error_bits(bus=bus), f"write {i} {cmd}: done {done:#b}, bus {bus}"
            self.wr_bytes += cmd.rows * cmd.row_bytes
        if writes:
            self.check_ram()

        # ---- every burst, exactly as planned; nothing for rejected commands ----
        lw = cfg.data_bytes.bit_length() - 1
        for name, log, cmds in (
            ("AR", self.ar[ar_from:], [c for c, ok, *_ in want_reads if ok]),
            ("AW", self.aw[aw_from:], [c for c, _, ok, *_ in want_writes if ok]),
        ):
            want_bursts = [b for c in cmds for b in plan_bursts(c, cfg.data_bytes)]
            got_bursts = [(addr, beats) for _, addr, beats, _, _ in log]
            assert got_bursts == want_bursts, (
                f"{name} bursts {got_bursts[:6]}... != plan {want_bursts[:6]}..."
            )
            for _, addr, beats, size, burst in log:
                assert size == lw and burst == 1, f"{name} size {size} burst {burst}"
                assert addr // PAGE == (addr + beats * cfg.data_bytes - 1) // PAGE, "4 KB crossed"
        return out

    def check_ram(self) -> None:
        got = np.frombuffer(self.ram.read(0, RAM_SIZE), dtype=np.uint8)
        bad = np.flatnonzero(got != self.model)
        assert bad.size == 0, (
            f"DRAM differs from the model at {bad.size} bytes, first {[hex(a) for a in bad[:8]]}"
        )

    # -- random commands -------------------------------------------------------------------

    def random_cmd(
        self,
        lo: int,
        hi: int,
        *,
        write: bool,
        rows_max: int = 20,
        rows: int | None = None,
        row_bytes: int | None = None,
    ) -> Cmd:
        """A legal command inside ``[lo, hi)``; a third of them straddle a 4 KB boundary.

        ``rows`` and ``row_bytes`` fix the shape (the stride shrinks if it must); otherwise
        they are random, rows up to ``rows_max``.
        """
        rng, w, width = self.rng, self.cfg.data_bytes, self.cfg.row_width
        row_bytes = row_bytes or int(rng.integers(1, width + 1))
        fixed = rows is not None
        rows = rows or int(rng.integers(1, rows_max + 1))
        row_span = -(-row_bytes // w) * w
        if write:  # rows must not overlap: their order in DRAM would be ambiguous
            stride = row_span + w * int(rng.choice([0, 0, 1, 5, PAGE // w]))
        else:
            stride = w * int(rng.choice([0, 1, row_span // w, 7, PAGE // w + 1]))
        if (rows - 1) * stride + row_bytes > hi - lo:
            if fixed:
                stride = row_span
            while (rows - 1) * stride + row_bytes > hi - lo and rows > 1:
                rows = rows // 2
        span = (rows - 1) * stride + row_bytes
        first, top = -(-lo // w) * w, (hi - span) // w * w
        assert first <= top, f"{rows} rows of {row_bytes} bytes do not fit [{lo:#x}, {hi:#x})"
        pages = [p * PAGE for p in range(lo // PAGE + 1, hi // PAGE + 1) if lo < p * PAGE < hi]
        if pages and rng.random() < 0.35 and row_bytes > 1:
            # put some row across a page boundary: start a few beats before one
            addr = int(rng.choice(pages)) - w * int(rng.integers(1, max(2, row_span // w + 1)))
            addr -= stride * int(rng.integers(0, rows))
            addr = min(max(addr, first), top)
        else:
            addr = int(rng.integers(first // w, top // w + 1)) * w
        return Cmd(addr, stride, rows, row_bytes)

    def junk_rows(self, cmd: Cmd, rows: Sequence[bytes] | None = None) -> list[bytes]:
        """Row beats for a write: given data (or random) up to ``row_bytes``, then junk that the
        writer must never write (WSTRB)."""
        width = self.cfg.row_width
        out = []
        for r in range(cmd.rows):
            row = bytearray(self.rng.integers(0, 256, width, dtype=np.uint8).tobytes())
            if rows is not None:
                row[: cmd.row_bytes] = rows[r][: cmd.row_bytes]
            out.append(bytes(row))
        return out

    async def read_counters(self) -> tuple[int, int]:
        rd = await self.axil.read(5 * 4, 4)
        wr = await self.axil.read(6 * 4, 4)
        assert rd.resp == AxiResp.OKAY and wr.resp == AxiResp.OKAY
        return int.from_bytes(rd.data, "little"), int.from_bytes(wr.data, "little")


def _setup(dut: object) -> tuple[DmaTopConfig, np.random.Generator]:
    cfg = DmaTopConfig.from_env()
    seed = cocotb.RANDOM_SEED
    dut._log.info(f"config {cfg.to_json()}, test seed {seed}")
    return cfg, np.random.default_rng(seed)


def _halves(cfg: DmaTopConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    mid = cfg.dram_base + cfg.dram_size // 2
    return (cfg.dram_base, mid), (mid, cfg.dram_base + cfg.dram_size)


# ---------------------------------------------------------------------------------------------
# cocotb half.

if cocotb is not None:

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    @cocotb.parametrize(stall=[False, True])
    async def random_copies(dut: object, stall: bool) -> None:
        """Random 2-D reads written back elsewhere, reads and writes running concurrently.

        Batch i reads from one half of the window and writes batch i-1's rows into the other
        half (with junk above ``row_bytes``); the halves swap every batch, so every byte read
        later may have been written earlier, and concurrent reads and writes never overlap.
        """
        cfg, rng = _setup(dut)
        tb = DmaTB(dut, cfg, rng, stall=stall)
        await tb.start()
        halves = _halves(cfg)
        pending: list[tuple[Cmd, list[bytes]]] = []
        for batch in range(16):
            src, dst = halves[batch % 2], halves[1 - batch % 2]
            reads = [tb.random_cmd(*src, write=False) for _ in range(int(rng.integers(1, 4)))]
            writes = []
            for cmd, rows in pending:  # the same rows, to a new place in the other half
                new = tb.random_cmd(*dst, write=True, rows=cmd.rows, row_bytes=cmd.row_bytes)
                writes.append((new, tb.junk_rows(new, rows)))
            # a write never lands where a later write of the same batch goes: one at a time
            results = await tb.run(reads, writes[:1])
            for w in writes[1:]:
                await tb.run([], [w])
            pending = list(zip(reads, results, strict=True))
        rd, wr = await tb.read_counters()
        assert (rd, wr) == (tb.rd_bytes, tb.wr_bytes), f"byte counters {rd}, {wr}"
        dut._log.info(f"{tb.cycle} cycles, {len(tb.rd_rows)} rows read, {rd} + {wr} bytes moved")

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    @cocotb.parametrize(stall=[False, True])
    async def back_to_back_commands(dut: object, stall: bool) -> None:
        """Many small reads and writes queued at once: order, rows and done beats exact."""
        cfg, rng = _setup(dut)
        tb = DmaTB(dut, cfg, rng, stall=stall)
        await tb.start()
        (lo, mid), (_, hi) = _halves(cfg)
        reads = [tb.random_cmd(lo, mid, write=False, rows_max=3) for _ in range(12)]
        # writes to disjoint slices of the upper half, so their order does not matter
        writes = []
        slice_bytes = (hi - mid) // 12 // PAGE * PAGE or (hi - mid) // 12
        for i in range(12):
            lo_i, hi_i = mid + i * slice_bytes, mid + (i + 1) * slice_bytes
            cmd = tb.random_cmd(lo_i, hi_i, write=True, rows_max=3)
            writes.append((cmd, tb.junk_rows(cmd)))
        await tb.run(reads, writes)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def throughput(dut: object) -> None:
        """No stalls anywhere: one row per cycle for rows <= W, one beat per cycle otherwise.

        Exact only with enough bursts in flight to cover AxiRam's round trip
        (``FULL_RATE_OUTSTANDING``); with fewer, the rates are logged, data still checked.
        """
        cfg, rng = _setup(dut)
        tb = DmaTB(dut, cfg, rng, stall=False)
        await tb.start()
        w, width = cfg.data_bytes, cfg.row_width
        base = cfg.dram_base
        narrow = min(w, width)
        full_rate = cfg.max_outstanding >= FULL_RATE_OUTSTANDING

        def check_rate(what: str, cycles: list[int], beats: int) -> None:
            rate = len(cycles) / (cycles[-1] - cycles[0] + 1)
            dut._log.info(f"{what}: {rate:.2f} rows/cycle ({beats} beats/row)")
            if full_rate:
                gaps = {b - a for a, b in itertools.pairwise(cycles)}
                assert gaps == {beats}, f"{what}: rows in cycles {cycles}, {beats} apart wanted"

        cases = [(24, narrow), (8, width)] if width > w else [(24, narrow)]
        for rows, row_bytes in cases:
            beats = -(-row_bytes // w)
            cmd = Cmd(base, beats * w, rows, row_bytes)
            start_rows, start_ar = len(tb.rd_rows), len(tb.ar)
            await tb.run([cmd])
            check_rate(
                f"read {rows} x {row_bytes} B", [c for *_, c in tb.rd_rows[start_rows:]], beats
            )
            latency = tb.ar[start_ar][0] - tb.rd_cmd_cycles[-1]
            assert latency == CMD_TO_ADDR, f"command to first AR: {latency} cycles"

            dst = Cmd(base + 0x4000, cmd.stride, rows, row_bytes)
            start_rows = len(tb.wr_row_cycles)
            await tb.run([], [(dst, tb.junk_rows(dst))])
            check_rate(f"write {rows} x {row_bytes} B", tb.wr_row_cycles[start_rows:], beats)

        # single-row commands back to back: the command boundary costs nothing either
        cmds = [Cmd(base + 0x100 * i, w, 1, narrow) for i in range(12)]
        start_rows = len(tb.rd_rows)
        await tb.run(cmds)
        check_rate("12 single-row reads", [c for *_, c in tb.rd_rows[start_rows:]], 1)
        wcmds = [Cmd(base + 0x8000 + 0x100 * i, w, 1, narrow) for i in range(12)]
        start_rows = len(tb.wr_row_cycles)
        await tb.run([], [(c, tb.junk_rows(c)) for c in wcmds])
        check_rate("12 single-row writes", tb.wr_row_cycles[start_rows:], 1)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    @cocotb.parametrize(stall=[False, True])
    async def rejected_commands(dut: object, stall: bool) -> None:
        """Misaligned and out-of-window commands: only a done beat with the right bit, no
        AR/AW, rows of a rejected write dropped; each is followed by a command that works."""
        cfg, rng = _setup(dut)
        tb = DmaTB(dut, cfg, rng, stall=stall)
        await tb.start()
        w, width = cfg.data_bytes, cfg.row_width
        lo, hi = cfg.dram_base, cfg.dram_base + cfg.dram_size
        bad = [
            Cmd(lo + w + 1, w, 2, 1),  # address not a multiple of W
            Cmd(lo, w + 2, 2, 1),  # stride not a multiple of W
            Cmd(lo, w, 2, 0),  # no bytes
            Cmd(lo, 2 * width, 2, width + 1),  # row longer than the SRAM row
            Cmd(lo, w, 0, 1),  # no rows
            Cmd(lo - w, w, 1, 1),  # starts below the window
            Cmd(hi, w, 1, 1),  # starts at the end of the window
            Cmd(hi - 4 * w, 4 * w, 2, 1),  # second row past the window
            Cmd(hi - w, w, 1, width + 1),  # too long, and past the window if width > w
            Cmd((1 << 32) - w, 0, 3, 1),  # far outside
            Cmd(lo, 1 << 31, 3, 1),  # stride wraps 32 bits: still outside
        ]
        for cmd in bad:
            assert expected_error(cmd, cfg) != (False, False), cmd
        reads: list[Cmd] = []
        writes: list[tuple[Cmd, list[bytes]]] = []
        (rlo, rhi), (wlo, whi) = _halves(cfg)
        for cmd in bad:
            good_r = tb.random_cmd(rlo, rhi, write=False, rows_max=3)
            good_w = tb.random_cmd(wlo + (whi - wlo) // 2, whi, write=True, rows_max=3)
            reads += [cmd, good_r]
            writes += [(cmd, tb.junk_rows(cmd)), (good_w, tb.junk_rows(good_w))]
        # the good writes may overlap each other: run the writes one pair at a time
        await tb.run(reads, writes[:2])
        for i in range(2, len(writes), 2):
            await tb.run([], writes[i : i + 2])

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    @cocotb.parametrize(stall=[False, True])
    async def bus_errors(dut: object, stall: bool) -> None:
        """SLVERR on some beats: `bus` set, every row still delivered or written, no hang;
        the next commands are exact."""
        cfg, rng = _setup(dut)
        tb = DmaTB(dut, cfg, rng, stall=stall)
        await tb.start()
        w, width = cfg.data_bytes, cfg.row_width
        base = cfg.dram_base
        stride = -(-width // w) * w
        fault = base + stride * 2  # the third row's first beat
        tb.ram.faults.append((fault, fault + 1))
        read = Cmd(base, stride, 5, width)
        write = Cmd(base + 0x1000 - 2 * stride, stride, 5, width)  # row 2 starts on the page
        tb.ram.faults.append((base + 0x1000, base + 0x1000 + 1))
        rows = await tb.run([read], [(write, tb.junk_rows(write))])
        assert len(rows[0]) == 5
        # and right after, the same commands elsewhere are clean and exact
        for _ in range(3):
            r = tb.random_cmd(base + 0x2000, base + 0x5000, write=False)
            wc = tb.random_cmd(base + 0x6000, base + 0x9000, write=True)
            await tb.run([r], [(wc, tb.junk_rows(wc))])
        # faults in every row of a multi-row command, then none
        tb.ram.faults = [(base + 0x2000, base + 0x3000)]
        r = Cmd(base + 0x2000 - stride, stride, 4, width)
        wc = Cmd(base + 0x2000 - stride, stride, 3, width)
        await tb.run([r])
        await tb.run([], [(wc, tb.junk_rows(wc))])
        tb.ram.faults = []
        clean = Cmd(base + 0x8000, stride, 3, width)
        await tb.run([r], [(clean, tb.junk_rows(clean))])

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    @cocotb.parametrize(stall=[False, True])
    async def register_port(dut: object, stall: bool) -> None:
        """AXI4-Lite: byte-strobed scratch registers, read-only words, SLVERR when unmapped,
        many concurrent accesses (AW/W in any order when the channels pause)."""
        cfg, rng = _setup(dut)
        tb = DmaTB(dut, cfg, rng, stall=stall)
        await tb.start()
        axil = tb.axil
        words = [int(x) for x in rng.integers(0, 1 << 32, 4, dtype=np.uint64)]
        for i, value in enumerate(words):
            resp = await axil.write(4 * i, value.to_bytes(4, "little"))
            assert resp.resp == AxiResp.OKAY
        for i, value in enumerate(words):
            got = await axil.read(4 * i, 4)
            assert got.resp == AxiResp.OKAY
            assert int.from_bytes(got.data, "little") == value, f"scratch {i}"
        # single bytes and half words: WSTRB selects the bytes
        model = bytearray(b"".join(v.to_bytes(4, "little") for v in words))
        for _ in range(12):
            addr = int(rng.integers(0, 16))
            length = int(rng.choice([1, 2])) if addr % 4 < 3 else 1
            length = min(length, 4 - addr % 4)
            data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            assert (await axil.write(addr, data)).resp == AxiResp.OKAY
            model[addr : addr + length] = data
        got = await axil.read(0, 16)
        assert bytes(got.data) == bytes(model), f"{got.data.hex()} != {model.hex()}"
        ident = await axil.read(16, 4)
        assert int.from_bytes(ident.data, "little") == ID_MAGIC
        assert (await axil.write(16, b"\0\0\0\0")).resp == AxiResp.OKAY  # read-only: ignored
        assert int.from_bytes((await axil.read(16, 4)).data, "little") == ID_MAGIC
        top = 1 << AXIL_ADDR_BITS
        for addr in (32, 64, top - 4):
            got = await axil.read(addr, 4)
            assert got.resp == AxiResp.SLVERR and bytes(got.data) == bytes(4), f"read {addr}"
            assert (await axil.write(addr, b"\1\2\3\4")).resp == AxiResp.SLVERR, f"write {addr}"
        # everything at once: the master pipelines AW, W and AR; results come back in order
        values = [int(x) for x in rng.integers(0, 1 << 32, 16, dtype=np.uint64)]
        writes = [
            cocotb.start_soon(axil.write(4 * (i % 4), v.to_bytes(4, "little")))
            for i, v in enumerate(values)
        ]
        reads = [cocotb.start_soon(axil.read(16, 4)) for _ in range(8)]
        for task in writes:
            assert (await task).resp == AxiResp.OKAY
        for task in reads:
            assert int.from_bytes((await task).data, "little") == ID_MAGIC
        got = await axil.read(0, 16)
        last = values[-4:]
        assert bytes(got.data) == b"".join(v.to_bytes(4, "little") for v in last)
        cycles = [int.from_bytes((await axil.read(28, 4)).data, "little") for _ in range(2)]
        assert cycles[1] > cycles[0], f"cycle counter {cycles}"


# ---------------------------------------------------------------------------------------------
# pytest half: one build per (simulator, configuration), all cocotb tests above in it.

#: W = R; a row width that is no multiple of (and wider than) the bus; and a wide bus with
#: only two bursts in flight (the in-flight FIFO is full most of the time).
CONFIGS = [
    DmaTopConfig(data_bytes=4, row_width=4),
    DmaTopConfig(data_bytes=8, row_width=20),
    DmaTopConfig(data_bytes=16, row_width=40, max_outstanding=2),
]


@pytest.mark.sim
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_dma(sim: str, cfg: DmaTopConfig) -> None:
    run_regression(SimTarget(sim, Top.DMA, cfg), __name__)


# ---------------------------------------------------------------------------------------------
# A fast Amaranth-simulator check of the register port's handshake orders and latencies.


def test_register_port_orders_and_latency() -> None:
    """AW before W, W before AW, both together; B and R held by the host; exact latencies."""
    from amaranth.sim import Simulator

    from cdm_qta.hw.axil import AxiLiteRegisterPort

    dut = AxiLiteRegisterPort(addr_bits=8)
    bus = dut.axil
    regs: dict[int, int] = {}
    junk = 0xDEAD_BEEF  # reg_rdata outside the cycle after reg_re: sampling it is a bug

    async def register_file(ctx: object) -> None:
        async for _, _, we, re, addr, wdata in ctx.tick().sample(
            dut.reg_we, dut.reg_re, dut.reg_addr, dut.reg_wdata
        ):
            if we:
                regs[addr] = wdata
            ctx.set(dut.reg_rdata, regs.get(addr, 0) if re else junk)

    async def write(ctx: object, addr: int, data: int, aw_at: int, w_at: int, b_at: int) -> int:
        """Present AW from cycle ``aw_at``, W from ``w_at``, BREADY from ``b_at``; return the
        cycle of the B handshake."""
        aw_done = w_done = False
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wdata, data)
        ctx.set(bus.wstrb, 0xF)
        for cycle in range(32):
            ctx.set(bus.awvalid, not aw_done and cycle >= aw_at)
            ctx.set(bus.wvalid, not w_done and cycle >= w_at)
            ctx.set(bus.bready, cycle >= b_at)
            aw_fire = ctx.get(bus.awvalid) and ctx.get(bus.awready)
            w_fire = ctx.get(bus.wvalid) and ctx.get(bus.wready)
            b_fire = ctx.get(bus.bvalid) and ctx.get(bus.bready)
            b_okay = ctx.get(bus.bresp) == 0
            await ctx.tick()
            aw_done, w_done = aw_done or aw_fire, w_done or w_fire
            if b_fire:
                assert b_okay, "a write answered SLVERR"
                ctx.set(bus.bready, 0)
                return cycle
        raise AssertionError("no write response")

    async def read(ctx: object, addr: int, r_at: int) -> tuple[int, int]:
        """AR in cycle 0, RREADY from ``r_at``; return the R handshake cycle and the data."""
        ar_done = False
        ctx.set(bus.araddr, addr)
        for cycle in range(32):
            ctx.set(bus.arvalid, not ar_done)
            ctx.set(bus.rready, cycle >= r_at)
            ar_fire = ctx.get(bus.arvalid) and ctx.get(bus.arready)
            r_fire = ctx.get(bus.rvalid) and ctx.get(bus.rready)
            data = ctx.get(bus.rdata)
            await ctx.tick()
            ar_done = ar_done or ar_fire
            if r_fire:
                ctx.set(bus.rready, 0)
                return cycle, data
        raise AssertionError("no read response")

    async def bench(ctx: object) -> None:
        await ctx.tick()
        # both together: reg_we in cycle 1, BVALID in cycle 2
        assert await write(ctx, 0x04, 0x1111_1111, 0, 0, 0) == 2
        assert await write(ctx, 0x08, 0x2222_2222, 0, 3, 0) == 5  # AW first
        assert await write(ctx, 0x0C, 0x3333_3333, 4, 0, 0) == 6  # W first
        assert await write(ctx, 0x10, 0x4444_4444, 0, 0, 7) == 7  # host holds BREADY low
        # AR in cycle 0: reg_re in cycle 1, RVALID in cycle 3 (held while RREADY is low)
        assert await read(ctx, 0x08, 0) == (3, 0x2222_2222)
        assert await read(ctx, 0x0C, 9) == (9, 0x3333_3333)
        assert await read(ctx, 0x11, 0) == (3, 0x4444_4444)  # byte address -> word 4
        assert regs == {1: 0x1111_1111, 2: 0x2222_2222, 3: 0x3333_3333, 4: 0x4444_4444}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(register_file)
    sim.add_testbench(bench)
    sim.run()
