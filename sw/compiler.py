"""Compile a GEMM of any shape into a double-buffered, token-synchronised instruction stream.

``C[M x n] = A[M x K] . B[K x n]`` (``N`` is the array size, ``n`` the GEMM's column count).

Tiling
------
Both dataflows share one loop nest; only the tile geometry differs::

    for each M block b (mb rows)                      output block -> one output-buffer half
      for each column chunk jc (nc column tiles)
        for each K chunk kc (kc k-tiles)              input block  -> one input-buffer half
          for jt in jc: for kt in kc:
            LOAD input tile (b, kt)  once per (b, jc, kc): resident across all column tiles
            LOAD weight tile (kt, jt) unless already resident
            COMPUTE (accumulate = kt > 0: the output buffer sums the K split)
            STORE output tile (b, jt) after its last k-tile: one store per output tile

* **WS**: k-tiles of ``kl = min(K, N)`` weight rows; an input tile is ``mb`` rows of ``kl``
  lanes; ``mb`` is as large as both halves allow (``mb * kc <= input half``,
  ``mb * nc <= output half``) so each weight tile streams many rows (``max(m, k)`` cycles/tile).
* **OS**: ``mb <= N`` output rows; k-tiles as long as an input half allows (``kl`` rows of
  ``A^T``); each COMPUTE is one whole ``mb x c`` output tile reducing over ``kl``.

Weights are *resident* (each tile loaded once for the whole GEMM, slot = tile id) when all of
B fits the weight buffer, otherwise they rotate through a ring of ``weight_rows // kl >= 2``
slots (reloaded once per M block). Inputs and outputs alternate between buffer halves per
block: the loads of block b+1 fill the other half while block b computes, and the stores of
block b drain while block b+1 computes.

Tokens
------
The compiler first emits a plain *sequential* program (correct if run one instruction at a
time), then infers the synchronisation from SRAM-row conflicts: an instruction depends on the
latest earlier instruction of another engine that wrote a row it touches, or read a row it
writes. A dependency not already implied by program order and earlier tokens (tracked with
vector clocks) becomes one token: the producer pushes toward the consumer engine, the consumer
pops. Per direction the producers and consumers are then strictly increasing, so the j-th pop
always matches the intended j-th push, every push has a pop (counters end at zero) and no
conflicting pair is left unordered: race-free under any engine speeds by construction, and
:func:`verify_program` re-checks it. Finally the list is reordered by predicted start time
(:mod:`cdm_qta.sw.cycle_model`; conflicting instructions keep their order), so the in-order
dispatcher hands each engine its work in the order it will run. Every token points backwards in
the final list, hence no deadlock even with a one-deep instruction queue, and a FENCE ends the
program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cdm_qta.golden.gemm import max_safe_reduction
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import (
    TOKEN_MAX,
    Buffer,
    Compute,
    Fence,
    IllegalInstruction,
    Instruction,
    Load,
    Store,
    decode,
)

from .cycle_model import ENGINES, DeadlockError, Prediction, engine_of, predict
from .dram import DramError, GemmLayout

#: Most loads of one kind that may run ahead of the computes using them (< TOKEN_MAX).
RUNAHEAD = 64

__all__ = [
    "DeadlockError",
    "GemmProgram",
    "ProgramError",
    "ProgramReport",
    "ShapeError",
    "Tiling",
    "assign_tokens",
    "choose_dataflow",
    "compile_gemm",
    "footprint",
    "plan_tiling",
    "verify_program",
]

#: Widest LOAD/STORE ``rows`` and COMPUTE ``m``/``k`` the 16-bit ISA fields can carry.
_FIELD16 = (1 << 16) - 1


class ShapeError(ValueError):
    """A GEMM this accelerator configuration cannot run; raised before any instruction exists."""


class ProgramError(ValueError):
    """An instruction stream whose tokens are unbalanced, can deadlock or leave a data race."""


@dataclasses.dataclass(frozen=True)
class Tiling:
    """The blocking :func:`compile_gemm` chose (see the module docstring for the loop nest)."""

    dataflow: Dataflow
    m_block: int  #: rows per M block (OS: <= N)
    k_tile: int  #: reduction length per COMPUTE
    k_chunk: int  #: k-tiles per input block
    n_chunk: int  #: column tiles per output block
    weight_slots: int  #: weight-buffer slots of ``k_tile`` rows
    weights_resident: bool  #: every weight tile loaded exactly once

    def counts(self, m: int, k: int, n: int, array_n: int) -> tuple[int, int, int]:
        """Number of M blocks, k-tiles and column tiles."""
        return -(-m // self.m_block), -(-k // self.k_tile), -(-n // array_n)


def plan_tiling(cfg: AcceleratorConfig, m: int, k: int, n: int, dataflow: Dataflow) -> Tiling:
    """Choose block sizes that fit the buffer halves; :class:`ShapeError` if none does."""
    big_n = cfg.n
    in_half, w_rows, out_half = cfg.input_rows // 2, cfg.weight_rows, cfg.output_rows // 2
    nt = -(-n // big_n)
    if in_half < 1 or out_half < 1:
        raise ShapeError(
            f"double buffering needs at least 2 rows in the input and output buffers, the "
            f"configuration has {cfg.input_rows} and {cfg.output_rows}"
        )
    if dataflow == Dataflow.WS:
        kl = min(k, big_n)
        if w_rows < 2 * kl:
            raise ShapeError(
                f"a WS weight tile of {kl} rows needs {2 * kl} weight-buffer rows for double "
                f"buffering, the configuration has {w_rows}"
            )
        kt = -(-k // kl)
        # Blocks of at least min(M, N) rows keep a WS tile input-bound (max(m, k) = m).
        target = min(m, big_n, out_half, in_half)
        nc = min(nt, out_half // target)
        kc = min(kt, in_half // target)
        mb = min(m, _FIELD16, out_half // nc, in_half // kc)
    else:
        if w_rows < 2:
            raise ShapeError(f"OS needs at least 2 weight-buffer rows, not {w_rows}")
        mb = min(m, big_n, out_half)
        kl = min(k, in_half, w_rows // 2, _FIELD16)
        kt = -(-k // kl)
        nc = min(nt, out_half // mb)
        kc = min(kt, in_half // kl)
    blocks = -(-m // mb)
    mb = -(-m // blocks)  # same number of blocks, balanced sizes: a short last block wastes time
    # Every load that runs ahead of its consumer holds a token; the hardware counts at most
    # TOKEN_MAX, so the weight ring (and input chunks) never run further ahead than this.
    slots = min(w_rows // kl, RUNAHEAD)
    kc = min(kc, RUNAHEAD)
    return Tiling(
        dataflow=Dataflow(dataflow),
        m_block=mb,
        k_tile=kl,
        k_chunk=kc,
        n_chunk=nc,
        weight_slots=slots,
        weights_resident=kt * nt <= slots,
    )


@dataclasses.dataclass(frozen=True)
class GemmProgram:
    """A compiled GEMM: the instruction stream plus where its operands live in DRAM.

    Run it by loading ``layout.image(a, b)``, executing ``instructions`` and unpacking
    ``layout.c_bytes`` bytes read from ``layout.c_base`` with ``layout.unpack_c``.
    """

    cfg: AcceleratorConfig
    m: int
    k: int
    n: int
    dataflow: Dataflow
    trans_a: bool
    trans_b: bool
    tiling: Tiling
    layout: GemmLayout
    instructions: tuple[Instruction, ...]
    prediction: Prediction

    @property
    def words(self) -> list[int]:
        """The 128-bit instruction words, in dispatch order."""
        return [insn.encode() for insn in self.instructions]

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n


def _check_shape(cfg: AcceleratorConfig, m: int, k: int, n: int) -> None:
    for name, v in (("m", m), ("k", k), ("n", n)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise ShapeError(f"{name} must be a positive integer, not {v!r}")
    limit = max_safe_reduction(operand_bits=cfg.array.operand_bits, acc_bits=cfg.array.acc_bits)
    if k > limit:
        raise ShapeError(
            f"K = {k} can overflow the INT{cfg.array.acc_bits} accumulator: at most {limit} "
            f"worst-case products are safe"
        )


def _emit_sequential(
    cfg: AcceleratorConfig, m: int, k: int, n: int, t: Tiling, lay: GemmLayout
) -> list[Instruction]:
    """The tiled loop nest as a sequential program (no tokens yet)."""
    big_n = cfg.n
    in_half, out_half = cfg.input_rows // 2, cfg.output_rows // 2
    mb, kl = t.m_block, t.k_tile
    nblk, kt_n, nt = t.counts(m, k, n, big_n)
    ws = t.dataflow == Dataflow.WS
    out: list[Instruction] = []
    seq_in = seq_out = seq_w = 0
    resident: set[tuple[int, int]] = set()
    for b in range(nblk):
        i0 = b * mb
        rows = min(mb, m - i0)
        for jc0 in range(0, nt, t.n_chunk):
            o_base = (seq_out % 2) * out_half
            seq_out += 1
            for kc0 in range(0, kt_n, t.k_chunk):
                i_base = (seq_in % 2) * in_half
                seq_in += 1
                have: set[int] = set()
                for jt in range(jc0, min(nt, jc0 + t.n_chunk)):
                    cols = min(big_n, n - jt * big_n)
                    for kt in range(kc0, min(kt_n, kc0 + t.k_chunk)):
                        ksz = min(kl, k - kt * kl)
                        a_row = i_base + (kt - kc0) * (mb if ws else kl)
                        if kt not in have:
                            have.add(kt)
                            a_dram_row = kt * m + i0 if ws else b * k + kt * kl
                            out.append(
                                Load(
                                    buffer=Buffer.INPUT,
                                    sram_row=a_row,
                                    rows=rows if ws else ksz,
                                    row_bytes=ksz if ws else rows,
                                    dram_addr=lay.a_row_addr(a_dram_row),
                                    stride=lay.a_stride,
                                )
                            )
                        if t.weights_resident:
                            slot = kt * nt + jt
                            fresh = (kt, jt) not in resident
                            resident.add((kt, jt))
                        else:
                            slot, fresh = seq_w % t.weight_slots, True
                            seq_w += 1
                        if fresh:
                            out.append(
                                Load(
                                    buffer=Buffer.WEIGHT,
                                    sram_row=slot * kl,
                                    rows=ksz,
                                    row_bytes=cols,
                                    dram_addr=lay.b_row_addr(jt * k + kt * kl),
                                    stride=lay.b_stride,
                                )
                            )
                        out_row = o_base + (jt - jc0) * mb
                        out.append(
                            Compute(
                                dataflow=int(t.dataflow),
                                accumulate=kt > 0,
                                a_row=a_row,
                                b_row=slot * kl,
                                out_row=out_row,
                                k=ksz,
                                m=rows,
                                c=cols,
                            )
                        )
                        if kt == kt_n - 1:
                            out.append(
                                Store(
                                    sram_row=out_row,
                                    rows=rows,
                                    row_bytes=4 * cols,
                                    dram_addr=lay.c_row_addr(jt * m + i0),
                                    stride=lay.c_stride,
                                )
                            )
    return out


# -- dependency analysis -------------------------------------------------------------------------

_SPACES = ("input", "weight", "output")


def footprint(cfg: AcceleratorConfig, insn: Instruction) -> list[tuple[str, int, int, bool]]:
    """SRAM rows an instruction touches: ``(buffer, first row, end row, writes)``.

    A COMPUTE's output rows count as written even without ``accumulate``, and rows are clipped
    to the buffer so that illegal instructions can still be analysed.
    """
    sizes = {"input": cfg.input_rows, "weight": cfg.weight_rows, "output": cfg.output_rows}

    def span(space: str, lo: int, count: int, write: bool) -> tuple[str, int, int, bool]:
        return (space, min(lo, sizes[space]), min(lo + count, sizes[space]), write)

    if isinstance(insn, Load):
        return [
            span(
                "input" if insn.buffer == Buffer.INPUT else "weight", insn.sram_row, insn.rows, True
            )
        ]
    if isinstance(insn, Store):
        return [span("output", insn.sram_row, insn.rows, False)]
    if isinstance(insn, Compute):
        a_count = insn.m if insn.dataflow == Dataflow.WS else insn.k
        return [
            span("input", insn.a_row, a_count, False),
            span("weight", insn.b_row, insn.k, False),
            span("output", insn.out_row, insn.m, True),
        ]
    return []


class _Rows:
    """Per SRAM row: the last writer and, per engine, the last reader since that write."""

    def __init__(self, cfg: AcceleratorConfig) -> None:
        sizes = {"input": cfg.input_rows, "weight": cfg.weight_rows, "output": cfg.output_rows}
        self.w_eng = {s: np.full(sizes[s], -1, dtype=np.int8) for s in _SPACES}
        self.w_loc = {s: np.full(sizes[s], -1, dtype=np.int64) for s in _SPACES}
        self.r_loc = {s: np.full((3, sizes[s]), -1, dtype=np.int64) for s in _SPACES}

    def conflicts(self, eng: int, fp: list[tuple[str, int, int, bool]]) -> list[int]:
        """Engine-local index of the latest conflicting access in each other engine (-1: none)."""
        dep = [-1, -1, -1]
        for space, lo, hi, write in fp:
            if hi <= lo:
                continue
            we, wl = self.w_eng[space][lo:hi], self.w_loc[space][lo:hi]
            for p in range(3):
                if p == eng:
                    continue
                mask = we == p
                if mask.any():
                    dep[p] = max(dep[p], int(wl[mask].max()))
                if write:
                    dep[p] = max(dep[p], int(self.r_loc[space][p, lo:hi].max()))
        return dep

    def update(self, eng: int, loc: int, fp: list[tuple[str, int, int, bool]]) -> None:
        for space, lo, hi, write in fp:
            if hi <= lo:
                continue
            if write:
                self.w_eng[space][lo:hi] = eng
                self.w_loc[space][lo:hi] = loc
                self.r_loc[space][:, lo:hi] = -1
            else:
                self.r_loc[space][eng, lo:hi] = loc


def _flag_names(producer: int, consumer: int) -> tuple[str, str]:
    """(producer's push flag, consumer's pop flag) for a token producer -> consumer."""
    if producer < consumer:
        return "push_next", "pop_prev"
    return "push_prev", "pop_next"


def assign_tokens(cfg: AcceleratorConfig, body: Sequence[Instruction]) -> list[Instruction]:
    """Add the tokens that make a sequential ``body`` (no FENCE) safe to run concurrently.

    Existing token flags are discarded. :class:`ProgramError` if two instructions of LOAD and
    STORE conflict directly (the ISA has no token between them).
    """
    rows = _Rows(cfg)
    flags: list[dict[str, bool]] = [{} for _ in body]
    by_engine: list[list[int]] = [[], [], []]
    vc_end: list[list[tuple[int, int, int]]] = [[], [], []]
    for idx, insn in enumerate(body):
        eng = engine_of(insn)
        if eng is None:
            raise ProgramError(f"instruction {idx} ({insn}) has no engine; compile the body only")
        loc = len(by_engine[eng])
        fp = footprint(cfg, insn)
        dep = rows.conflicts(eng, fp)
        vc = list(vc_end[eng][-1]) if loc else [0, 0, 0]
        for p in range(3):
            if p == eng or dep[p] < 0 or vc[p] > dep[p]:
                continue  # no conflict, or already ordered by program order and earlier tokens
            if abs(p - eng) != 1:
                raise ProgramError(
                    f"{ENGINES[eng]} instruction {idx} conflicts with {ENGINES[p]} instruction "
                    f"{by_engine[p][dep[p]]}, but there is no token between those engines"
                )
            push, pop = _flag_names(p, eng)
            flags[by_engine[p][dep[p]]][push] = True
            flags[idx][pop] = True
            vc = [max(a, b) for a, b in zip(vc, vc_end[p][dep[p]], strict=True)]
        vc[eng] = loc + 1
        by_engine[eng].append(idx)
        vc_end[eng].append((vc[0], vc[1], vc[2]))
        rows.update(eng, loc, fp)
    cleared = dict.fromkeys(("pop_prev", "pop_next", "push_prev", "push_next"), False)
    return [dataclasses.replace(x, **{**cleared, **f}) for x, f in zip(body, flags, strict=True)]


@dataclasses.dataclass(frozen=True)
class ProgramReport:
    """What :func:`verify_program` established about a stream.

    ``tokens``: pushes per direction (``"load->compute"`` ...). ``max_outstanding``: the most
    tokens a direction's counter can hold under any engine speeds: the counter width the
    hardware needs for this program.
    """

    instructions: int
    tokens: dict[str, int]
    max_outstanding: dict[str, int]


def _legal_flags(insn: Instruction, eng: int | None) -> bool:
    if eng is None:
        return not (insn.pop_prev or insn.pop_next or insn.push_prev or insn.push_next)
    if eng == 0 and (insn.pop_prev or insn.push_prev):
        return False
    return not (eng == 2 and (insn.pop_next or insn.push_next))


def verify_program(cfg: AcceleratorConfig, program: Sequence[Instruction | int]) -> ProgramReport:
    """Check a stream is balanced, deadlock-free and race-free under any engine speeds.

    * every word decodes and carries only token flags legal for its engine;
    * per direction, pushes and pops are equally many, and the j-th pop's matching push (the
      j-th) comes earlier in the list: with an in-order dispatcher nothing can then wait on an
      instruction that has not been dispatched, whatever the queue depth, so no deadlock;
    * every pair of instructions of different engines touching the same SRAM row, one of them
      writing, is ordered by program order and tokens (vector clocks), so no data race;
    * the program ends with a FENCE.

    Raises :class:`ProgramError` naming the first violation.
    """
    insns: list[Instruction] = []
    for i, item in enumerate(program):
        try:
            insns.append(item if isinstance(item, Instruction) else decode(int(item)))
        except IllegalInstruction as exc:
            raise ProgramError(f"instruction {i}: {exc}") from None
    if not insns or not isinstance(insns[-1], Fence):
        raise ProgramError("a program must end with a FENCE")
    dirs = [(0, 1), (1, 0), (1, 2), (2, 1)]
    pushes: dict[tuple[int, int], list[int]] = {d: [] for d in dirs}  # producer list index
    push_loc: dict[tuple[int, int], list[int]] = {d: [] for d in dirs}
    pops_seen = dict.fromkeys(dirs, 0)
    pop_locs: dict[tuple[int, int], list[int]] = {d: [] for d in dirs}  # consumer-local index
    rows = _Rows(cfg)
    vc_end: list[list[tuple[int, int, int]]] = [[], [], []]
    vc_start_of: list[tuple[int, int, int]] = []
    fence_vc = (0, 0, 0)
    for idx, insn in enumerate(insns):
        eng = engine_of(insn)
        if not _legal_flags(insn, eng):
            raise ProgramError(f"instruction {idx} ({insn}): token flags illegal for its engine")
        if eng is None:  # FENCE: everything before it is ordered before everything after
            fence_vc = (len(vc_end[0]), len(vc_end[1]), len(vc_end[2]))
            vc_start_of.append(fence_vc)
            continue
        loc = len(vc_end[eng])
        vc = list(vc_end[eng][-1]) if loc else [0, 0, 0]
        vc = [max(a, b) for a, b in zip(vc, fence_vc, strict=True)]
        for p, flag in ((eng - 1, insn.pop_prev), (eng + 1, insn.pop_next)):
            if not flag:
                continue
            d = (p, eng)
            j = pops_seen[d]
            if j >= len(pushes[d]):
                raise ProgramError(
                    f"instruction {idx} ({insn}) pops token #{j + 1} {ENGINES[p]}->"
                    f"{ENGINES[eng]} before any matching push appears in the list"
                )
            pops_seen[d] += 1
            pop_locs[d].append(loc)
            vc = [max(a, b) for a, b in zip(vc, vc_end[p][push_loc[d][j]], strict=True)]
        fp = footprint(cfg, insn)
        for space, lo, hi, write in fp:
            if hi <= lo:
                continue
            we, wl = rows.w_eng[space][lo:hi], rows.w_loc[space][lo:hi]
            for p in range(3):
                if p == eng:
                    continue
                mask = we == p
                latest = int(wl[mask].max()) if mask.any() else -1
                if write:
                    latest = max(latest, int(rows.r_loc[space][p, lo:hi].max()))
                if latest >= vc[p]:
                    raise ProgramError(
                        f"data race on the {space} buffer: instruction {idx} ({insn}) is not "
                        f"ordered after {ENGINES[p]} instruction #{latest} touching rows "
                        f"{lo}..{hi - 1}"
                    )
        vc[eng] = loc + 1
        vc_start_of.append((vc[0], vc[1], vc[2]))
        vc_end[eng].append((vc[0], vc[1], vc[2]))
        rows.update(eng, loc, fp)
        for p, flag in ((eng - 1, insn.push_prev), (eng + 1, insn.push_next)):
            if flag:
                pushes[(eng, p)].append(idx)
                push_loc[(eng, p)].append(loc)
    tokens: dict[str, int] = {}
    outstanding: dict[str, int] = {}
    for d in dirs:
        name = f"{ENGINES[d[0]]}->{ENGINES[d[1]]}"
        if len(pushes[d]) != pops_seen[d]:
            raise ProgramError(
                f"unbalanced tokens {name}: {len(pushes[d])} pushes but {pops_seen[d]} pops "
                f"(a leftover token would corrupt the next program)"
            )
        tokens[name] = len(pushes[d])
        # Before the j-th push the consumer has surely taken only the pops ordered before it.
        worst = 0
        locs = np.asarray(pop_locs[d], dtype=np.int64)
        for j, pidx in enumerate(pushes[d], start=1):
            known = vc_start_of[pidx][d[1]]  # consumer instructions ordered before the push
            taken = int(np.searchsorted(locs, known, side="left"))
            worst = max(worst, j - taken)
        outstanding[name] = worst
        if worst > TOKEN_MAX:
            raise ProgramError(
                f"{worst} {name} tokens can be outstanding at once; the hardware counts at "
                f"most {TOKEN_MAX}"
            )
    return ProgramReport(instructions=len(insns), tokens=tokens, max_outstanding=outstanding)


# -- compilation ---------------------------------------------------------------------------------


def compile_gemm(
    cfg: AcceleratorConfig,
    m: int,
    k: int,
    n: int,
    *,
    dataflow: Dataflow,
    trans_a: bool = False,
    trans_b: bool = False,
) -> GemmProgram:
    """Tile ``C = op(A) . op(B)`` (``op`` = optional transpose, done while packing DRAM).

    Raises
    ------
    ShapeError
        Non-positive dimensions, ``K`` beyond :func:`~cdm_qta.golden.gemm.max_safe_reduction`,
        buffers too small for a minimal double-buffered tile, or a DRAM window too small.
    """
    _check_shape(cfg, m, k, n)
    try:
        dataflow = Dataflow(dataflow)
    except ValueError:
        raise ShapeError(f"dataflow must be WS or OS, not {dataflow!r}") from None
    m, k, n = int(m), int(k), int(n)
    tiling = plan_tiling(cfg, m, k, n, dataflow)
    try:
        layout = GemmLayout.plan(
            cfg,
            m,
            k,
            n,
            dataflow=dataflow,
            m_block=tiling.m_block,
            trans_a=trans_a,
            trans_b=trans_b,
        )
    except DramError as exc:
        raise ShapeError(str(exc)) from None
    body = assign_tokens(cfg, _emit_sequential(cfg, m, k, n, tiling, layout))
    # Dispatch order = predicted start order. Dependent instructions start strictly after their
    # producers finish, so the sort keeps every conflicting pair (and each engine) in order.
    pred = predict(cfg, body)
    order = sorted(range(len(body)), key=lambda i: (pred.start[i], i))
    insns = (*(body[i] for i in order), Fence())
    verify_program(cfg, insns)
    return GemmProgram(
        cfg=cfg,
        m=m,
        k=k,
        n=n,
        dataflow=dataflow,
        trans_a=bool(trans_a),
        trans_b=bool(trans_b),
        tiling=tiling,
        layout=layout,
        instructions=insns,
        prediction=predict(cfg, insns),
    )


def choose_dataflow(
    cfg: AcceleratorConfig,
    m: int,
    k: int,
    n: int,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
) -> tuple[GemmProgram, dict[Dataflow, GemmProgram | ShapeError]]:
    """Compile both dataflows and keep the one with fewer predicted cycles (ties: WS).

    Returns the winner and every candidate (a program, or the :class:`ShapeError` that ruled it
    out) so callers can print the numbers behind the choice. Raises the WS error if neither fits.
    """
    _check_shape(cfg, m, k, n)
    cands: dict[Dataflow, GemmProgram | ShapeError] = {}
    for df in (Dataflow.WS, Dataflow.OS):
        try:
            cands[df] = compile_gemm(cfg, m, k, n, dataflow=df, trans_a=trans_a, trans_b=trans_b)
        except ShapeError as exc:
            cands[df] = exc
    ok = [p for p in cands.values() if isinstance(p, GemmProgram)]
    if not ok:
        err = cands[Dataflow.WS]
        assert isinstance(err, ShapeError)
        raise err
    best = min(ok, key=lambda p: (p.prediction.cycles, int(p.dataflow)))
    return best, cands
