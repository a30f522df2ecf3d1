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

import numpy as np

from cdm_qta.golden.gemm import max_safe_reduction
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import (
    TOKEN_MAX,
    Buffer,
    Compute,
    Fence,
    Instruction,
    Load,
    Opcode,
    Store,
    field_max,
)

from .cycle_model import Prediction, predict_encoded
from .dependencies import assign_tokens, verify_program
from .dram import DramError, GemmLayout

#: Most loads of one kind that may run ahead of the computes using them (< TOKEN_MAX).
RUNAHEAD = 64
assert RUNAHEAD < TOKEN_MAX

__all__ = [
    "GemmProgram",
    "ShapeError",
    "Tiling",
    "choose_dataflow",
    "compile_gemm",
    "plan_tiling",
]

#: Longest block of rows one instruction can carry: LOAD/STORE ``rows``, COMPUTE ``m`` and ``k``.
_MAX_ROWS = min(
    field_max(Opcode.LOAD, "rows"),
    field_max(Opcode.STORE, "rows"),
    field_max(Opcode.COMPUTE, "m"),
    field_max(Opcode.COMPUTE, "k"),
)


class ShapeError(ValueError):
    """A GEMM this accelerator configuration cannot run; raised before any instruction exists."""


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
        mb = min(m, _MAX_ROWS, out_half // nc, in_half // kc)
    else:
        if w_rows < 2:
            raise ShapeError(f"OS needs at least 2 weight-buffer rows, not {w_rows}")
        mb = min(m, big_n, out_half)
        kl = min(k, in_half, w_rows // 2, _MAX_ROWS)
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
    ``layout.c_bytes`` bytes read from ``layout.c_base`` with ``layout.unpack_c``. The GEMM's
    shape, dataflow and transposes are the layout's.
    """

    cfg: AcceleratorConfig
    tiling: Tiling
    layout: GemmLayout
    instructions: tuple[Instruction, ...]
    prediction: Prediction

    @property
    def m(self) -> int:
        return self.layout.m

    @property
    def k(self) -> int:
        return self.layout.k

    @property
    def n(self) -> int:
        return self.layout.n

    @property
    def dataflow(self) -> Dataflow:
        return self.layout.dataflow

    @property
    def trans_a(self) -> bool:
        return self.layout.trans_a

    @property
    def trans_b(self) -> bool:
        return self.layout.trans_b

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


def _kept_tiles(start: int, stop: int, keep: int | None) -> list[int]:
    """Tiles ``start..stop-1`` of one chunk that a cut program keeps: all (``keep`` None), or
    the first ``keep - 1`` and the chunk's last (which may be short, and ends the chunk)."""
    if keep is None or stop - start <= keep:
        return list(range(start, stop))
    return [*range(start, start + keep - 1), stop - 1]


def _emit_sequential(
    cfg: AcceleratorConfig,
    m: int,
    k: int,
    n: int,
    t: Tiling,
    lay: GemmLayout,
    keep_n: int | None = None,
) -> tuple[list[Instruction], list[int]]:
    """The tiled loop nest as a sequential program (no tokens yet), and the first instruction
    of each M block (the blocks are contiguous in this order).

    ``keep_n``: emit only :func:`_kept_tiles` of every chunk of column tiles, at their real
    SRAM rows and DRAM addresses (a cut program for :mod:`cdm_qta.sw.estimate`; what it
    computes is not the GEMM)."""
    big_n = cfg.n
    in_half, out_half = cfg.input_rows // 2, cfg.output_rows // 2
    mb, kl = t.m_block, t.k_tile
    nblk, kt_n, nt = t.counts(m, k, n, big_n)
    ws = t.dataflow == Dataflow.WS
    out: list[Instruction] = []
    seq_in = seq_out = seq_w = 0
    resident: set[tuple[int, int]] = set()
    block_starts: list[int] = []
    for b in range(nblk):
        block_starts.append(len(out))
        i0 = b * mb
        rows = min(mb, m - i0)
        for jc0 in range(0, nt, t.n_chunk):
            o_base = (seq_out % 2) * out_half
            seq_out += 1
            for kc0 in range(0, kt_n, t.k_chunk):
                i_base = (seq_in % 2) * in_half
                seq_in += 1
                have: set[int] = set()
                for jt in _kept_tiles(jc0, min(nt, jc0 + t.n_chunk), keep_n):
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
                                    row_bytes=cfg.ACC_BYTES * cols,
                                    dram_addr=lay.c_row_addr(jt * m + i0),
                                    stride=lay.c_stride,
                                )
                            )
    return out, block_starts


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
    return _compile(cfg, m, k, n, tiling, trans_a=trans_a, trans_b=trans_b)[0]


def _compile(
    cfg: AcceleratorConfig,
    m: int,
    k: int,
    n: int,
    tiling: Tiling,
    *,
    trans_a: bool,
    trans_b: bool,
    verify: bool = True,
    keep_n: int | None = None,
) -> tuple[GemmProgram, list[int]]:
    """:func:`compile_gemm` with a given tiling; also returns, per final instruction, its M
    block (-1 for the FENCE). ``verify=False`` skips :func:`verify_program` (a proof the
    compiler's output already passed for the same loop nest, used by the estimates of
    :mod:`cdm_qta.sw.estimate` on truncated GEMMs); ``keep_n`` cuts every chunk of column
    tiles to a few (see :func:`_emit_sequential`)."""
    try:
        layout = GemmLayout.plan(
            cfg,
            m,
            k,
            n,
            dataflow=tiling.dataflow,
            m_block=tiling.m_block,
            trans_a=trans_a,
            trans_b=trans_b,
        )
    except DramError as exc:
        raise ShapeError(str(exc)) from None
    seq, block_starts = _emit_sequential(cfg, m, k, n, tiling, layout, keep_n)
    body = assign_tokens(cfg, seq)
    # Dispatch order = predicted start order. Dependent instructions start strictly after their
    # producers finish, so the sort keeps every conflicting pair (and each engine) in order.
    words = [x.encode() for x in body]  # once: both predictions take the same words
    pred = predict_encoded(cfg, words, body)
    order = sorted(range(len(body)), key=lambda i: (pred.start[i], i))
    insns = (*(body[i] for i in order), Fence())
    if verify:
        verify_program(cfg, insns)
    block_of_seq = [0] * len(body)
    for b, lo in enumerate(block_starts):
        hi = block_starts[b + 1] if b + 1 < len(block_starts) else len(body)
        block_of_seq[lo:hi] = [b] * (hi - lo)
    block_of = [block_of_seq[i] for i in order] + [-1]
    program = GemmProgram(
        cfg=cfg,
        tiling=tiling,
        layout=layout,
        instructions=insns,
        prediction=predict_encoded(cfg, [*(words[i] for i in order), Fence().encode()], insns),
    )
    return program, block_of


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
