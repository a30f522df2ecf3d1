"""Which instructions of a stream must be ordered, and whether their tokens order them.

Two engines conflict when they touch the same memory and one of them writes: SRAM rows (the
input, weight and output buffers, shared by LOAD, COMPUTE and STORE) and DRAM bytes (a STORE
writes what a later LOAD of a chained GEMM reads). The engines run concurrently, so the only
orders are program order within an engine, the dependency tokens between neighbours
(:data:`cdm_qta.hw.isa.TOKEN_QUEUES`) and FENCE. Orders are tracked as vector clocks: the entry
of engine ``p`` in an instruction's clock is how many of ``p``'s instructions are surely done
before it starts.

* :func:`assign_tokens` turns a sequential program into a concurrent one: each conflict not
  already ordered becomes one token.
* :func:`verify_program` checks any stream (also hand-written or fuzzed ones): tokens balanced,
  no deadlock under an in-order dispatcher, no race on SRAM rows or DRAM bytes, counters never
  beyond :data:`~cdm_qta.hw.isa.TOKEN_MAX`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import (
    TOKEN_FLAGS,
    TOKEN_MAX,
    TOKEN_QUEUES,
    Buffer,
    Compute,
    Engine,
    Fence,
    IllegalInstruction,
    Instruction,
    Load,
    Store,
    TokenQueue,
    decode,
    engine_of,
    pops,
    pushes,
    token_queue,
)

__all__ = ["ProgramError", "ProgramReport", "assign_tokens", "footprint", "verify_program"]

_SPACES = ("input", "weight", "output")
_NO_CLOCK = (0, 0, 0)

Clock = tuple[int, int, int]
Span = tuple[str, int, int, bool]


class ProgramError(ValueError):
    """An instruction stream whose tokens are unbalanced, can deadlock or leave a data race."""


def footprint(cfg: AcceleratorConfig, insn: Instruction) -> list[Span]:
    """SRAM rows an instruction touches: ``(buffer, first row, end row, writes)``.

    A COMPUTE's output rows count as written even without ``accumulate``, and rows are clipped
    to the buffer so that illegal instructions can still be analysed.
    """
    return _footprint(_buffer_rows(cfg), insn)


def _buffer_rows(cfg: AcceleratorConfig) -> tuple[int, int, int]:
    return cfg.input_rows, cfg.weight_rows, cfg.output_rows


def _footprint(sizes: tuple[int, int, int], insn: Instruction) -> list[Span]:
    """:func:`footprint` with the buffers' rows (input, weight, output) given."""
    n_in, n_w, n_out = sizes
    if isinstance(insn, Load):
        if insn.buffer == Buffer.INPUT:
            return [("input", min(insn.sram_row, n_in), min(insn.sram_row + insn.rows, n_in), True)]
        return [("weight", min(insn.sram_row, n_w), min(insn.sram_row + insn.rows, n_w), True)]
    if isinstance(insn, Store):
        lo = insn.sram_row
        return [("output", min(lo, n_out), min(lo + insn.rows, n_out), False)]
    if isinstance(insn, Compute):
        a_count = insn.m if insn.dataflow == Dataflow.WS else insn.k
        a, b, o = insn.a_row, insn.b_row, insn.out_row
        return [
            ("input", min(a, n_in), min(a + a_count, n_in), False),
            ("weight", min(b, n_w), min(b + insn.k, n_w), False),
            ("output", min(o, n_out), min(o + insn.m, n_out), True),
        ]
    return []


@dataclasses.dataclass(frozen=True)
class _Conflict:
    """The latest access of another engine that an instruction must come after."""

    loc: int  #: engine-local index of that access
    space: str  #: what they share, for messages: a buffer and its rows, or DRAM from an address
    lo: int = 0
    hi: int = 0

    @property
    def where(self) -> str:
        if self.space == "DRAM":
            return f"DRAM bytes from {self.lo:#x}"
        return f"the {self.space} buffer rows {self.lo}..{self.hi - 1}"


