"""The golden back end: instruction streams executed in NumPy with the ISA's exact semantics.

It executes the *same* words as the hardware on SRAM models of the configured sizes. Its three
engines run as separate in-order queues, each instruction in two steps (start: take tokens and
read operands; finish: write results and push tokens), and a scheduler picks which enabled
step happens next: round-robin by default, or random (``scheduler=random.Random(seed)``) to
explore adversarial engine speeds. Because reads and writes are separated in time, an
unsynchronised pair of instructions gives a wrong result in some interleaving, and a program
that cannot finish is reported exactly as the hardware reports it (the ``deadlock`` error bit,
its waiting instructions dropped) instead of hanging. Cycles are not simulated:
the timing counters are the cycle model's prediction, labelled ``timing="model"``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from cdm_qta.golden.gemm import gemm
from cdm_qta.hw import isa
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import Buffer, Compute, Engine, Instruction, Load, Store
from cdm_qta.hw.regs import COUNTERS, ERRORS

from .backend import Backend, RunStats
from .cycle_model import DeadlockError, predict
from .dram import DramImage

__all__ = ["DeadlockError", "GoldenBackend"]


def _window_check(cfg: AcceleratorConfig, addr: int, nbytes: int) -> None:
    if nbytes < 0 or addr < cfg.dram_base or addr + nbytes > cfg.dram_base + cfg.dram_size:
        raise ValueError(
            f"[{addr:#x}, {addr + nbytes:#x}) is outside the DRAM window "
            f"[{cfg.dram_base:#x}, {cfg.dram_base + cfg.dram_size:#x})"
        )


class _Dram:
    """A DRAM window that only allocates up to the highest byte ever touched (1 GB is lazy)."""

    def __init__(self, cfg: AcceleratorConfig) -> None:
        self.cfg = cfg
        self.mem = np.zeros(0, dtype=np.uint8)

    def _grow(self, end: int) -> None:
        need = end - self.cfg.dram_base
        if need > self.mem.size:
            grown = np.zeros(max(need, 2 * self.mem.size), dtype=np.uint8)
            grown = grown[: min(grown.size, self.cfg.dram_size)]
            grown[: self.mem.size] = self.mem
            self.mem = grown

    def write(self, addr: int, data: NDArray[np.uint8]) -> None:
        _window_check(self.cfg, addr, data.size)
        self._grow(addr + data.size)
        off = addr - self.cfg.dram_base
        self.mem[off : off + data.size] = data

    def read(self, addr: int, nbytes: int) -> NDArray[np.uint8]:
        _window_check(self.cfg, addr, nbytes)
        off = addr - self.cfg.dram_base
        out = np.zeros(nbytes, dtype=np.uint8)
        have = max(0, min(nbytes, self.mem.size - off))
        out[:have] = self.mem[off : off + have]
        return out

    def read_rows(self, addr: int, rows: int, row_bytes: int, stride: int) -> NDArray[np.uint8]:
        """``rows`` rows of ``row_bytes`` bytes, ``stride`` apart (one strided DMA)."""
        if rows == 0:
            return np.zeros((0, row_bytes), dtype=np.uint8)
        if stride < row_bytes:  # overlapping or repeated rows: no single reshape
            return np.stack([self.read(addr + r * stride, row_bytes) for r in range(rows)])
        span = self.read(addr, (rows - 1) * stride + row_bytes)
        span = np.concatenate([span, np.zeros(stride - row_bytes, dtype=np.uint8)])
        return span.reshape(rows, stride)[:, :row_bytes].copy()

    def write_rows(self, addr: int, data: NDArray[np.uint8], stride: int) -> None:
        """Write each row of ``data`` at ``addr + r * stride``, later rows last."""
        rows, row_bytes = data.shape
        if rows == 0:
            return
        if stride < row_bytes:
            for r in range(rows):
                self.write(addr + r * stride, data[r])
            return
        n = (rows - 1) * stride + row_bytes
        span = np.concatenate([self.read(addr, n), np.zeros(stride - row_bytes, np.uint8)])
        view = span.reshape(rows, stride)
        view[:, :row_bytes] = data
        self.write(addr, view.reshape(-1)[:n])


@dataclasses.dataclass
class _Slot:
    """One engine's in-flight instruction: the effect to apply when it finishes."""

    insn: Instruction
    finish: Callable[[], None]
    pushes: tuple[isa.TokenQueue, ...]


