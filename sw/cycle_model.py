"""Predicted cycles of an instruction stream: a documented estimate, not the exact model (yet).

Why it exists: ``--dataflow auto`` needs to rank WS against OS before anything runs, the
compiler orders its instruction list by predicted start time (so the in-order dispatcher feeds
the engines in the order they will want instructions), and the golden back end reports a
clearly labelled cycle estimate where the RTL reports counters.

The model is a discrete-event simulation of the three engines, each in program order, with the
dependency tokens exactly as the ISA defines them (a pop waits for the matching push):

* **LOAD / STORE**: ``rows * ceil(row_bytes / W) + DMA_SETUP_CYCLES`` cycles, one bus beat of
  W bytes per cycle per direction (reads and writes are separate AXI channels, so LOAD and
  STORE overlap). A token is pushed when the transfer is done.
* **COMPUTE**: array-core timing from :func:`cdm_qta.hw.timing.schedule` over the program's
  compute tiles, as if they were presented back to back. Tile ``i`` finishes accepting beats at
  ``e_i = max(e_{i-1} + occ_i, ready_i + alone_i)``: ``occ_i`` is its back-to-back occupancy
  from the schedule (``max(m, k)`` for WS, ``max(k, N)`` for OS in steady state), ``alone_i`` its
  cost when the array is idle (``k + m`` WS, ``k`` OS) and ``ready_i`` the time its tokens
  arrive. Its results are in the output buffer ``drain_i`` (the schedule's last output minus
  last accept, ``2N + 1``) cycles later; that is when it pushes.
* **FENCE**: everything before it retires first.

Not modelled: the instruction queue depth, DRAM latency and bank conflicts, AXI burst
splitting at 4 KB, and the SRAM read latency between buffer and array. The total is the cycle in
which the last instruction is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cdm_qta.hw import isa
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import Compute, Engine, Fence, Instruction, Load, Store
from cdm_qta.hw.regs import COUNTERS
from cdm_qta.hw.timing import OsTile, WsTile, schedule

__all__ = [
    "DMA_SETUP_CYCLES",
    "DeadlockError",
    "Prediction",
    "dma_cycles",
    "predict",
]

#: Fixed cost of one DMA instruction (command issue and the first address phase).
DMA_SETUP_CYCLES = 2


class DeadlockError(RuntimeError):
    """No engine can make progress: some pop waits for a push that can never happen."""


def dma_cycles(cfg: AcceleratorConfig, rows: int, row_bytes: int) -> int:
    """Estimated cycles of one LOAD/STORE: one W-byte beat per cycle per row, plus setup."""
    return rows * -(-max(row_bytes, 0) // cfg.dram_bus_bytes) + DMA_SETUP_CYCLES


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Result of :func:`predict`. Cycle numbers count from 0; ``cycles`` is the total.

    ``counters`` has every name of :data:`cdm_qta.hw.regs.COUNTERS`, predicted as the hardware
    would count it; ``None`` where this model does not predict it (time an engine waits for the
    bus or the array).
    """

    counters: dict[str, int | None]
    array_n: int
    start: tuple[int, ...]  #: per instruction: cycle it starts (FENCE: when it retires)
    done: tuple[int, ...]  #: per instruction: cycle its effects are complete (tokens pushed)

    @property
    def cycles(self) -> int:
        return int(self.counters["cycles"] or 0)

    @property
    def macs(self) -> int:
        return int(self.counters["macs"] or 0)

    @property
    def busy(self) -> dict[str, int]:
        """Cycles each engine is busy, by engine label."""
        return {e.label: int(self.counters[f"{e.label}_busy"] or 0) for e in Engine}

    @property
    def wait_token(self) -> dict[str, int]:
        """Cycles each engine's next instruction waits for a dependency token."""
        return {e.label: int(self.counters[f"{e.label}_wait_token"] or 0) for e in Engine}

    @property
    def utilization(self) -> float:
        """MACs / (cycles * N^2): the fraction of the array's peak this program reaches."""
        return self.macs / (self.cycles * self.array_n**2) if self.cycles else 0.0

    @property
    def compute_busy(self) -> float:
        """Fraction of all cycles in which the array accepts beats."""
        return self.busy["compute"] / self.cycles if self.cycles else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "cycles": self.cycles,
            "macs": self.macs,
            "utilization": round(self.utilization, 4),
            "compute_busy": round(self.compute_busy, 4),
            "busy": self.busy,
            "wait_token": self.wait_token,
        }


def _tile(insn: Compute, n: int) -> WsTile | OsTile | None:
    """The core tile of a COMPUTE, or ``None`` if its shape is illegal (the engine skips it)."""
    if insn.k < 1 or insn.m < 1 or insn.c < 1 or insn.c > n:
        return None
    if insn.dataflow == Dataflow.WS:
        return WsTile(insn.k, insn.m) if insn.k <= n else None
    return OsTile(insn.k) if insn.m <= n else None


