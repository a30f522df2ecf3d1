"""Cycles of a big GEMM in seconds: the exact cycle model on a few M blocks, extended.

Why: a whole training step is hundreds of GEMMs, and the big ones compile to 50-120 thousand
instructions; following each through :mod:`cdm_qta.sw.cycle_model` costs about a minute per
GEMM, so ranking both dataflows for an SD 1.5 step took twenty. The compiler's loop nest
repeats one M block after another (same tiles, same loads, the next rows of A and C), and
once the double-buffered pipeline is full every further block adds the same cycles.

So :func:`estimate_gemm` compiles the same GEMM cut to ``L - p`` and ``L`` M blocks (same
tiling, the real short last block kept at the end; ``p`` blocks per period), runs the exact
model on both and extends the difference to the real number of blocks: ``X(full) = X(L) +
periods * (X(L) - X(L-p))`` for every counter. It trusts the step only when it sees the steady
state in the ``L``-block run itself: the last two periods of full blocks before the tail took
the same cycles block by block, and equal to the step (within a cycle per block of 2000 or
more cycles). Otherwise it tries longer periods, and in the end the whole program: a GEMM of
few or short blocks is always predicted whole (``exact``).

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

from .compiler import ShapeError, Tiling, _check_shape, _compile, plan_tiling
from .cycle_model import Prediction

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
    predicts it, in a fraction of the time for GEMMs of many M blocks (see the module doc).

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
    blocks = t.counts(m, k, n, cfg.n)[0]
    total = _instructions(t, m, k, n, cfg.n)
    common = {"dataflow": dataflow, "tiling": t, "instructions": total, "blocks": blocks}
    cut: dict[int, tuple[Prediction, list[int]]] = {}  # blocks kept -> run of the cut GEMM

    def run(keep: int) -> tuple[Prediction, list[int]]:
        if keep not in cut:
            prog, block_of = _compile(
                cfg, _cut(m, t.m_block, blocks, keep), k, n, t, trans_a=trans_a,
                trans_b=trans_b, verify=False,
            )  # fmt: skip
            cut[keep] = (prog.prediction, block_of)
        return cut[keep]

    for keep, period in _TRIES:
        short = keep - period
        fresh = (keep not in cut) * keep + (short not in cut) * short
        if 2 * (keep + short) > blocks or sum(cut) + fresh > blocks // 2:
            continue  # the cut programs would cost more than half the whole one
        (p, _), (q, block_of) = run(short), run(keep)
        step = q.cycles - p.cycles
        ends = _block_ends(q, block_of, keep)
        # cycles between the ends of consecutive full blocks (the last block is the tail)
        gaps = [b - a for a, b in itertools.pairwise(ends[:-1])]
        last, before = gaps[-period:], gaps[-2 * period : -period]
        # steady: the last two periods before the tail took the same cycles, block by block,
        # and one period more in the cut GEMM cost that; blocks of 2000 cycles or more may
        # differ by a cycle (a slower state, such as a weight ring of another period, adds one
        # now and then): at most 0.05 % of the block
        slack = min(1, min(last) // 2000)
        if (
            min(last) >= _MIN_BLOCK_CYCLES
            and max(abs(a - b) for a, b in zip(last, before, strict=True)) <= slack
            and abs(sum(last) - step) <= slack * period
        ):
            whole_periods, rest = divmod(blocks - keep, period)
            counters: dict[str, int | None] = {}
            for name, lo in p.counters.items():
                hi = q.counters[name]
                if lo is None or hi is None:
                    counters[name] = None
                elif name == "cycles":
                    counters[name] = hi + whole_periods * step + sum(last[:rest])
                else:
                    counters[name] = hi + whole_periods * (hi - lo) + rest * (hi - lo) // period
            return Estimate(
                counters=counters, array_n=cfg.n, start=(), done=(),
                simulated_blocks=sum(cut), exact=False, **common,
            )  # fmt: skip
    whole, _ = _compile(cfg, m, k, n, t, trans_a=trans_a, trans_b=trans_b, verify=False)
    pred = whole.prediction
    return Estimate(
        counters=dict(pred.counters), array_n=cfg.n, start=pred.start, done=pred.done,
        simulated_blocks=blocks, **{**common, "instructions": len(whole.instructions)},
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
