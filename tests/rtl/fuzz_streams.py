"""Random instruction streams, legal and not, whose outcome is nevertheless determined.

A stream is a handful of independent *blocks* (LOAD A, LOAD B, COMPUTE, STORE on SRAM rows and
DRAM bytes of their own, ordered by the two tokens a block needs), merged in a random order
any in-order machine could run, with random extra dependencies, and then broken on purpose
with small probabilities: fields out of range, misaligned or out-of-window addresses, illegal
token flags, dropped pushes and orphan pops (deadlocks), illegal words, FENCEs, and bus faults
on a block's DRAM bytes. None of the breakages creates a data race, so the golden back end and
the RTL must agree on every DRAM byte, every error bit and every exact counter, whatever the
engines' speeds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import (
    TOKEN_FLAGS,
    Buffer,
    Compute,
    Fence,
    Instruction,
    Load,
    Store,
    legal_flags,
)

__all__ = ["SCRATCH", "Stream", "random_stream"]

#: DRAM bytes at the end of the data area that only filler instructions touch.
SCRATCH = 256


@dataclasses.dataclass
class Stream:
    """A program, the DRAM bytes to load before it, and what was done to it."""

    words: list[int]
    image: bytes  #: DRAM contents from address 0 (the data area)
    faults: list[tuple[int, int]]
    breaks: list[str]  #: the breakages applied, for the report

    @property
    def illegal(self) -> bool:
        return bool(self.breaks)


def _round(x: int, to: int) -> int:
    return -(-x // to) * to


def _blocks(
    cfg: AcceleratorConfig, rng: np.random.Generator, data_bytes: int
) -> tuple[list[list[Instruction]], list[tuple[int, int]]]:
    """Per engine, the instructions of up to 6 blocks, and each block's DRAM spans.

    The last row of every buffer and the last :data:`SCRATCH` DRAM bytes stay free for the
    filler instructions of :func:`_merge` and the orphan pop of :func:`random_stream`."""
    n, bus = cfg.n, cfg.dram_bus_bytes
    rows = {"in": 0, "w": 0, "out": 0}
    dram = 0
    per_engine: list[list[Instruction]] = [[], [], []]
    spans = []
    for _ in range(int(rng.integers(1, 7))):
        mode = Dataflow(int(rng.integers(2)))
        k = int(rng.integers(1, (n if mode == Dataflow.WS else 2 * n) + 1))
        m = int(rng.integers(1, (2 * n if mode == Dataflow.WS else n) + 1))
        c = int(rng.integers(1, n + 1))
        in_rows, in_bytes = (m, k) if mode == Dataflow.WS else (k, m)
        a_stride, b_stride, c_stride = _round(in_bytes, bus), _round(c, bus), _round(4 * c, bus)
        need = in_rows * a_stride + k * b_stride + m * c_stride
        if (
            rows["in"] + in_rows > cfg.input_rows - 1
            or rows["w"] + k > cfg.weight_rows - 1
            or rows["out"] + m > cfg.output_rows - 1
            or dram + need > data_bytes - SCRATCH
        ):
            break
        a_addr, b_addr, c_addr = dram, dram + in_rows * a_stride, dram + need - m * c_stride
        spans.append((dram, dram + need))
        dram += _round(need, 64)
        per_engine[0] += [
            Load(buffer=Buffer.INPUT, sram_row=rows["in"], rows=in_rows, row_bytes=in_bytes,
                 dram_addr=a_addr, stride=a_stride),
            Load(buffer=Buffer.WEIGHT, sram_row=rows["w"], rows=k, row_bytes=c,
                 dram_addr=b_addr, stride=b_stride, push_next=True),
        ]  # fmt: skip
        per_engine[1].append(
            Compute(dataflow=int(mode), accumulate=bool(rng.random() < 0.2), a_row=rows["in"],
                    b_row=rows["w"], out_row=rows["out"], k=k, m=m, c=c, pop_prev=True,
                    push_next=True)
        )  # fmt: skip
        per_engine[2].append(
            Store(sram_row=rows["out"], rows=m, row_bytes=4 * c, dram_addr=c_addr,
                  stride=c_stride, pop_prev=True)
        )  # fmt: skip
        rows["in"] += in_rows
        rows["w"] += k
        rows["out"] += m
    return per_engine, spans


def _merge(
    cfg: AcceleratorConfig, per_engine: list[list[Instruction]], rng: np.random.Generator
) -> list[Instruction]:
    """Interleave the engines' lists so that every pop has its push earlier, with random
    extra COMPUTE->LOAD and STORE->COMPUTE tokens that keep the stream balanced."""
    extra_c2l = extra_s2c = 0
    heads = [0, 0, 0]
    tokens = {"l2c": 0, "c2s": 0, "c2l": 0, "s2c": 0}
    out: list[Instruction] = []
    while any(heads[e] < len(per_engine[e]) for e in range(3)):
        ready = []
        for e in range(3):
            if heads[e] == len(per_engine[e]):
                continue
            x = per_engine[e][heads[e]]
            need = {0: [], 1: ["l2c"] if x.pop_prev else [], 2: ["c2s"]}[e]
            if all(tokens[q] > 0 for q in need):
                ready.append(e)
        e = ready[int(rng.integers(len(ready)))]
        x = per_engine[e][heads[e]]
        heads[e] += 1
        if e == 1:
            tokens["l2c"] -= x.pop_prev
            tokens["c2s"] += x.push_next
            if tokens["s2c"] and rng.random() < 0.5:  # wait for an earlier STORE
                x, tokens["s2c"] = dataclasses.replace(x, pop_next=True), tokens["s2c"] - 1
            if rng.random() < 0.3:
                x, extra_c2l = dataclasses.replace(x, push_prev=True), extra_c2l + 1
                tokens["c2l"] += 1
        elif e == 0:
            tokens["l2c"] += x.push_next
            if tokens["c2l"] and rng.random() < 0.5:
                x, tokens["c2l"] = dataclasses.replace(x, pop_next=True), tokens["c2l"] - 1
        else:
            tokens["c2s"] -= 1
            if rng.random() < 0.3:
                x, extra_s2c = dataclasses.replace(x, push_prev=True), extra_s2c + 1
                tokens["s2c"] += 1
        out.append(x)
    # Leftover extra tokens would start the next stream with credit: take them here, on the
    # rows no block uses.
    for _ in range(tokens["c2l"]):
        out.append(Load(rows=1, row_bytes=1, sram_row=cfg.input_rows - 1, pop_next=True))
    for _ in range(tokens["s2c"]):
        last = cfg.input_rows - 1
        out.append(Compute(k=1, m=1, c=1, a_row=last, b_row=cfg.weight_rows - 1,
                           out_row=cfg.output_rows - 1, pop_next=True))  # fmt: skip
    return out


def random_stream(
    cfg: AcceleratorConfig, rng: np.random.Generator, *, data_bytes: int, p_break: float = 0.3
) -> Stream:
    """One stream (see the module docstring); ``p_break`` is the chance of each breakage."""
    n, bus = cfg.n, cfg.dram_bus_bytes
    per_engine, spans = _blocks(cfg, rng, data_bytes)
    program = _merge(cfg, per_engine, rng)
    scratch = data_bytes - SCRATCH
    breaks: list[str] = []
    faults: list[tuple[int, int]] = []

    def pick() -> int:
        return int(rng.integers(len(program)))

    if program and rng.random() < p_break:  # a field out of range: skipped, tokens flow
        i = pick()
        x = program[i]
        if isinstance(x, Load):
            x = dataclasses.replace(x, sram_row=cfg.input_rows + int(rng.integers(4)))
        elif isinstance(x, Store):
            x = dataclasses.replace(x, row_bytes=4 * n + 1 + int(rng.integers(4)))
        else:
            x = dataclasses.replace(x, c=0 if rng.random() < 0.5 else n + 1)
        program[i] = x
        breaks.append("range")
    if program and rng.random() < p_break:  # DRAM address: misaligned or out of the window
        i = pick()
        x = program[i]
        if isinstance(x, Load | Store):
            bad = x.dram_addr + 1 if bus > 1 and rng.random() < 0.5 else cfg.dram_size + bus
            program[i] = dataclasses.replace(x, dram_addr=bad)
            breaks.append("address")
    if program and rng.random() < p_break:  # a flag the engine does not have
        i = pick()
        x = program[i]
        illegal = sorted(set(TOKEN_FLAGS) - legal_flags(x.OPCODE))
        if illegal:
            program[i] = dataclasses.replace(x, **{illegal[int(rng.integers(len(illegal)))]: True})
            breaks.append("flag")
    if program and rng.random() < p_break / 2:  # a push dropped: its consumer waits forever
        pushers = [i for i, x in enumerate(program) if x.push_next or x.push_prev]
        if pushers:
            i = pushers[int(rng.integers(len(pushers)))]
            program[i] = dataclasses.replace(program[i], push_next=False, push_prev=False)
            breaks.append("dropped_push")
    if rng.random() < p_break / 2:  # an orphan pop (on rows and bytes no block touches)
        orphan = Store(sram_row=cfg.output_rows - 1, rows=1, row_bytes=4, dram_addr=scratch,
                       pop_prev=True)  # fmt: skip
        program.insert(pick() if program else 0, orphan)
        breaks.append("orphan_pop")
    if spans and rng.random() < p_break:  # a bus fault on one block's bytes
        lo, hi = spans[int(rng.integers(len(spans)))]
        at = int(rng.integers(lo, hi))
        faults.append((at, at + int(rng.integers(1, 64))))
        breaks.append("bus_fault")
    words = [x.encode() for x in program]
    if rng.random() < p_break:  # illegal words: unknown opcodes, unused bits set
        for _ in range(int(rng.integers(1, 3))):
            bad = int(rng.choice([0, 5, 6, 7])) | int(rng.integers(1 << 20)) << 8
            words.insert(int(rng.integers(len(words) + 1)), bad)
        breaks.append("illegal_word")
    if rng.random() < p_break:
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(len(words) + 1)), Fence().encode())
    words.append(Fence().encode())
    image = rng.integers(0, 256, data_bytes, dtype=np.uint8).tobytes()
    return Stream(words=words, image=image, faults=faults, breaks=breaks)
