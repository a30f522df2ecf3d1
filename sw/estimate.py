"""Cycles of a big GEMM in seconds: the exact cycle model on a few M blocks, extended.

Why: a whole training step is hundreds of GEMMs, and the big ones compile to 50-120 thousand
instructions; following each through :mod:`cdm_qta.sw.cycle_model` costs about a minute per
GEMM, so ranking both dataflows for an SD 1.5 step took twenty. The compiler's loop nest
repeats one M block after another (same tiles, same loads, the next rows of A and C), and
once the double-buffered pipeline is full every further block adds the same cycles.

So :func:`estimate_gemm` compiles the same GEMM cut to ``L`` M blocks (same tiling, the real
short last block kept at the end), runs the exact model on it and extends it to the real
number of blocks, ``p`` blocks per period: ``X(full) = X(L) + periods * X(period)`` for every
counter, where ``X(period)`` is what the last ``p`` full blocks before the tail did: their
instructions' MACs, bytes, retires and token waits, and each engine's busy cycles between the
ends of the blocks before and at that period (:func:`~cdm_qta.sw.cycle_model.period_counters`).
It trusts that only when it sees the steady state in the run: the last two periods of full
blocks before the tail took the same cycles block by block (within a cycle per block of 2000
or more cycles). Otherwise it tries longer periods, and in the end the whole program: a GEMM
of few or short blocks is always predicted whole (``exact``). (Until December 2026 this ran a
second cut program of ``L - p`` blocks and extended the difference: the same numbers within a
few cycles per GEMM, for 40 % more work.)

A GEMM whose blocks are long (many column tiles per output chunk) is first cut along N:
programs that keep 1, 2 and 3 column tiles of every chunk (:func:`_along_n`), each predicted
along M as above, are extended to the real number of tiles once both steps cost the same.

What this is not: a proof. The DRAM addresses of the cut GEMM differ from the full one's, so a
4 KB split or a bus conflict that happens only later in the full program is not seen.
``tests/sw/test_estimate.py`` holds it to the whole-program model over many shapes, and
``python -m cdm_qta.sw.cycle_bench --check`` on SD 1.5's shapes at N = 64 (measured error in
the README). Where a number must equal the RTL's counter (tests, the RTL back end's budget),
the compiled program's own :class:`~cdm_qta.sw.cycle_model.Prediction` is used, not this.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

from cdm_qta.hw.config import AcceleratorConfig, Dataflow

from .compiler import GemmProgram, ShapeError, Tiling, _check_shape, _compile, plan_tiling
from .cycle_model import Prediction, period_counters

__all__ = ["Estimate", "estimate_best", "estimate_gemm"]

#: (M blocks of the longer cut program, M blocks per period), tried in this order before the
#: whole GEMM. Periods longer than a block come from state that cycles at another rate than
#: the blocks: the two weight banks (a block of an odd number of WS tiles starts on the other
#: bank), a weight ring whose slot count does not divide a block's tiles.
_TRIES = ((4, 1), (6, 2), (8, 3), (10, 4))

#: Shorter blocks are predicted whole: the cut GEMM's DRAM addresses differ from the whole
#: one's (4 KB splits, bus turns), which can move a block by a cycle, too much for a short
#: block (measured up to 1.6 % on 70-cycle blocks), and the whole program is cheap anyway.
_MIN_BLOCK_CYCLES = 1000

#: (column tiles per chunk kept in the shortest cut program, tiles per step) tried along N.
#: Steps of two tiles cover state that alternates per tile (the two weight banks after an
#: odd number of k-tiles); longer first cuts, blocks too short to be steady.
_CUT_TRIES = ((1, 1), (2, 1), (3, 1), (1, 2), (2, 2))

#: Chunks of fewer column tiles on average are not cut (too little to gain), nor programs of
#: fewer instructions (the whole program is cheap enough).
_MIN_TILES = 8
_MIN_CUT_INSTRUCTIONS = 3000


@dataclasses.dataclass(frozen=True)
class Estimate(Prediction):
    """A :class:`~cdm_qta.sw.cycle_model.Prediction` of a whole GEMM's counters.

    ``exact``: the whole program was run through the model (``start``/``done`` then hold its
    per-instruction cycles); otherwise the counters are extended from ``simulated_blocks`` of
    ``blocks`` M blocks and ``start``/``done`` are empty.
    """

    dataflow: Dataflow = Dataflow.WS
    tiling: Tiling | None = None
    instructions: int = 0  #: of the whole compiled program
    blocks: int = 1
    simulated_blocks: int = 1
    exact: bool = True
    cut: tuple[str, ...] = ()  #: dimensions extended from cut programs, outermost first


def _cut(m: int, mb: int, blocks: int, keep: int) -> int:
    """Rows of the GEMM cut to ``keep`` blocks: ``keep - 1`` full ones and the real last."""
    last = m - (blocks - 1) * mb
    return (keep - 1) * mb + last


def _block_ends(pred: Prediction, block_of: list[int], blocks: int) -> list[int]:
    ends = [0] * blocks
    for b, d in zip(block_of, pred.done, strict=True):
        if b >= 0 and d > ends[b]:
            ends[b] = d
    return ends


def _instructions(t: Tiling, m: int, k: int, n: int, array_n: int) -> int:
    """Instructions of the whole compiled program, counted from the loop nest (no compile)."""
    blocks, kt, nt = t.counts(m, k, n, array_n)
    chunks_n = -(-nt // t.n_chunk)
    computes = blocks * nt * kt
    inputs = blocks * chunks_n * kt
    weights = kt * nt if t.weights_resident else computes
    stores = blocks * nt
    return computes + inputs + weights + stores + 1  # + FENCE


def _grown(
    have: dict[str, int | None], step: dict[str, int | None], left: int, per: int, cycles: int
) -> dict[str, int | None]:
    """Counters ``have`` grown by ``left`` more units, where ``step`` is what ``per`` units
    add; the counters are sums over instructions, so each unit adds a share of that.
    ``cycles`` is given: the callers know its step better than a ratio."""
    out: dict[str, int | None] = {}
    for name, y in have.items():
        d = step[name]
        out[name] = None if d is None or y is None else y + d * left // per
    out["cycles"] = cycles
    return out


def _difference(hi: Prediction, lo: Prediction) -> dict[str, int | None]:
    """Counters of ``hi`` minus those of ``lo`` (``None`` where either is unknown)."""
    return {
        name: None if y is None or (x := lo.counters[name]) is None else y - x
        for name, y in hi.counters.items()
    }


def _m_cut_pays(keep: int, spent: int, blocks: int) -> bool:
    """Whether a cut program of ``keep`` M blocks (``spent`` blocks run so far, with it)
    costs at most two thirds of the whole program's ``blocks``."""
    return 3 * keep <= 2 * blocks and 3 * spent <= 2 * blocks


