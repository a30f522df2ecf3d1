"""Run instruction streams: one :class:`Backend` interface, a NumPy golden implementation.

The interface is deliberately small so the RTL back end (``cdm_qta.sw.rtl_backend``: the
generated Verilog under cocotb, filling :class:`RunStats` from the hardware counters) and the
golden model are interchangeable::

    backend.load(image)           # DramImage -> DRAM, bytes outside the image untouched
    stats = backend.run(program)  # instructions (or raw 128-bit words), ends when all retired
    raw = backend.read(addr, n)   # bytes back from DRAM
    backend.close()               # release simulators etc. (also via ``with backend:``)

:func:`run_gemm` is the one-call path: compile, lay out, load, run, read back.

The golden back end executes the *same* words with the ISA's semantics on SRAM models of the
configured sizes. Its three engines run as separate in-order queues, each instruction in two
steps (start: take tokens and read operands; finish: write results and push tokens), and a
scheduler picks which enabled step happens next: round-robin by default, or random
(``scheduler=random.Random(seed)``) to explore adversarial engine speeds. Because reads and
writes are separated in time, an unsynchronised pair of instructions gives a wrong result in
some interleaving, and a program that cannot finish raises :class:`DeadlockError` instead of
hanging. Cycles are not simulated: ``RunStats.cycles`` is the cycle model's prediction,
labelled ``cycles_source="model"``.
"""

from __future__ import annotations

import abc
import dataclasses
import random
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from cdm_qta.golden.gemm import gemm
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import (
    Buffer,
    Compute,
    Fence,
    IllegalInstruction,
    Instruction,
    Load,
    Store,
    decode,
)
from cdm_qta.hw.regs import ERRORS

from .compiler import GemmProgram, choose_dataflow, compile_gemm
from .cycle_model import ENGINES, DeadlockError, engine_of, predict
from .dram import DramImage

__all__ = [
    "ERROR_KINDS",
    "Backend",
    "DeadlockError",
    "GoldenBackend",
    "RunStats",
    "compile_for",
    "execute",
    "run_gemm",
]

#: Error bits a back end reports: the hardware's STATUS bits (:data:`cdm_qta.hw.regs.ERRORS`),
#: counted per instruction by the golden model, sticky bits on the RTL back end.
ERROR_KINDS: tuple[str, ...] = ERRORS


@dataclasses.dataclass(frozen=True)
class RunStats:
    """What one :meth:`Backend.run` did.

    ``cycles`` and the per-engine ``busy``/``stall`` counters come from the hardware counters on
    the RTL back end (``cycles_source="hardware"``) and from the cycle model on the golden one
    (``"model"``); ``None`` where nothing provides them. ``insns_retired`` counts every
    dispatched instruction that retired, FENCEs and error-skipped ones included; ``macs`` only
    the executed COMPUTEs (``m * k * c`` each).
    """

    backend: str
    cycles: int | None
    cycles_source: str
    macs: int
    busy: dict[str, int | None]
    stall: dict[str, int | None]
    insns_retired: int
    dma_read_bytes: int
    dma_write_bytes: int
    errors: dict[str, int]
    error_log: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(self.errors.values())

    def utilization(self, array_n: int) -> float | None:
        """MACs / (cycles * N^2), or ``None`` without a cycle count."""
        return self.macs / (self.cycles * array_n**2) if self.cycles else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["error_log"] = list(self.error_log)
        return d


class Backend(abc.ABC):
    """Something that can hold a DRAM image and execute instruction streams against it."""

    #: Short name for reports ("golden", "verilator", "icarus").
    name: str = "backend"

    def __init__(self, cfg: AcceleratorConfig) -> None:
        self.cfg = cfg

    @abc.abstractmethod
    def load(self, image: DramImage) -> None:
        """Copy ``image`` into DRAM at ``image.base`` (must lie inside the DRAM window)."""

    @abc.abstractmethod
    def run(self, program: Sequence[Instruction | int]) -> RunStats:
        """Execute ``program`` (typed instructions or 128-bit words) until every one retired."""

    @abc.abstractmethod
    def read(self, addr: int, nbytes: int) -> bytes:
        """Return ``nbytes`` of DRAM from ``addr`` (inside the window)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most back ends hold nothing
        """Release resources (simulator processes, build directories)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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


# Token directions (producer, consumer), as in the cycle model.
_DIRS = ((0, 1), (1, 0), (1, 2), (2, 1))


@dataclasses.dataclass
class _Slot:
    """One engine's in-flight instruction: the effect to apply when it finishes."""

    insn: Instruction
    finish: Callable[[], None]
    pushes: list[tuple[int, int]]