def predict(cfg: AcceleratorConfig, program: Sequence[Instruction | int]) -> Prediction:
    """Simulate the engines' timing for ``program``; :class:`DeadlockError` if it cannot finish.

    Token flags that are illegal for an engine are ignored (the hardware flags them as errors),
    undecodable words take no time.
    """
    n = cfg.n
    insns: list[Instruction | None] = []
    for item in program:
        if isinstance(item, Instruction):
            insns.append(item)
        else:
            try:
                insns.append(isa.decode(int(item)))
            except isa.IllegalInstruction:
                insns.append(None)

    # Back-to-back array timing of the legal compute tiles, in compute program order.
    comp = [
        (i, t)
        for i, x in enumerate(insns)
        if isinstance(x, Compute) and (t := _tile(x, n)) is not None
    ]
    timing = schedule([t for _, t in comp], n) if comp else []
    occ: dict[int, int] = {}
    alone: dict[int, int] = {}
    drain: dict[int, int] = {}
    prev_last: int | None = None
    for (i, tile), tt in zip(comp, timing, strict=True):
        last = max(tt.a_accepts + tt.b_accepts)
        alone[i] = tile.k + tile.m if isinstance(tile, WsTile) else tile.k
        occ[i] = alone[i] if prev_last is None else last - prev_last
        drain[i] = tt.last_output - last
        prev_last = last

    start = [0] * len(insns)
    done = [0] * len(insns)
    busy = dict.fromkeys(Engine, 0)
    wait_token = dict.fromkeys(Engine, 0)
    macs = rd = wr = retired = 0
    barrier = 0
    seg: list[int] = []

    def run_segment(indices: list[int], t0: int) -> int:
        nonlocal macs, rd, wr, retired
        queues: dict[Engine, list[int]] = {e: [] for e in Engine}
        for i in indices:
            x = insns[i]
            eng = isa.engine_of(x) if x is not None else None
            if eng is None:
                start[i] = done[i] = t0
            else:
                queues[eng].append(i)
        heads = dict.fromkeys(Engine, 0)
        free = dict.fromkeys(Engine, t0)  # LOAD/STORE: engine idle; COMPUTE: end of accepts
        stream_end: int | None = None
        pushed: dict[isa.TokenQueue, list[int]] = {q: [] for q in isa.TOKEN_QUEUES}
        popped = dict.fromkeys(isa.TOKEN_QUEUES, 0)
        end = t0
        while any(heads[e] < len(queues[e]) for e in Engine):
            progressed = False
            for eng in Engine:
                while heads[eng] < len(queues[eng]):
                    i = queues[eng][heads[eng]]
                    x = insns[i]
                    assert x is not None
                    wanted = isa.pops(x)
                    if any(popped[q] >= len(pushed[q]) for q in wanted):
                        break
                    ready = t0
                    for q in wanted:
                        ready = max(ready, pushed[q][popped[q]])
                        popped[q] += 1
                    s = max(ready, free[eng])
                    if isinstance(x, Compute):
                        if i not in occ:  # an illegal shape: skipped in one cycle
                            e = d_ = s + 1
                        else:
                            prev = stream_end if stream_end is not None else -(10**18)
                            e = max(prev + occ[i], ready + alone[i])
                            d_ = e + drain[i]
                            stream_end = e
                            macs += x.m * x.k * x.c
                    else:
                        assert isinstance(x, Load | Store)
                        d_ = e = s + dma_cycles(cfg, x.rows, x.row_bytes)
                        if isinstance(x, Load):
                            rd += x.rows * x.row_bytes
                        else:
                            wr += x.rows * x.row_bytes
                    wait_token[eng] += max(0, ready - free[eng])
                    busy[eng] += e - s
                    free[eng] = e
                    start[i], done[i] = s, d_
                    end = max(end, d_)
                    for q in isa.pushes(x):
                        pushed[q].append(d_)
                    heads[eng] += 1
                    retired += 1
                    progressed = True
            if not progressed:
                waiting = {
                    e.label: queues[e][heads[e]] for e in Engine if heads[e] < len(queues[e])
                }
                raise DeadlockError(
                    f"no engine can proceed; engine -> blocked instruction index: {waiting}"
                )
        return end

    for i, x in enumerate(insns):
        if x is None or isinstance(x, Fence):
            retired += 1  # the dispatcher retires FENCEs and drops undecodable words itself
        if isinstance(x, Fence):
            barrier = run_segment(seg, barrier)
            seg = []
            start[i] = done[i] = barrier
        else:
            seg.append(i)
    barrier = run_segment(seg, barrier)
    counters: dict[str, int | None] = dict.fromkeys(COUNTERS)
    counters.update(
        cycles=barrier,
        macs=macs,
        insns_retired=retired,
        dma_read_bytes=rd,
        dma_write_bytes=wr,
    )
    for e in Engine:
        counters[f"{e.label}_busy"] = busy[e]
        counters[f"{e.label}_wait_token"] = wait_token[e]
    return Prediction(counters=counters, array_n=n, start=tuple(start), done=tuple(done))