class GoldenBackend(Backend):
    """NumPy execution of instruction streams with the ISA's exact semantics and error rules.

    Parameters
    ----------
    cfg : AcceleratorConfig
    scheduler : random.Random, optional
        Choose the next engine step at random (adversarial engine speeds); default round-robin.
    predict_cycles : bool
        Fill the timing counters from :func:`cdm_qta.sw.cycle_model.predict` (``timing="model"``).
    sram_zeroed : bool
        Start the SRAMs at zero, as the simulated RTL does; by default they start with a fixed
        non-zero pattern, so a program that reads rows it never loaded shows it in its results.

    State carries over from run to run as in the hardware: SRAM contents and the token
    counters (a deadlock's flush clears the counters).
    """

    name = "golden"

    def __init__(
        self,
        cfg: AcceleratorConfig,
        *,
        scheduler: random.Random | None = None,
        predict_cycles: bool = True,
        sram_zeroed: bool = False,
    ) -> None:
        super().__init__(cfg)
        self._rng = scheduler
        self._predict = predict_cycles
        n = cfg.n
        self.dram = _Dram(cfg)
        fill = (0, 0, 0) if sram_zeroed else (0x5A, 0xA5, 0x7E7E7E7E)
        self.input = np.full((cfg.input_rows, n), fill[0], dtype=np.uint8)
        self.weight = np.full((cfg.weight_rows, n), fill[1], dtype=np.uint8)
        self.output = np.full((cfg.output_rows, n), fill[2], dtype=np.int64)
        self.tokens = dict.fromkeys(isa.TOKEN_QUEUES, 0)
        self.faults: list[tuple[int, int]] = []

    def set_faults(self, ranges: Sequence[tuple[int, int]]) -> None:
        """DRAM byte ranges ``[start, end)`` whose bursts fail (SLVERR or DECERR: the DRAM model
        answers every beat of such a burst with an error, zero data, and writes nothing)."""
        self.faults = [(int(lo), int(hi)) for lo, hi in ranges]

    def _faulty_bursts(self, x: Load | Store) -> list[tuple[int, int, int]]:
        """``(row, first byte, end byte)`` of every burst of ``x`` that touches a fault range.

        Bursts as the DMA cuts them (:mod:`cdm_qta.hw.dma`): one per row, split at 4 KB
        boundaries and after 256 beats; the DRAM judges a burst by all its beats' bytes.
        """
        if not self.faults:
            return []
        w = self.cfg.dram_bus_bytes
        bad = []
        for r in range(x.rows):
            start = addr = x.dram_addr + r * x.stride
            left = x.row_bytes
            while left > 0:
                beats = min(-(-left // w), (4096 - addr % 4096) // w, 256)
                end = addr + beats * w
                if any(addr < hi and lo < end for lo, hi in self.faults):
                    bad.append((r, addr - start, min(end - start, x.row_bytes)))
                addr, left = end, left - beats * w
        return bad

    def load(self, image: DramImage) -> None:
        self.dram.write(image.base, np.asarray(image.data, dtype=np.uint8))

    def read(self, addr: int, nbytes: int) -> bytes:
        return self.dram.read(addr, nbytes).tobytes()

    # -- validation: the ISA's error rules ---------------------------------------------------

    def _dma_error(self, x: Load | Store, row_limit: int, buf_rows: int) -> tuple[str, ...]:
        """The STATUS bits the hardware sets for a LOAD/STORE (none: it executes).

        The engine checks its SRAM rows first and sends nothing to the DMA if they are wrong;
        the DMA then checks alignment and the DRAM window independently of each other.
        """
        engine_range = "load_range" if isinstance(x, Load) else "store_range"
        if x.rows < 1 or x.sram_row + x.rows > buf_rows:
            return (engine_range,)
        w = self.cfg.dram_bus_bytes
        errs = []
        if x.dram_addr % w or x.stride % w or not 1 <= x.row_bytes <= row_limit:
            errs.append("dma_align")
        lo = x.dram_addr
        hi = x.dram_addr + (x.rows - 1) * x.stride + x.row_bytes
        if lo < self.cfg.dram_base or hi > self.cfg.dram_base + self.cfg.dram_size:
            errs.append("dma_window")
        return tuple(errs)

    def _compute_error(self, x: Compute) -> tuple[str, ...]:
        n = self.cfg.n
        if x.k < 1 or x.m < 1 or not 1 <= x.c <= n:
            return ("compute_range",)
        ws = x.dataflow == Dataflow.WS
        if (ws and x.k > n) or (not ws and x.m > n):
            return ("compute_range",)
        a_rows = x.m if ws else x.k
        if (
            x.a_row + a_rows > self.cfg.input_rows
            or x.b_row + x.k > self.cfg.weight_rows
            or x.out_row + x.m > self.cfg.output_rows
        ):
            return ("compute_range",)
        return ()

    # -- one instruction, split into start (read) and finish (write) ------------------------

    def _start(self, x: Instruction) -> tuple[Callable[[], None], tuple[str, ...]]:
        """Read the operands now; return the write-back to run when the instruction finishes."""
        if isinstance(x, Load):
            rows_total = self.cfg.input_rows if x.buffer == Buffer.INPUT else self.cfg.weight_rows
            err = self._dma_error(x, self.cfg.input_row_bytes, rows_total)
            if err:
                return _nothing, err
            # The DMA delivers whole SRAM rows: bytes at and above row_bytes are zero.
            data = np.zeros((x.rows, self.cfg.input_row_bytes), dtype=np.uint8)
            data[:, : x.row_bytes] = self.dram.read_rows(x.dram_addr, x.rows, x.row_bytes, x.stride)
            faulty = self._faulty_bursts(x)
            for r, lo, hi in faulty:
                data[r, lo:hi] = 0  # a failed burst's beats carry zeros
            target = self.input if x.buffer == Buffer.INPUT else self.weight

            def finish_load() -> None:
                target[x.sram_row : x.sram_row + x.rows] = data
                self._read_bytes += x.rows * x.row_bytes

            return finish_load, ("dma_read_bus",) if faulty else ()
        if isinstance(x, Store):
            row_bytes = self.cfg.output_row_bytes
            err = self._dma_error(x, row_bytes, self.cfg.output_rows)
            if err:
                return _nothing, err
            rows = self.output[x.sram_row : x.sram_row + x.rows].astype("<i4")
            raw = rows.view(np.uint8).reshape(x.rows, row_bytes)[:, : x.row_bytes].copy()
            faulty = self._faulty_bursts(x)

            def finish_store() -> None:
                keep = {
                    r: self.dram.read(x.dram_addr + r * x.stride, x.row_bytes) for r, *_ in faulty
                }
                self.dram.write_rows(x.dram_addr, raw, x.stride)
                for r, lo, hi in faulty:  # a failed burst writes nothing
                    addr = x.dram_addr + r * x.stride
                    self.dram.write(addr + lo, keep[r][lo:hi])
                self._write_bytes += x.rows * x.row_bytes

            return finish_store, ("dma_write_bus",) if faulty else ()
        if isinstance(x, Compute):
            err = self._compute_error(x)
            if err:
                return _nothing, err
            if x.dataflow == Dataflow.WS:
                a = self.input[x.a_row : x.a_row + x.m, : x.k]
            else:
                a = self.input[x.a_row : x.a_row + x.k, : x.m].T
            b = self.weight[x.b_row : x.b_row + x.k, : x.c]
            a8, b8 = a.view(np.int8), b.view(np.int8)
            old = self.output[x.out_row : x.out_row + x.m, : x.c] if x.accumulate else None
            result = gemm(a8, b8, acc_bits=self.cfg.array.acc_bits, c=old)

            def finish_compute() -> None:
                self.output[x.out_row : x.out_row + x.m, : x.c] = result
                self._macs += x.m * x.k * x.c

            return finish_compute, ()
        raise AssertionError(f"no engine executes {x}")

    # -- the engine-queue simulation ---------------------------------------------------------

    def run(self, program: Sequence[Instruction | int]) -> RunStats:
        self._macs = self._read_bytes = self._write_bytes = 0
        errors = dict.fromkeys(ERRORS, 0)
        log: list[str] = []

        def flag(kind: str, idx: int, what: object) -> None:
            errors[kind] += 1
            log.append(f"{kind}: instruction {idx} ({what})")

        items: list[tuple[int, Instruction | str]] = []
        for idx, item in enumerate(program):
            if isinstance(item, Instruction):
                items.append((idx, item))
                continue
            try:
                items.append((idx, isa.decode(int(item))))
            except isa.IllegalInstruction as exc:
                items.append((idx, str(exc)))  # the dispatcher drops it, flagged, in its turn
        retired = self._execute(items, flag)
        counters: dict[str, int | None] = dict.fromkeys(COUNTERS)
        if self._predict:
            try:
                counters.update(predict(self.cfg, program).counters)
            except DeadlockError:
                pass  # the functional run reported the deadlock; there is no timing to give
        # What the functional run counted itself is exact; only timing comes from the model.
        counters.update(
            macs=self._macs,
            insns_retired=retired,
            dma_read_bytes=self._read_bytes,
            dma_write_bytes=self._write_bytes,
        )
        return RunStats(
            backend=self.name,
            counters=counters,
            timing="model" if self._predict else "none",
            errors=errors,
            error_log=tuple(log),
        )

    def _execute(
        self,
        items: list[tuple[int, Instruction | str]],
        flag: Callable[[str, int, object], None],
    ) -> int:
        """Dispatch, start and finish every instruction; the number that retired.

        As in the hardware, the dispatcher hands out instructions in program order into one
        queue per engine of ``cfg.engine_queue_depth`` entries (a FENCE waits until every
        engine is idle); an engine starts its queue's head once its tokens are there. When
        nothing can move with instructions left, the program is deadlocked: like the hardware,
        it is flagged ``deadlock`` and the instructions that never started are dropped. Which
        instructions retire does not depend on the order of the steps (each enabled step stays
        enabled until taken), so the result equals the hardware's.
        """
        depth = self.cfg.engine_queue_depth
        tokens = self.tokens
        queues: dict[Engine, list[tuple[int, Instruction]]] = {e: [] for e in Engine}
        inflight: dict[Engine, _Slot | None] = dict.fromkeys(Engine)
        cursor = retired = turn = 0
        while True:
            # Enabled steps: dispatch the next word; finish an engine's instruction; or start
            # an engine's queue head whose tokens are there.
            steps: list[tuple[str, Engine | None]] = []
            if cursor < len(items):
                x = items[cursor][1]
                eng = isa.engine_of(x) if isinstance(x, Instruction) else None
                if isinstance(x, str) or (eng is not None and len(queues[eng]) < depth):
                    steps.append(("dispatch", eng))
                elif eng is None and not any(queues.values()) and not any(inflight.values()):
                    steps.append(("dispatch", None))  # a FENCE, once everything is done
            for e in Engine:
                if inflight[e] is not None:
                    steps.append(("finish", e))
                elif queues[e] and all(tokens[q] > 0 for q in isa.pops(queues[e][0][1])):
                    steps.append(("start", e))
            if not steps:
                if cursor < len(items) or any(queues.values()):
                    self._deadlock(items, cursor, queues, tokens, flag)
                    self.tokens = dict.fromkeys(isa.TOKEN_QUEUES, 0)  # the flush clears them
                return retired
            if self._rng is not None:
                kind, eng = self._rng.choice(steps)
            else:
                kind, eng = steps[turn % len(steps)]  # round-robin over what can move
                turn += 1
            if kind == "dispatch":
                idx, x = items[cursor]
                cursor += 1
                if isinstance(x, str):  # an undecodable word: dropped and retired here
                    retired += 1
                    flag("illegal_insn", idx, x)
                else:
                    if x.illegal_flags:  # flagged when dispatched, as the hardware does
                        flag("illegal_insn", idx, x)
                    if eng is None:  # a FENCE: retired here
                        retired += 1
                    else:
                        queues[eng].append((idx, x))
            elif kind == "start":
                assert eng is not None
                idx, x = queues[eng].pop(0)
                for q in isa.pops(x):
                    tokens[q] -= 1
                if x.illegal_flags:  # skipped, as the ISA says; its legal tokens still flow
                    inflight[eng] = _Slot(x, _nothing, isa.pushes(x))
                    continue
                finish, errs = self._start(x)
                for err in errs:
                    flag(err, idx, x)
                inflight[eng] = _Slot(x, finish, isa.pushes(x))
            else:
                assert eng is not None
                slot = inflight[eng]
                assert slot is not None
                slot.finish()
                for q in slot.pushes:
                    tokens[q] += 1
                inflight[eng] = None
                retired += 1

    @staticmethod
    def _deadlock(
        items: list[tuple[int, Instruction | str]],
        cursor: int,
        queues: dict[Engine, list[tuple[int, Instruction]]],
        tokens: dict[isa.TokenQueue, int],
        flag: Callable[[str, int, object], None],
    ) -> None:
        heads = {e.label: f"#{q[0][0]} {q[0][1]}" for e, q in queues.items() if q}
        counts = {str(q): v for q, v in tokens.items()}
        waiting = items[cursor][0] if cursor < len(items) else len(items)
        flag(
            "deadlock",
            waiting,
            f"every engine waits for a token; heads {heads}, token counters {counts}; "
            f"{len(items) - cursor + sum(map(len, queues.values()))} instructions dropped",
        )


def _nothing() -> None:
    """The write-back of a skipped instruction."""