class GoldenBackend(Backend):
    """NumPy execution of instruction streams with the ISA's exact semantics and error rules.

    Parameters
    ----------
    cfg : AcceleratorConfig
    scheduler : random.Random, optional
        Choose the next engine step at random (adversarial engine speeds); default round-robin.
    predict_cycles : bool
        Fill ``RunStats.cycles`` from :func:`cdm_qta.sw.cycle_model.predict` (labelled "model").
    """

    name = "golden"

    def __init__(
        self,
        cfg: AcceleratorConfig,
        *,
        scheduler: random.Random | None = None,
        predict_cycles: bool = True,
    ) -> None:
        super().__init__(cfg)
        self._rng = scheduler
        self._predict = predict_cycles
        n = cfg.n
        self.dram = _Dram(cfg)
        # Unwritten SRAM holds arbitrary bits in hardware; a fixed non-zero pattern makes reads
        # of never-loaded rows visible in the results instead of silently reading zeros.
        self.input = np.full((cfg.input_rows, n), 0x5A, dtype=np.uint8)
        self.weight = np.full((cfg.weight_rows, n), 0xA5, dtype=np.uint8)
        self.output = np.full((cfg.output_rows, n), 0x7E7E7E7E, dtype=np.int64)

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

    def _start(self, x: Instruction, eng: int) -> tuple[Callable[[], None], tuple[str, ...]]:
        """Read the operands now; return the write-back to run when the instruction finishes."""
        n = self.cfg.n
        if isinstance(x, Load):
            rows_total = self.cfg.input_rows if x.buffer == Buffer.INPUT else self.cfg.weight_rows
            err = self._dma_error(x, n, rows_total)
            if err:
                return _nothing, err
            data = self.dram.read_rows(x.dram_addr, x.rows, x.row_bytes, x.stride)
            target = self.input if x.buffer == Buffer.INPUT else self.weight

            def finish_load() -> None:
                target[x.sram_row : x.sram_row + x.rows, : x.row_bytes] = data
                self._read_bytes += x.rows * x.row_bytes

            return finish_load, ()
        if isinstance(x, Store):
            err = self._dma_error(x, 4 * n, self.cfg.output_rows)
            if err:
                return _nothing, err
            rows = self.output[x.sram_row : x.sram_row + x.rows].astype("<i4")
            raw = rows.view(np.uint8).reshape(x.rows, 4 * n)[:, : x.row_bytes].copy()

            def finish_store() -> None:
                self.dram.write_rows(x.dram_addr, raw, x.stride)
                self._write_bytes += x.rows * x.row_bytes

            return finish_store, ()
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
        errors = dict.fromkeys(ERROR_KINDS, 0)
        log: list[str] = []
        retired = 0

        def flag(kind: str, idx: int, what: object) -> None:
            errors[kind] += 1
            log.append(f"{kind}: instruction {idx} ({what})")

        decoded: list[tuple[int, Instruction]] = []
        for idx, item in enumerate(program):
            if isinstance(item, Instruction):
                decoded.append((idx, item))
                continue
            try:
                decoded.append((idx, decode(int(item))))
            except IllegalInstruction as exc:
                flag("illegal_insn", idx, exc)
                retired += 1  # dropped by the dispatcher, counted so every word is accounted for
        # FENCE splits the stream: a segment runs to completion before the next starts.
        segments: list[list[tuple[int, Instruction]]] = [[]]
        for idx, x in decoded:
            if isinstance(x, Fence):
                if x.pop_prev or x.pop_next or x.push_prev or x.push_next:
                    flag("illegal_insn", idx, x)
                segments.append([])
                retired += 1
            else:
                segments[-1].append((idx, x))
        counters = dict.fromkeys(_DIRS, 0)
        for seg in segments:
            retired += self._run_segment(seg, counters, flag)
        pred = None
        if self._predict:
            try:
                pred = predict(self.cfg, program)
            except DeadlockError:  # pragma: no cover - the functional run raised already
                pred = None
        return RunStats(
            backend=self.name,
            cycles=pred.cycles if pred else None,
            cycles_source="model" if pred else "none",
            macs=self._macs,
            busy=dict(pred.busy) if pred else dict.fromkeys(ENGINES),
            stall=dict(pred.stall) if pred else dict.fromkeys(ENGINES),
            insns_retired=retired,
            dma_read_bytes=self._read_bytes,
            dma_write_bytes=self._write_bytes,
            errors=errors,
            error_log=tuple(log),
        )

    def _run_segment(
        self,
        seg: list[tuple[int, Instruction]],
        counters: dict[tuple[int, int], int],
        flag: Callable[[str, int, object], None],
    ) -> int:
        queues: list[list[tuple[int, Instruction]]] = [[], [], []]
        for idx, x in seg:
            eng = engine_of(x)
            assert eng is not None
            queues[eng].append((idx, x))
        heads = [0, 0, 0]
        inflight: list[_Slot | None] = [None, None, None]
        retired = 0
        turn = 0
        while True:
            # Enabled steps: finish an in-flight instruction, or start a head whose pops can go.
            steps: list[tuple[str, int]] = []
            for eng in range(3):
                if inflight[eng] is not None:
                    steps.append(("finish", eng))
                elif heads[eng] < len(queues[eng]):
                    _, x = queues[eng][heads[eng]]
                    pops = _legal_pops(x, eng)
                    if all(counters[d] > 0 for d in pops):
                        steps.append(("start", eng))
            if not steps:
                if any(heads[e] < len(queues[e]) for e in range(3)):
                    blocked = {
                        ENGINES[e]: f"#{queues[e][heads[e]][0]} {queues[e][heads[e]][1]}"
                        for e in range(3)
                        if heads[e] < len(queues[e])
                    }
                    tokens = {f"{ENGINES[p]}->{ENGINES[c]}": v for (p, c), v in counters.items()}
                    raise DeadlockError(
                        f"deadlock: every engine waits for a token; heads {blocked}, "
                        f"token counters {tokens}"
                    )
                return retired
            if self._rng is not None:
                kind, eng = self._rng.choice(steps)
            else:
                kind, eng = min(steps, key=lambda s: (s[1] - turn) % 3)
                turn = (eng + 1) % 3
            if kind == "start":
                idx, x = queues[eng][heads[eng]]
                heads[eng] += 1
                for d in _legal_pops(x, eng):
                    counters[d] -= 1
                pushes = _legal_pushes(x, eng)
                if not _flags_legal(x, eng):
                    flag("illegal_insn", idx, x)
                    inflight[eng] = _Slot(x, _nothing, pushes)
                    continue
                finish, errs = self._start(x, eng)
                for err in errs:
                    flag(err, idx, x)
                inflight[eng] = _Slot(x, finish, pushes)
            else:
                slot = inflight[eng]
                assert slot is not None
                slot.finish()
                for d in slot.pushes:
                    counters[d] += 1
                inflight[eng] = None
                retired += 1