class _Rows:
    """Per SRAM row and engine: the engine-local index of its last write (if that engine wrote
    the row last) and of its last read since the row's last write; -1 for none. One array per
    buffer (kind, engine, row), so a span is checked with one reduction."""

    def __init__(self, cfg: AcceleratorConfig) -> None:
        sizes = {"input": cfg.input_rows, "weight": cfg.weight_rows, "output": cfg.output_rows}
        self.loc = {s: np.full((2, len(Engine), sizes[s]), -1, dtype=np.int64) for s in _SPACES}

    def conflicts(self, eng: Engine, fp: list[Span]) -> dict[Engine, _Conflict]:
        """Per other engine, its latest access that conflicts with ``fp`` (if any)."""
        found: dict[int, tuple[int, str, int, int]] = {}
        for space, lo, hi, write in fp:
            if hi <= lo:
                continue
            # a write conflicts with reads and writes, a read with writes (kind 0)
            rows = self.loc[space][:, :, lo:hi] if write else self.loc[space][0, :, lo:hi]
            latest = rows.max(axis=(0, 2) if write else 1).tolist()
            for p, loc in enumerate(latest):
                if p != eng and loc >= 0 and (p not in found or loc > found[p][0]):
                    found[p] = (loc, space, lo, hi)
        return {Engine(p): _Conflict(*c) for p, c in found.items()}

    def update(self, eng: Engine, loc: int, fp: list[Span]) -> None:
        for space, lo, hi, write in fp:
            if hi <= lo:
                continue
            rows = self.loc[space]
            if write:
                rows[:, :, lo:hi] = -1
                rows[0, eng, lo:hi] = loc
            else:
                rows[1, eng, lo:hi] = loc


def _dram_rows(insn: Load | Store) -> tuple[NDArray[np.int64], int]:
    """Start addresses of the DRAM rows a transfer touches (sorted) and the row length."""
    starts = insn.dram_addr + insn.stride * np.arange(max(insn.rows, 0), dtype=np.int64)
    return np.sort(starts), insn.row_bytes


def _rows_overlap(a: tuple[NDArray[np.int64], int], b: tuple[NDArray[np.int64], int]) -> bool:
    """Whether two sets of equal-length DRAM rows share a byte."""
    (sa, la), (sb, lb) = a, b
    if not sa.size or not sb.size or not la or not lb:
        return False
    if sa[-1] + la <= sb[0] or sb[-1] + lb <= sa[0]:
        return False
    # For each row of b, the last row of a starting before b's end must reach past b's start.
    idx = np.searchsorted(sa, sb + lb, side="left") - 1
    ok = idx >= 0
    return bool(np.any(sa[idx[ok]] + la > sb[ok]))


class _Dram:
    """Transfers per engine in engine order, for DRAM hazards (STORE writes, LOAD reads).

    Only the accesses not yet ordered before the instruction being checked can race, and those
    are always a suffix of the other engine's list (its clock entry says how many are ordered).
    """

    def __init__(self) -> None:
        self.rows: dict[Engine, list[tuple[NDArray[np.int64], int]]] = {
            Engine.LOAD: [],
            Engine.STORE: [],
        }

    def conflicts(self, insn: Instruction, eng: Engine, clock: Clock) -> dict[Engine, _Conflict]:
        if not isinstance(insn, Load | Store):
            return {}
        other = Engine.STORE if eng == Engine.LOAD else Engine.LOAD
        mine = _dram_rows(insn)
        for loc in range(len(self.rows[other]) - 1, clock[other] - 1, -1):
            if _rows_overlap(mine, self.rows[other][loc]):
                return {other: _Conflict(loc, "DRAM", insn.dram_addr)}
        return {}

    def update(self, insn: Instruction, eng: Engine) -> None:
        if isinstance(insn, Load | Store):
            self.rows[eng].append(_dram_rows(insn))


def _join(a: Sequence[int], b: Sequence[int]) -> list[int]:
    return [max(x, y) for x, y in zip(a, b, strict=True)]