def _chunk_sizes(tiles: int, chunk: int) -> tuple[int, ...]:
    """Tiles in each chunk of ``chunk`` tiles (the last may be shorter)."""
    return tuple(min(chunk, tiles - c) for c in range(0, tiles, chunk))


@functools.lru_cache(maxsize=4096)
def estimate_gemm(
    cfg: AcceleratorConfig,
    m: int,
    k: int,
    n: int,
    *,
    dataflow: Dataflow,
    trans_a: bool = False,
    trans_b: bool = False,
) -> Estimate:
    """Every counter of ``compile_gemm(cfg, m, k, n, ...)`` run on ``cfg``, as the cycle model
    predicts it, in a fraction of the time for GEMMs of many M blocks or many tiles per chunk
    (see the module doc).

    Raises :class:`~cdm_qta.sw.compiler.ShapeError` exactly when :func:`compile_gemm` would.
    Cached per arguments.
    """
    _check_shape(cfg, m, k, n)
    try:
        dataflow = Dataflow(dataflow)
    except ValueError:
        raise ShapeError(f"dataflow must be WS or OS, not {dataflow!r}") from None
    m, k, n = int(m), int(k), int(n)
    t = plan_tiling(cfg, m, k, n, dataflow)
    total = _instructions(t, m, k, n, cfg.n)
    est = None
    if total >= _MIN_CUT_INSTRUCTIONS:
        est = _along_n(cfg, m, k, n, t, trans_a, trans_b)
    if est is None:
        est = _along_m(cfg, m, k, n, t, trans_a, trans_b, None, whole=True)
    assert est is not None
    return dataclasses.replace(est, instructions=total)


def _along_n(
    cfg: AcceleratorConfig, m: int, k: int, n: int, t: Tiling, trans_a: bool, trans_b: bool
) -> Estimate | None:
    """The GEMM extended from programs cut to a few column tiles per chunk (``None`` if its
    chunks are too short, or no cut reached a steady state).

    The cut programs keep ``j``, ``j + p`` and ``j + 2p`` column tiles of every chunk
    (:func:`~cdm_qta.sw.compiler._kept_tiles`: the first ones and the chunk's last, at their
    real SRAM rows and DRAM addresses), each predicted along M (:func:`_along_m`); if both
    steps of ``p`` tiles cost the same cycles (within 0.05 %), every counter grows by that step
    for each further ``p`` tiles per chunk. Not along K: a chunk cut to a few k-tiles lets the
    weight ring run further ahead than in the real program (measured up to 5 % too few cycles).
    """
    blocks, _, nt = t.counts(m, k, n, cfg.n)
    sizes = _chunk_sizes(nt, t.n_chunk)
    chunks = len(sizes)
    if nt < _MIN_TILES * chunks:
        return None
    # Where M blocks cannot be extended, a cut program is always cheap to run whole; where
    # they can, one whose short blocks are not steady is skipped for a longer cut.
    whole = not _m_cut_pays(_TRIES[0][0], 0, blocks)
    for first, period in _CUT_TRIES:
        js = (first, first + period, first + 2 * period)
        if js[-1] > min(sizes) or 2 * chunks * js[-1] > nt:
            continue  # a chunk too short to grow, or the cuts would cost half the whole
        runs = []
        for j in js:
            run = _along_m(cfg, m, k, n, t, trans_a, trans_b, j, whole=whole)
            if run is None:
                break
            runs.append(run)
        if len(runs) < len(js):
            continue
        lo, mid, hi = runs
        step = hi.cycles - mid.cycles
        if abs(mid.cycles - lo.cycles - step) > step // 2000:
            continue
        grown = chunks * period  # tiles one step adds
        left = nt - chunks * js[-1]  # tiles the cut programs leave out
        cycles = hi.cycles + round(step * left / grown)
        counters = _grown(hi.counters, _difference(hi, mid), left, grown, cycles)
        return dataclasses.replace(
            hi, counters=counters, start=(), done=(), exact=False, cut=("N", *hi.cut)
        )
    return None