def _nothing() -> None:
    """The write-back of a skipped instruction."""


def _legal_pops(x: Instruction, eng: int) -> list[tuple[int, int]]:
    out = []
    if x.pop_prev and eng > 0:
        out.append((eng - 1, eng))
    if x.pop_next and eng < 2:
        out.append((eng + 1, eng))
    return out


def _legal_pushes(x: Instruction, eng: int) -> list[tuple[int, int]]:
    out = []
    if x.push_prev and eng > 0:
        out.append((eng, eng - 1))
    if x.push_next and eng < 2:
        out.append((eng, eng + 1))
    return out


def _flags_legal(x: Instruction, eng: int) -> bool:
    if eng == 0 and (x.pop_prev or x.push_prev):
        return False
    return not (eng == 2 and (x.pop_next or x.push_next))


def run_gemm(
    backend: Backend,
    cfg: AcceleratorConfig,
    a: NDArray[np.integer],
    b: NDArray[np.integer],
    dataflow: Dataflow | str = "auto",
    trans_a: bool = False,
    trans_b: bool = False,
) -> tuple[NDArray[np.int32], RunStats]:
    """Compile ``op(a) @ op(b)``, place the operands in DRAM, run, and read ``C`` back.

    ``a`` and ``b`` are int8-range integer matrices *as stored*: ``a`` is ``K x M`` when
    ``trans_a`` (the product uses ``a.T``), ``b`` is ``N x K`` when ``trans_b``. ``dataflow`` is
    a :class:`Dataflow` or ``"ws"``, ``"os"``, ``"auto"`` (fewer predicted cycles). The
    result is returned even if the back end reported errors; check ``stats.ok``.
    """
    program = compile_for(cfg, a, b, dataflow, trans_a, trans_b)
    return execute(backend, program, a, b)


def compile_for(
    cfg: AcceleratorConfig,
    a: NDArray[np.integer],
    b: NDArray[np.integer],
    dataflow: Dataflow | str = "auto",
    trans_a: bool = False,
    trans_b: bool = False,
) -> GemmProgram:
    """The program :func:`run_gemm` would run for these operands."""
    sa, sb = np.shape(a), np.shape(b)
    if len(sa) != 2 or len(sb) != 2:
        raise ValueError(f"a and b must be 2-D, not shapes {sa} and {sb}")
    m, k = (sa[1], sa[0]) if trans_a else sa
    k2, n = (sb[1], sb[0]) if trans_b else sb
    if k != k2:
        raise ValueError(
            f"inner dimensions differ: op(a) is {m}x{k}, op(b) is {k2}x{n} "
            f"(trans_a={trans_a}, trans_b={trans_b})"
        )
    if isinstance(dataflow, str):
        key = dataflow.lower()
        if key == "auto":
            return choose_dataflow(cfg, m, k, n, trans_a=trans_a, trans_b=trans_b)[0]
        if key not in ("ws", "os"):
            raise ValueError(f"dataflow must be ws, os or auto, not {dataflow!r}")
        dataflow = Dataflow.WS if key == "ws" else Dataflow.OS
    return compile_gemm(cfg, m, k, n, dataflow=dataflow, trans_a=trans_a, trans_b=trans_b)


def execute(
    backend: Backend, program: GemmProgram, a: NDArray[np.integer], b: NDArray[np.integer]
) -> tuple[NDArray[np.int32], RunStats]:
    """Load ``a``/``b`` with ``program``'s layout, run it on ``backend``, unpack ``C``."""
    if backend.cfg != program.cfg:
        raise ValueError("the back end and the program were built for different configurations")
    lay = program.layout
    backend.load(lay.image(a, b))
    stats = backend.run(program.instructions)
    c = lay.unpack_c(backend.read(lay.c_base, lay.c_bytes))
    return c, stats