def assign_tokens(cfg: AcceleratorConfig, body: Sequence[Instruction]) -> list[Instruction]:
    """Add the tokens that make a sequential ``body`` (no FENCE) safe to run concurrently.

    Existing token flags are discarded. :class:`ProgramError` if LOAD and STORE conflict
    directly on SRAM (the ISA has no token between them; a DRAM conflict between them is left
    to the caller, which orders chained GEMMs with a FENCE).
    """
    rows = _Rows(cfg)
    sizes = _buffer_rows(cfg)
    flags: list[dict[str, bool]] = [{} for _ in body]
    by_engine: dict[Engine, list[int]] = {e: [] for e in Engine}
    vc_end: dict[Engine, list[Clock]] = {e: [] for e in Engine}
    # (producer, consumer) -> (push flag, pop flag) of the token between them; None: no token
    tokens: dict[tuple[Engine, Engine], tuple[str, str] | None] = {}
    for idx, insn in enumerate(body):
        eng = engine_of(insn)
        if eng is None:
            raise ProgramError(f"instruction {idx} ({insn}) has no engine; compile the body only")
        loc = len(by_engine[eng])
        fp = _footprint(sizes, insn)
        vc = list(vc_end[eng][-1]) if loc else list(_NO_CLOCK)
        for p, conflict in rows.conflicts(eng, fp).items():
            if vc[p] > conflict.loc:
                continue  # already ordered by program order and earlier tokens
            if (p, eng) not in tokens:
                try:
                    q = token_queue(p, eng)
                    tokens[p, eng] = (q.push_flag, q.pop_flag)
                except ValueError:
                    tokens[p, eng] = None
            token = tokens[p, eng]
            if token is None:
                raise ProgramError(
                    f"{eng.label} instruction {idx} conflicts with {p.label} instruction "
                    f"{by_engine[p][conflict.loc]} on {conflict.where}, but there is no token "
                    f"between those engines"
                )
            flags[by_engine[p][conflict.loc]][token[0]] = True
            flags[idx][token[1]] = True
            vc = _join(vc, vc_end[p][conflict.loc])
        vc[eng] = loc + 1
        by_engine[eng].append(idx)
        vc_end[eng].append((vc[0], vc[1], vc[2]))
        rows.update(eng, loc, fp)
    return [_with_flags(x, f) for x, f in zip(body, flags, strict=True)]


def _with_flags(insn: Instruction, flags: dict[str, bool]) -> Instruction:
    """``insn`` with exactly the token ``flags`` set (itself if it has them already).

    A copy of the frozen instruction with only its flags changed: its other fields were
    validated when it was made, and flags are plain booleans, so no new validation is due
    (``dataclasses.replace`` would run it again, a fifth of this module's time)."""
    want = {f: flags.get(f, False) for f in TOKEN_FLAGS}
    state = vars(insn)
    if all(state[f] == v for f, v in want.items()):
        return insn
    new = object.__new__(type(insn))
    vars(new).update(state)
    vars(new).update(want)
    return new


@dataclasses.dataclass(frozen=True)
class ProgramReport:
    """What :func:`verify_program` established about a stream.

    ``tokens``: pushes per queue (``"load->compute"`` ...). ``max_outstanding``: the most
    tokens a queue's counter can hold under any engine speeds: the counter width the hardware
    needs for this program.
    """

    instructions: int
    tokens: dict[str, int]
    max_outstanding: dict[str, int]


def _decode_all(program: Sequence[Instruction | int]) -> list[Instruction]:
    insns: list[Instruction] = []
    for i, item in enumerate(program):
        try:
            insns.append(item if isinstance(item, Instruction) else decode(int(item)))
        except IllegalInstruction as exc:
            raise ProgramError(f"instruction {i}: {exc}") from None
    return insns