@functools.lru_cache(maxsize=4096)
def _along_m(
    cfg: AcceleratorConfig,
    m: int,
    k: int,
    n: int,
    t: Tiling,
    trans_a: bool,
    trans_b: bool,
    keep_n: int | None,
    *,
    whole: bool,
) -> Estimate | None:
    """The GEMM (cut to ``keep_n`` column tiles per chunk) predicted from a few of its M
    blocks, extended (see the module doc), or else whole (``whole=False``: ``None``)."""
    blocks = t.counts(m, k, n, cfg.n)[0]
    cut_n = keep_n is not None
    common = {"dataflow": t.dataflow, "tiling": t, "blocks": blocks}
    cut: dict[int, tuple[GemmProgram, list[int]]] = {}  # blocks kept -> the cut GEMM

    def run(keep: int) -> tuple[GemmProgram, list[int]]:
        if keep not in cut:
            cut[keep] = _compile(
                cfg, _cut(m, t.m_block, blocks, keep), k, n, t, trans_a=trans_a,
                trans_b=trans_b, verify=False, keep_n=keep_n,
            )  # fmt: skip
        return cut[keep]

    for keep, period in _TRIES:
        fresh = (keep not in cut) * keep
        if not _m_cut_pays(keep, sum(cut) + fresh, blocks):
            continue
        prog, block_of = run(keep)
        q = prog.prediction
        ends = _block_ends(q, block_of, keep)
        # cycles between the ends of consecutive full blocks (the last block is the tail)
        gaps = [b - a for a, b in itertools.pairwise(ends[:-1])]
        last, before = gaps[-period:], gaps[-2 * period : -period]
        # steady: the last two periods before the tail took the same cycles, block by block;
        # blocks of 2000 cycles or more may differ by a cycle (a slower state, such as a
        # weight ring of another period, adds one now and then): at most 0.05 % of the block
        slack = min(1, min(last) // 2000)
        if (
            min(last) >= _MIN_BLOCK_CYCLES
            and max(abs(a - b) for a, b in zip(last, before, strict=True)) <= slack
        ):
            # the last period before the tail, counted instruction by instruction: what
            # every further period of the whole GEMM adds
            first = keep - 1 - period
            members = [i for i, b in enumerate(block_of) if first <= b < keep - 1]
            window = (ends[first - 1], ends[keep - 2])
            one = period_counters(q, prog.instructions, members, window)
            whole_periods, rest = divmod(blocks - keep, period)
            cycles = q.cycles + whole_periods * sum(last) + sum(last[:rest])
            counters = _grown(q.counters, one, blocks - keep, period, cycles)
            return Estimate(
                counters=counters, array_n=cfg.n, start=(), done=(),
                simulated_blocks=sum(cut), exact=False, cut=("M",), **common,
            )  # fmt: skip
    if not whole:
        return None
    program, _ = _compile(
        cfg, m, k, n, t, trans_a=trans_a, trans_b=trans_b, verify=False, keep_n=keep_n
    )
    pred = program.prediction
    return Estimate(
        counters=dict(pred.counters), array_n=cfg.n, start=() if cut_n else pred.start,
        done=() if cut_n else pred.done, simulated_blocks=blocks, exact=not cut_n, **common,
    )  # fmt: skip


def estimate_best(
    cfg: AcceleratorConfig,
    m: int,
    k: int,
    n: int,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
) -> tuple[Estimate, dict[Dataflow, Estimate | ShapeError]]:
    """:func:`~cdm_qta.sw.compiler.choose_dataflow` on estimates: the dataflow with fewer
    cycles (ties: WS) and every candidate (an estimate, or the error that ruled it out)."""
    _check_shape(cfg, m, k, n)
    cands: dict[Dataflow, Estimate | ShapeError] = {}
    for df in (Dataflow.WS, Dataflow.OS):
        try:
            cands[df] = estimate_gemm(cfg, m, k, n, dataflow=df, trans_a=trans_a, trans_b=trans_b)
        except ShapeError as exc:
            cands[df] = exc
    ok = [e for e in cands.values() if isinstance(e, Estimate)]
    if not ok:
        err = cands[Dataflow.WS]
        assert isinstance(err, ShapeError)
        raise err
    return min(ok, key=lambda e: (e.cycles, int(e.dataflow))), cands