def verify_program(cfg: AcceleratorConfig, program: Sequence[Instruction | int]) -> ProgramReport:
    """Check a stream is balanced, deadlock-free and race-free under any engine speeds.

    * every word decodes and carries only token flags legal for its engine;
    * per queue, pushes and pops are equally many, and the j-th pop's matching push (the
      j-th) comes earlier in the list: with an in-order dispatcher nothing can then wait on an
      instruction that has not been dispatched, whatever the queue depth, so no deadlock;
    * every pair of instructions of different engines touching the same SRAM row or DRAM byte,
      one of them writing, is ordered by program order, tokens and FENCEs (vector clocks), so
      no data race (a LOAD of a chained GEMM never reads DRAM before the STORE that writes it);
    * the program ends with a FENCE.

    Raises :class:`ProgramError` naming the first violation.
    """
    insns = _decode_all(program)
    if not insns or not isinstance(insns[-1], Fence):
        raise ProgramError("a program must end with a FENCE")
    pushed: dict[TokenQueue, list[int]] = {q: [] for q in TOKEN_QUEUES}  # list index
    push_loc: dict[TokenQueue, list[int]] = {q: [] for q in TOKEN_QUEUES}  # producer-local
    pop_locs: dict[TokenQueue, list[int]] = {q: [] for q in TOKEN_QUEUES}  # consumer-local
    rows = _Rows(cfg)
    sizes = _buffer_rows(cfg)
    dram = _Dram()
    vc_end: dict[Engine, list[Clock]] = {e: [] for e in Engine}
    vc_start_of: list[Clock] = []
    fence_vc = _NO_CLOCK
    for idx, insn in enumerate(insns):
        eng = engine_of(insn)
        if insn.illegal_flags:
            raise ProgramError(f"instruction {idx} ({insn}): token flags illegal for its engine")
        if eng is None:  # FENCE: everything before it is ordered before everything after
            fence_vc = (
                len(vc_end[Engine.LOAD]),
                len(vc_end[Engine.COMPUTE]),
                len(vc_end[Engine.STORE]),
            )
            vc_start_of.append(fence_vc)
            continue
        loc = len(vc_end[eng])
        vc = _join(vc_end[eng][-1] if loc else _NO_CLOCK, fence_vc)
        for q in pops(insn):
            j = len(pop_locs[q])
            if j >= len(pushed[q]):
                raise ProgramError(
                    f"instruction {idx} ({insn}) pops token #{j + 1} {q} before any matching "
                    f"push appears in the list"
                )
            pop_locs[q].append(loc)
            vc = _join(vc, vc_end[q.producer][push_loc[q][j]])
        clock = (vc[0], vc[1], vc[2])
        found = rows.conflicts(eng, _footprint(sizes, insn)) | dram.conflicts(insn, eng, clock)
        for p, conflict in found.items():
            if conflict.loc >= vc[p]:
                raise ProgramError(
                    f"data race on {conflict.where}: instruction {idx} ({insn}) is not ordered "
                    f"after {p.label} instruction #{conflict.loc}"
                )
        vc[eng] = loc + 1
        vc_start_of.append((vc[0], vc[1], vc[2]))
        vc_end[eng].append((vc[0], vc[1], vc[2]))
        rows.update(eng, loc, _footprint(sizes, insn))
        dram.update(insn, eng)
        for q in pushes(insn):
            pushed[q].append(idx)
            push_loc[q].append(loc)
    tokens: dict[str, int] = {}
    outstanding: dict[str, int] = {}
    for q in TOKEN_QUEUES:
        if len(pushed[q]) != len(pop_locs[q]):
            raise ProgramError(
                f"unbalanced tokens {q}: {len(pushed[q])} pushes but {len(pop_locs[q])} pops "
                f"(a leftover token would corrupt the next program)"
            )
        tokens[str(q)] = len(pushed[q])
        # Before the j-th push the consumer has surely taken only the pops ordered before it.
        worst = 0
        locs = np.asarray(pop_locs[q], dtype=np.int64)
        for j, pidx in enumerate(pushed[q], start=1):
            known = vc_start_of[pidx][q.consumer]  # consumer instructions ordered before it
            taken = int(np.searchsorted(locs, known, side="left"))
            worst = max(worst, j - taken)
        outstanding[str(q)] = worst
        if worst > TOKEN_MAX:
            raise ProgramError(
                f"{worst} {q} tokens can be outstanding at once; the hardware counts at "
                f"most {TOKEN_MAX}"
            )
    return ProgramReport(instructions=len(insns), tokens=tokens, max_outstanding=outstanding)
